"""Faults under load, CI-sized: a killed python-backend stub, a killed tritonserver, and the pieces that handle them.

Each server test starts its own tritonserver (it kills things; never the shared ``real_server``). Full-size runs
with timelines, the prober and alert estimates: ``python -m tests.reliability.faults`` (RELIABILITY.md).

Measured on this 2-core machine under load (tests/reliability/faults.py): a killed stub's requests fail within
~2.2 s (no hang), Triton never restarts the stub and keeps reporting server, model and ensemble ready; the
manifest's exec probes (drape_serving.health) fail from their first run after the kill. A restarted server is
ready in 7 s idle, ~25 s under the load of parallel test runs; the bounds below leave room for that.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.reliability import faults  # noqa: E402

FAIL_WITHIN_S = 10.0       # a request on the dead instance fails within this (measured max 2.2 s)
READY_WITHIN_S = 180.0     # restart to ready on a loaded CI machine (measured 7-25 s)


def _start(repo, tmp_path, name, ports=(None, None, None)):
    from drape_serving.server import start_server

    return start_server(repo, *ports, log_file=tmp_path / f"{name}.log", ready_timeout=240)


def _wait_for(predicate, timeout_s: float, poll_s: float = 0.25) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()


# ------------------------------------------------------------------------------------------ no server


def test_dropped_connections_are_retried_like_unavailable():
    """A server killed mid-request drops HTTP connections; tryon/recolor are idempotent, so the client retries."""
    import aiohttp
    from geventhttpclient.response import HTTPConnectionClosed

    from drape_client.errors import ServerError, UnavailableError, classify

    for exc in (HTTPConnectionClosed("connection closed."), ConnectionResetError(104, "reset by peer"),
                BrokenPipeError(32, "broken pipe"), aiohttp.ServerDisconnectedError()):
        cls, status, _, retry = classify(exc)
        assert (cls, retry) == (UnavailableError, True), exc
        assert status == "connection dropped"
    assert classify(OSError("no route"))[3] is False            # other transport errors stay unretried
    assert classify(RuntimeError("boom"))[:1] == (ServerError,)


def test_grpc_client_caps_the_reconnect_backoff():
    """Without the cap gRPC waited ~20 s after a restarted server was back before dialing it again (measured)."""
    from drape_client.api import _grpc_channel_args

    args = dict(_grpc_channel_args())
    assert args["grpc.max_reconnect_backoff_ms"] <= 1000
    assert args["grpc.max_send_message_length"] == args["grpc.max_receive_message_length"] == 2**31 - 1


def test_health_sees_a_dead_stub_even_as_a_zombie(tmp_path):
    """drape_serving.health counts live stub children by instance name; a killed, unreaped one (a zombie) is dead."""
    from drape_serving import health

    stub = tmp_path / health.STUB_BINARY  # a process whose argv looks like a stub's: [.../stub, ..., instance]
    stub.symlink_to(sys.executable)
    procs = [subprocess.Popen([str(stub), "-c", "import time; time.sleep(60)", f"gmm_0_{i}"]) for i in range(2)]
    try:
        assert _wait_for(lambda: set(health.live_stubs(os.getpid(), ["gmm_0_0", "gmm_0_1"])) == {"gmm_0_0", "gmm_0_1"}, 5)
        os.kill(procs[0].pid, signal.SIGKILL)
        assert _wait_for(lambda: open(f"/proc/{procs[0].pid}/stat").read().split(") ")[1][0] == "Z", 5)  # not reaped
        alive = health.live_stubs(os.getpid(), ["gmm_0_0", "gmm_0_1"])
        assert set(alive) == {"gmm_0_1"} and alive["gmm_0_1"] == procs[1].pid
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_manifest_probes_run_the_stub_aware_health_check():
    probes = faults.manifest_probes()
    for name, mode in (("readinessProbe", "ready"), ("livenessProbe", "live")):
        p = probes[name]
        assert p.command[-3:] == ("-m", "drape_serving.health", mode), p
    # A dead stub never heals: the kubelet must restart the pod within a minute of it, and the Service must stop
    # sending it traffic sooner.
    live, ready = probes["livenessProbe"], probes["readinessProbe"]
    assert live.period_s * live.failure_threshold <= 60
    assert ready.period_s * ready.failure_threshold <= live.period_s * live.failure_threshold
    run = subprocess.run([sys.executable, "-m", "drape_serving.health", "--help"], capture_output=True, text=True)
    assert run.returncode == 0 and "stub" in run.stdout


# ---------------------------------------------------------------------------------------- real servers


@pytest.mark.server
@pytest.mark.slow
def test_stub_kill_fails_only_its_instance_and_the_manifest_probes_restart_the_pod(cpu_repo, tmp_path):
    from drape_serving import health

    server = _start(cpu_repo, tmp_path, "stub-kill")
    current = {"server": server}
    load = None
    try:
        pid = server.process.pid
        stubs = faults.stub_processes(pid)
        assert "gmm_0_0" in stubs and len(stubs) == len(health.python_instances(f"http://{server.http_url}"))
        probes = faults.manifest_probes()
        for spec in probes.values():
            assert spec.run(server.host, server.http_port, pid) == (True, ""), spec.name
        origin = time.monotonic()
        load = faults.Load({"grpc": server.grpc_url, "http": server.http_url}, origin=origin,
                           lanes=[("grpc", "tryon"), ("http", "tryon"), ("grpc", "recolor")]).start()
        time.sleep(3.0)
        os.kill(stubs["gmm_0_0"], signal.SIGKILL)
        t_kill = time.monotonic() - origin
        assert _wait_for(lambda: "gmm_0_0" not in faults.stub_processes(pid), 5)  # SIGKILL is delivered async
        # The probes see it at once: failureThreshold runs later the pod is out of the Service / restarted.
        verdicts = {name: spec.run(server.host, server.http_port, pid) for name, spec in probes.items()}
        for name, (ok, detail) in verdicts.items():
            assert not ok and "gmm_0_0" in detail, (name, detail)
        assert _wait_for(lambda: sum(not o.ok for o in load.snapshot()) >= 3, 30), "no request hit the dead instance"
        time.sleep(2.0)
        outcomes = load.snapshot()

        assert server.is_running(), "tritonserver died with its stub"
        assert not [o for o in outcomes if not o.ok and o.end < t_kill], "failures before the kill"
        failed = [o for o in outcomes if not o.ok]
        for o in failed:
            assert o.kind == "ServerError" and "gmm_0_0" in o.message and "not healthy" in o.message, o
            assert o.ensemble == "tryon", o                              # recolor does not use gmm
            assert o.latency < FAIL_WITHIN_S, o                          # failed fast, no hang
        assert any(o.ok and o.ensemble == "tryon" and o.start > t_kill for o in outcomes), \
            "the surviving gmm instance should still serve tryon"
        # What Triton 2.51 itself says: nothing is wrong, and the stub stays dead. If this starts failing, Triton
        # learnt to restart stubs or to report them: revisit drape_serving.health and RELIABILITY.md.
        for path in ("/v2/health/ready", "/v2/health/live", "/v2/models/gmm/ready", "/v2/models/tryon/ready"):
            assert faults.http_status(server.host, server.http_port, path) == 200, path
        assert "gmm_0_0" not in faults.stub_processes(pid)

        # The kubelet's restart: traffic is gone (readiness failed), SIGTERM (SIGKILL after a grace period: with a
        # stub killed mid-request Triton sits out its whole exit timeout), start the container again.
        load.pause()
        time.sleep(1.0)
        server.stop(timeout=5)
        restarted = _start(cpu_repo, tmp_path, "restarted", (server.http_port, server.grpc_port, server.metrics_port))
        current["server"] = restarted
        assert restarted.startup_s < READY_WITHIN_S
        for spec in probes.values():
            assert spec.run(restarted.host, restarted.http_port, restarted.process.pid) == (True, ""), spec.name
        resumed = time.monotonic() - origin
        load.resume(reconnect=True)
        assert _wait_for(lambda: sum(o.ok and o.start >= resumed and o.ensemble == "tryon"
                                     for o in load.snapshot()) >= 4, 60), "tryon did not come back"
        after = [o for o in load.snapshot() if o.start >= resumed]
        assert all(o.ok for o in after), [o for o in after if not o.ok][:3]
    finally:
        if load is not None:
            load.stop()
        current["server"].stop()
        for s in {id(server): server, id(current["server"]): current["server"]}.values():
            faults.reap_shm(faults.shm_prefix(s))


@pytest.mark.server
@pytest.mark.slow
def test_server_restart_under_load_loses_no_request_within_the_retry_budget(cpu_repo, tmp_path):
    from drape_serving.server import free_ports

    policy = faults.counting_retry(attempts=40, base_s=0.1, cap_s=2.0)
    budget = faults.budget_quantiles(policy)
    server = _start(cpu_repo, tmp_path, "first", tuple(free_ports(3)))
    servers = [server]
    load = None
    try:
        origin = time.monotonic()
        load = faults.Load({"grpc": server.grpc_url, "http": server.http_url}, retry=policy, timeout_s=60,
                           origin=origin, lanes=[("grpc", "tryon"), ("http", "recolor")]).start()
        assert _wait_for(lambda: len(load.snapshot()) >= 2, 60)
        t_kill = time.monotonic()
        server.process.send_signal(signal.SIGKILL)
        server.process.wait(30)
        server.stop()  # the stubs a killed tritonserver leaves behind (the container runtime kills them in k8s)
        assert _wait_for(lambda: not faults._orphan_stubs(faults.shm_prefix(server)), 5), "orphaned stubs survive"
        restarted = _start(cpu_repo, tmp_path, "second", (server.http_port, server.grpc_port, server.metrics_port))
        servers.append(restarted)
        outage = time.monotonic() - t_kill
        t_ready = time.monotonic() - origin
        assert _wait_for(lambda: {o.lane for o in load.snapshot() if o.ok and o.start >= t_ready}
                         >= {"grpc-tryon-0", "http-recolor-0"}, 60), "a lane never succeeded after the restart"
        load.stop()
        outcomes = load.snapshot()
        failed = [o for o in outcomes if not o.ok]
        retried = [o for o in outcomes if o.retries]
        assert not failed, f"{len(failed)} failed within the retry budget: {failed[:3]}"
        assert retried, "no request was retried: the restart did not happen under load"
        assert max(o.latency for o in outcomes) <= outage + budget["max"] + 60  # bounded by the budget, no hang
        if outage > budget["p01"]:
            pytest.fail(f"restart took {outage:.1f}s, more than the retry budget covers (p01 {budget['p01']}s)")
    finally:
        if load is not None:
            load.stop()
        for s in servers:
            s.stop()
            faults.reap_shm(faults.shm_prefix(s))
