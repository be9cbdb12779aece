"""Data safety of the model repository: kill -9 `python -m drape_export repo` at random moments.

Every killed run is the real CLI (``python -m drape_export repo --target cpu --onnx-dir build/onnx --out <tmp>``)
SIGKILLed at a seeded moment, in turn:

* ``timed``: uniformly over the lifetime of an uninterrupted run (interpreter start included);
* ``hook``: exactly before the N-th filesystem change under the work folder (an audit hook loaded from
  ``tests/reliability/_kill_hook``; the assembly code runs unmodified), N uniform over the changes an
  uninterrupted run makes -- half of these are aimed at the publish phase (renames into the served repository,
  config replacement, pruning), where a timer rarely lands.

Every fourth trial switches the model set (all networks <-> only the recolor ensemble's), which the assembly does
by swapping the whole repository instead of adding versions. Some trials kill twice in a row.

After every kill, the layout Triton would read is checked: the repository exists; its model set is a complete one;
every model directory holds its config (identical to a completed assembly's) and only complete version
directories -- each numeric directory has exactly the files of a completed assembly, byte for byte; no other
visible entry (Triton reads a directory named ``3.incoming`` as version 3: ``std::stoll`` stops at the dot, while a
leading dot makes the name fail to parse, so Triton ignores it with a warning); no hidden directory at the
repository root (Triton would try to load it as a model). Then a later uninterrupted assembly must succeed, pass
the same check and leave no temporary entry behind, in the repository or next to it (a killed run's staging tree,
counted after each kill, is removed by the next run).

``--live`` (default on) repeats kills while one ``tritonserver --model-control-mode=poll --repository-poll-secs=1``
serves the repository: after each kill the server must converge on what is on disk (every model serving exactly
its newest version directory, from the repository index API), answer a known-good try-on request with the
reference answer, and at the end its log must show no failed load.

Examples (from the repository root)::

    python -m tests.reliability.kill_assembly --trials 24 --live-kills 8 --out build/reliability/kill_assembly.json
    python -m tests.reliability.kill_assembly --trials 10 --no-live
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
HOOK_DIR = Path(__file__).resolve().parent / "_kill_hook"
DEFAULT_OUT = ROOT / "build" / "reliability" / "kill_assembly.json"
SAMPLES = ROOT / "build" / "samples"
RECOLOR_NETWORKS = ("garment_seg", "human_parsing", "recolor")   # the subset: only the recolor ensemble
MODEL_FILES = {"config.pbtxt", "card.json", "README.md"}          # visible files a model directory may hold
MODES = ("timed", "hook")
# what tritonserver logs at error level on a machine without an NVIDIA driver, whatever the repository holds
BENIGN_ERRORS = re.compile(r"CudaDriverHelper has not been initialized|unable to create stream for \w+: CUDA driver")
console = Console(stderr=True)


# ------------------------------------------------------------------------------------------------ setup


@dataclass
class Settings:
    trials: int = 24
    seed: int = 0
    onnx_dir: Path = ROOT / "build" / "onnx"
    swap_every: int = 4               # every N-th trial switches the model set (whole-repository swap); 0 = never
    double_kill: float = 0.25
    live: bool = True
    live_kills: int = 8
    workdir: Path | None = None
    keep: bool = False


@dataclass
class Workspace:
    """Work folder, the two ONNX sets, the reference contents of a completed assembly, the calibrated runs."""

    settings: Settings
    root: Path
    onnx_sets: dict[str, Path]
    reference: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)  # model -> {"model"/"version": files}
    model_sets: dict[str, set[str]] = field(default_factory=dict)
    ops: dict[str, list[str]] = field(default_factory=dict)      # calibrated op lists: "versioned" / "replaced"
    run_s: float = 0.0


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _files(directory: Path) -> dict[str, str]:
    return {p.name: _sha(p) for p in sorted(directory.iterdir()) if p.is_file()}


def prepare(settings: Settings) -> Workspace:
    """The recolor-only ONNX set (links into --onnx-dir) and a reference assembly of each set."""
    if not (settings.onnx_dir / "tom" / "card.json").exists():
        raise SystemExit(f"--onnx-dir {settings.onnx_dir}: no exported networks (run `make export` or `make quick`)")
    root = Path(settings.workdir or tempfile.mkdtemp(prefix="drape-kill-assembly-"))
    root.mkdir(parents=True, exist_ok=True)
    subset = root / "onnx-recolor"
    subset.mkdir(exist_ok=True)
    for name in RECOLOR_NETWORKS:
        link = subset / name
        if not link.exists():
            link.symlink_to(settings.onnx_dir.resolve() / name, target_is_directory=True)
    (root / "logs").mkdir(exist_ok=True)
    ws = Workspace(settings, root, {"all": settings.onnx_dir.resolve(), "recolor": subset})
    for name, onnx in ws.onnx_sets.items():
        ref = root / f"reference-{name}" / "repo"
        shutil.rmtree(ref.parent, ignore_errors=True)
        code, out = assemble(ws, onnx, ref)
        if code != 0:
            raise SystemExit(f"reference assembly of {onnx} failed:\n{out}")
        ws.model_sets[name] = {p.name for p in ref.iterdir() if p.is_dir()}
        for model in ws.model_sets[name]:
            entry = {"model": _files(ref / model), "version": _files(ref / model / "1")}
            if ws.reference.setdefault(model, entry) != entry:
                raise SystemExit(f"{model}: the two reference assemblies differ; the layout check needs one answer")
    return ws


# ------------------------------------------------------------------------------------------------ running


def _command(onnx: Path, repo: Path) -> list[str]:
    # one instance per model: the layout is the same, and the live server reloads 13 models per version on 2 cores
    return [sys.executable, "-m", "drape_export", "repo", "--target", "cpu", "--onnx-dir", str(onnx), "--out",
            str(repo), "--instances", "1", "--prepost-instances", "1"]


def _env(hook: dict | None) -> dict[str, str]:
    env = dict(os.environ)
    if hook is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(HOOK_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["DRAPE_KILL_HOOK"] = json.dumps(hook)
    return env


def assemble(ws: Workspace, onnx: Path, repo: Path, hook: dict | None = None, timeout: float = 300) -> tuple[int, str]:
    """One uninterrupted (or hook-killed) assembly; (exit code, output)."""
    proc = subprocess.run(_command(onnx, repo), cwd=ROOT, env=_env(hook), capture_output=True, text=True,
                          timeout=timeout, start_new_session=True)
    return proc.returncode, proc.stdout + proc.stderr


@dataclass
class Kill:
    mode: str
    phase: str = ""            # hook kills: "build" (staging tree) or "publish" (the served repository)
    target: str = ""
    point: str = ""            # the operation that was about to run (hook) / the moment (timed)
    killed: bool = True


def _hook(root: Path, log: Path, kill_at: int, pattern: str | None = None) -> dict:
    return {"root": str(root), "log": str(log), "kill_at": kill_at, "pattern": pattern}


def _phases(ops: list[str]) -> list[str]:
    """Each operation's phase: "prepare" (removing a killed run's staging tree), "build" (the new staging tree next
    to the repository), "publish" (renames into the served repository, config replacement, pruning), "cleanup"
    (removing the staging tree, which after a swap holds the old repository)."""
    def last_path(op: str) -> str:
        return op.split("\t", 1)[-1].split(" -> ")[-1]

    staged = next((i for i, op in enumerate(ops) if op.startswith("mkdir\t") and ".building-" in op), len(ops))
    start = next((i for i, op in enumerate(ops) if i > staged and ".building-" not in last_path(op)), len(ops))
    end = next((i for i, op in enumerate(ops) if i > staged and op.startswith("rmtree\t") and ".building-" in op),
               len(ops))
    return ["prepare" if i < staged else "build" if i < min(start, end) else "publish" if i < end else "cleanup"
            for i in range(len(ops))]


# the commit points of a versioned publish: every rename whose destination is in the served repository
PUBLISH_RENAMES = r"^rename\t\S* -> \S*/repo(/\S*)?$"


def killed_run(ws: Workspace, onnx: Path, repo: Path, mode: str, kind: str, rng: random.Random, log: Path,
               aim: str | None = None) -> Kill:
    """Start the CLI and SIGKILL it (timed from outside, or by the hook before operation N)."""
    if mode == "timed":
        at = rng.uniform(0.0, ws.run_s)
        proc = subprocess.Popen(_command(onnx, repo), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        try:
            proc.wait(timeout=at)
            return Kill("timed", target=f"{at:.3f}s", killed=False)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return Kill("timed", target=f"{at:.3f}s", point=f"{at:.3f}s")
    ops = ws.ops[kind]
    aim = aim or rng.choice(("any", "publish"))
    pattern = aim[3:] if aim.startswith("re:") else PUBLISH_RENAMES if aim == "publish" else None
    matches = sum(1 for op in ops if re.search(pattern, op)) if pattern else len(ops)
    if not matches and aim.startswith("re:"):
        raise ValueError(f"no {kind} operation matches {pattern!r}")
    if not matches:  # a swap publishes with one renameat2 call, which no audit event shows: aim anywhere then
        aim, pattern, matches = "any", None, len(ops)
    kill_at = rng.randint(1, matches)  # counted by the hook among the matching operations: robust to extra ones
    code, _ = assemble(ws, onnx, repo, hook=_hook(ws.root, log, kill_at, pattern))
    lines = log.read_text().splitlines() if log.exists() else []
    done = [ln.split("\t", 1)[1] for ln in lines if not ln.startswith("KILL\t")]
    point = next((ln.split("\t", 2)[2] for ln in lines if ln.startswith("KILL\t")), "")
    return Kill("hook", phase=_phases(done)[-1] if point and done else "",
                target=f"{'op' if pattern is None else 'match'} {kill_at}/{matches} ({aim if len(aim) < 20 else 're'})",
                point=point.replace(str(ws.root) + "/", ""), killed=code == -signal.SIGKILL and bool(point))


# ------------------------------------------------------------------------------------------------ layout check


@dataclass
class Layout:
    models: int = 0
    versions: dict[str, list[int]] = field(default_factory=dict)
    leftovers_inside: list[str] = field(default_factory=list)   # hidden entries in the repository (Triton ignores)
    leftovers_beside: list[str] = field(default_factory=list)   # temporary folders next to the repository
    beside_bytes: int = 0
    problems: list[str] = field(default_factory=list)


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def check_layout(ws: Workspace, repo: Path) -> Layout:
    """What Triton would read from ``repo`` is complete (see the module docstring)."""
    lay = Layout()
    lay.leftovers_beside = sorted(p.name for p in repo.parent.glob(f".{repo.name}.*"))
    lay.beside_bytes = sum(_du(repo.parent / n) for n in lay.leftovers_beside)
    if not repo.is_dir():
        lay.problems.append(f"the repository {repo.name}/ is missing")
        return lay
    models = set()
    for entry in sorted(repo.iterdir()):
        if entry.name.startswith("."):
            if entry.is_dir():
                lay.problems.append(f"hidden directory {entry.name} at the repository root (Triton loads it as a model)")
            else:
                lay.leftovers_inside.append(entry.name)
        elif entry.is_dir():
            models.add(entry.name)
        elif entry.name != "manifest.json":
            lay.problems.append(f"unexpected file {entry.name} at the repository root")
    if models not in ws.model_sets.values():
        lay.problems.append(f"model set {sorted(models)} is not a complete one")
    lay.models = len(models)
    for model in sorted(models):
        lay.problems += _check_model(ws, repo / model, lay)
    return lay


def _check_model(ws: Workspace, model_dir: Path, lay: Layout) -> list[str]:
    ref = ws.reference.get(model_dir.name)
    if ref is None:
        return [f"{model_dir.name}: not a model of any complete assembly"]
    problems, versions = [], []
    for entry in sorted(model_dir.iterdir()):
        where = f"{model_dir.name}/{entry.name}"
        if entry.name.startswith("."):
            lay.leftovers_inside.append(where)
        elif entry.is_dir() and re.fullmatch(r"[1-9][0-9]*", entry.name):
            versions.append(int(entry.name))
            have = _files(entry)
            if have != ref["version"]:
                missing = sorted(set(ref["version"]) - set(have))
                differ = sorted(k for k in have if ref["version"].get(k) != have[k])
                problems.append(f"{where}: partial version (missing {missing}, differing {differ})")
        elif entry.is_file() and entry.name in MODEL_FILES:
            if ref["model"].get(entry.name) != _sha(entry):
                problems.append(f"{where}: differs from a completed assembly's")
        else:
            problems.append(f"{where}: unexpected entry (Triton would read a name starting with digits as a version)")
    if "config.pbtxt" not in {p.name for p in model_dir.iterdir()}:
        problems.append(f"{model_dir.name}: no config.pbtxt")
    if not versions:
        problems.append(f"{model_dir.name}: no version directory")
    lay.versions[model_dir.name] = sorted(versions)
    return problems


# ------------------------------------------------------------------------------------------------ calibration


def calibrate(ws: Workspace) -> None:
    """Count the filesystem changes of each kind of run a trial can kill (versioned with pruning, and a swap, into
    either model set) and time one uninterrupted run."""
    base = ws.root / "calibration"
    shutil.rmtree(base, ignore_errors=True)
    repo = base / "repo"
    full, subset = ws.onnx_sets["all"], ws.onnx_sets["recolor"]
    for _ in range(2):  # versions 1 and 2: the counted run publishes 3 and prunes 1, as later trials do
        _must(assemble(ws, full, repo), "calibration assembly")
    t0 = time.monotonic()
    _must(assemble(ws, full, repo), "calibration assembly")  # timed without the hook (it slows every file open)
    ws.run_s = time.monotonic() - t0
    plan = [("all/versioned", full), ("recolor/replaced", subset), (None, subset), (None, subset),
            ("recolor/versioned", subset), ("all/replaced", full)]
    for kind, onnx in plan:
        log = base / f"{(kind or 'setup').replace('/', '-')}.log"
        code, out = assemble(ws, onnx, repo, hook=_hook(base, log, 0) if kind else None)
        if code != 0 or (kind and kind.split("/")[1] not in out):
            raise SystemExit(f"calibration ({kind}) did not run as expected (exit {code}):\n{out}")
        if kind:
            ws.ops[kind] = [ln.split("\t", 1)[1].replace(str(base), str(ws.root)) for ln in log.read_text().splitlines()]
    shutil.rmtree(base, ignore_errors=True)


def _must(result: tuple[int, str], what: str) -> None:
    if result[0] != 0:
        raise SystemExit(f"{what} failed:\n{result[1]}")


# ------------------------------------------------------------------------------------------------ trials


@dataclass
class Trial:
    index: int
    model_set: str
    swap: bool = False
    kills: list[Kill] = field(default_factory=list)
    after_kill: list[dict] = field(default_factory=list)       # layout summary after each kill
    recovery: str = ""                                         # the completing run's summary line
    versions_after: dict[str, list[int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _layout_summary(lay: Layout) -> dict:
    newest = sorted({v[-1] for v in lay.versions.values() if v})
    return {"models": lay.models, "newest_versions": newest, "hidden_inside": len(lay.leftovers_inside),
            "beside": len(lay.leftovers_beside), "problems": lay.problems}


def run_trial(ws: Workspace, index: int, repo: Path, current: str, rng: random.Random, mode: str,
              swap: bool, double: bool, aim: str | None = None) -> tuple[Trial, str]:
    """Kill one or two assemblies into ``repo``, check the layout after each, then complete one and check again."""
    target_set = ("recolor" if current == "all" else "all") if swap else current
    trial = Trial(index, target_set, swap)
    for n in range(2 if double else 1):
        now = _current_set(ws, repo, current)
        kind = f"{target_set}/{'versioned' if now == target_set else 'replaced'}"
        kill = killed_run(ws, ws.onnx_sets[target_set], repo, mode if n == 0 else rng.choice(MODES), kind, rng,
                          ws.root / "logs" / f"trial{index:03d}-{n}.hook.log", aim)
        trial.kills.append(kill)
        lay = check_layout(ws, repo)
        trial.after_kill.append(_layout_summary(lay))
        trial.problems += [f"after kill {n + 1} ({kill.mode} {kill.point or kill.target}): {p}" for p in lay.problems]
    code, out = assemble(ws, ws.onnx_sets[target_set], repo)
    trial.recovery = next((ln.strip().split(" (whole")[0] for ln in out.splitlines()
                           if re.search(r"^\s+(new|versioned|replaced):", ln)), out.strip()[-200:])
    if code != 0:
        trial.problems.append(f"the next assembly failed (exit {code}): {out.strip()[-500:]}")
        return trial, _current_set(ws, repo, current)
    lay = check_layout(ws, repo)
    trial.versions_after = lay.versions
    trial.problems += [f"after the next assembly: {p}" for p in lay.problems]
    if lay.leftovers_inside or lay.leftovers_beside:
        trial.problems.append(f"the next assembly left temporary entries: {lay.leftovers_inside} in the repository, "
                              f"{lay.leftovers_beside} beside it")
    over = {m: v for m, v in lay.versions.items() if len(v) > 2}
    if over:
        trial.problems.append(f"more than 2 versions kept after the next assembly: {over}")
    return trial, target_set


def _current_set(ws: Workspace, repo: Path, fallback: str) -> str:
    models = {p.name for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")} if repo.is_dir() else set()
    return next((name for name, s in ws.model_sets.items() if s == models), fallback)


def run_layout_trials(ws: Workspace, trials: int, progress: Progress | None = None) -> list[Trial]:
    s = ws.settings
    rng = random.Random(s.seed)
    repo = ws.root / "repo"
    shutil.rmtree(repo, ignore_errors=True)
    code, out = assemble(ws, ws.onnx_sets["all"], repo)
    if code != 0:
        raise SystemExit(f"first assembly failed:\n{out}")
    current, results = "all", []
    task = progress.add_task("layout trials", total=trials, info="") if progress else None
    for i in range(trials):
        swap = bool(s.swap_every) and i % s.swap_every == s.swap_every - 1
        trial, current = run_trial(ws, i, repo, current, rng, MODES[i % len(MODES)], swap, rng.random() < s.double_kill)
        results.append(trial)
        if progress:
            progress.update(task, advance=1, info=f"{sum(not t.ok for t in results)} failed")
    return results


# ------------------------------------------------------------------------------------------------ live server


@dataclass
class LiveResult:
    kills: list[dict] = field(default_factory=list)
    loads: int = 0
    ignored_hidden: int = 0
    benign_errors: int = 0     # E lines of a machine without a GPU (BENIGN_ERRORS), counted, not failures
    error_lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    startup_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def _on_disk_newest(repo: Path) -> dict[str, int]:
    out = {}
    for model in (p for p in repo.iterdir() if p.is_dir() and not p.name.startswith(".")):
        versions = [int(v.name) for v in model.iterdir() if v.is_dir() and re.fullmatch(r"[1-9][0-9]*", v.name)]
        out[model.name] = max(versions)
    return out


def wait_converged(server, repo: Path, timeout: float = 300) -> tuple[bool, str, int]:
    """Until every model on disk is served at exactly its newest version directory (repository index API) and the
    server is ready; also counts the polls that found it not ready (strict readiness drops while a reload
    unloads the previous version)."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}", connection_timeout=60, network_timeout=60)
    deadline, detail, not_ready = time.monotonic() + timeout, "", 0
    while time.monotonic() < deadline:
        want = _on_disk_newest(repo)
        ready: dict[str, set[int]] = {}
        try:
            index = client.get_model_repository_index(headers=server.admin_headers("http"))
        except Exception as exc:  # noqa: BLE001 - the index call can block behind a reload on a busy machine
            detail = f"repository index: {type(exc).__name__}: {exc}"
            client.close()
            client = httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}", connection_timeout=60,
                                                      network_timeout=60)
            continue
        for m in index:
            if m.get("state") == "READY":
                ready.setdefault(m["name"], set()).add(int(m["version"]))
        lag = {name: sorted(ready.get(name, ())) for name, v in want.items() if ready.get(name) != {v}}
        is_ready = server.is_ready()
        not_ready += not is_ready
        if not lag and is_ready:
            return True, "", not_ready
        detail = f"serving {lag}, newest on disk {dict((k, want[k]) for k in lag)}, ready={is_ready}"
        time.sleep(1.0)
    return False, detail, not_ready


def _reference_request(server):
    import numpy as np

    from drape_client import DrapeClient

    with DrapeClient(f"127.0.0.1:{server.grpc_port}", timeout_s=120) as client:
        return np.asarray(client.tryon(SAMPLES / "person.jpg", SAMPLES / "garment.jpg"))


def run_live(ws: Workspace, kills: int, progress: Progress | None = None, complete_after: bool = True) -> LiveResult:
    """One poll-mode tritonserver over a repository that killed assemblies keep changing (then, with
    ``complete_after``, one uninterrupted assembly); after each, the server must converge and answer."""
    import numpy as np

    from drape_serving.server import start_server

    rng = random.Random(ws.settings.seed + 1)
    repo = ws.root / "live" / "repo"
    shutil.rmtree(repo.parent, ignore_errors=True)
    code, out = assemble(ws, ws.onnx_sets["all"], repo)
    if code != 0:
        raise SystemExit(f"live repository assembly failed:\n{out}")
    result = LiveResult()
    log = repo.parent / "tritonserver.log"
    steps = kills + int(complete_after)
    task = progress.add_task("live kills", total=steps, info="starting tritonserver") if progress else None
    poll = ["--model-control-mode=poll", "--repository-poll-secs=1"]  # after the launcher's "none": the last wins
    with start_server(repo, log_file=log, ready_timeout=300, extra_args=poll) as server:
        result.startup_s = round(server.startup_s, 1)
        reference = _reference_request(server)
        for i in range(steps):
            final = i == kills
            if final:
                code, out = assemble(ws, ws.onnx_sets["all"], repo)
                entry = {"kill": None, "completed": code == 0}
                if code != 0:
                    result.problems.append(f"the final assembly failed: {out.strip()[-300:]}")
            else:
                kill = killed_run(ws, ws.onnx_sets["all"], repo, "timed" if i % 3 == 2 else "hook", "all/versioned", rng,
                                  repo.parent / f"kill{i}.hook.log", aim="publish")
                entry = {"kill": asdict(kill)}
            lay = check_layout(ws, repo)
            entry["layout_problems"] = lay.problems
            result.problems += lay.problems
            t0 = time.monotonic()
            converged, detail, entry["not_ready_polls"] = wait_converged(server, repo)
            entry["converge_s"] = round(time.monotonic() - t0, 1)
            entry["serving"] = _on_disk_newest(repo)
            if not converged:
                result.problems.append(f"step {i}: Triton did not converge on the disk: {detail}")
            answer = _reference_request(server)
            entry["request_ok"] = bool(answer.shape == reference.shape and np.abs(
                answer.astype(int) - reference.astype(int)).max() <= 1)
            if not entry["request_ok"]:
                result.problems.append(f"step {i}: the good request's answer changed")
            if not server.is_running():
                result.problems.append(f"step {i}: tritonserver exited")
            result.kills.append(entry)
            if progress:
                progress.update(task, advance=1, info=f"converged in {entry['converge_s']} s")
    text = log.read_text(errors="replace")
    result.loads = len(re.findall(r"successfully loaded", text))
    result.ignored_hidden = len(re.findall(r"ignore version directory '\.", text))
    for line in text.splitlines():
        if re.search(r"failed to (re)?load|unable to load|failed to poll|poll failed|load failed", line, re.I) or (
                re.match(r"E\d{4} ", line) and not BENIGN_ERRORS.search(line)):
            result.error_lines.append(line)
        elif re.match(r"E\d{4} ", line):
            result.benign_errors += 1
    if result.error_lines:
        result.problems.append(f"{len(result.error_lines)} error lines in the Triton log, e.g. {result.error_lines[0]}")
    return result


# ------------------------------------------------------------------------------------------------ main


def print_table(trials: list[Trial]) -> None:
    table = Table(title="kill -9 during repository assembly")
    for col in ("#", "set", "kills (aimed -> landed before)", "after kill", "next assembly", "result"):
        table.add_column(col, overflow="fold")
    for t in trials:
        kills = "; ".join(f"{k.mode} {k.target} -> {k.point or ('finished' if not k.killed else '?')}"[:90]
                          for k in t.kills)
        after = "; ".join(f"v{a['newest_versions']} hidden {a['hidden_inside']} beside {a['beside']}"
                          for a in t.after_kill)
        result = "[green]ok[/]" if t.ok else "[red]" + "; ".join(t.problems) + "[/]"
        table.add_row(str(t.index), t.model_set, kills, after, t.recovery, result)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    d = Settings()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=d.trials, help="layout trials (default %(default)s)")
    ap.add_argument("--seed", type=int, default=d.seed, help="seed of the kill moments (default %(default)s)")
    ap.add_argument("--onnx-dir", type=Path, default=d.onnx_dir, help="exported networks (default %(default)s)")
    ap.add_argument("--swap-every", type=int, default=d.swap_every,
                    help="every N-th trial changes the model set: a whole-repository swap (0 = never; default %(default)s)")
    ap.add_argument("--double-kill", type=float, default=d.double_kill,
                    help="fraction of trials killed twice before the completing run (default %(default)s)")
    ap.add_argument("--live", action=argparse.BooleanOptionalAction, default=d.live,
                    help="also kill assemblies under a poll-mode tritonserver (default: on)")
    ap.add_argument("--live-kills", type=int, default=d.live_kills, help="kills under the live server (default %(default)s)")
    ap.add_argument("--workdir", type=Path, help="work folder (default: a new temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report (default %(default)s)")
    args = ap.parse_args(argv)
    if not 0 <= args.double_kill <= 1 or args.trials < 0 or args.live_kills < 0 or args.swap_every < 0:
        ap.error("--trials, --live-kills and --swap-every must be >= 0 and --double-kill in [0, 1]")
    s = Settings(trials=args.trials, seed=args.seed, onnx_dir=args.onnx_dir, swap_every=args.swap_every,
                 double_kill=args.double_kill, live=args.live, live_kills=args.live_kills, workdir=args.workdir,
                 keep=args.keep)
    ws = prepare(s)
    calibrate(ws)
    console.print(f"workdir {ws.root}; an uninterrupted assembly: {ws.run_s:.2f} s; filesystem changes per run: "
                  + ", ".join(f"{k} {len(v)}" for k, v in ws.ops.items()))
    cols = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"))
    with Progress(*cols, console=console) as progress:
        trials = run_layout_trials(ws, s.trials, progress)
        live = run_live(ws, s.live_kills, progress) if s.live else None
    print_table(trials)
    kills = [k for t in trials for k in t.kills]
    summary = {
        "trials": len(trials), "passed": sum(t.ok for t in trials), "failed": [t.index for t in trials if not t.ok],
        "kills": sum(k.killed for k in kills), "kills_not_landed_run_finished": sum(not k.killed for k in kills),
        "layout_checks": len(kills) + len(trials),
        "hook_kills_by_phase": {p: sum(k.killed and k.phase == p for k in kills)
                                for p in ("prepare", "build", "publish", "cleanup")},
        "swap_trials": sum(t.swap for t in trials),
        "staging_trees_left_by_kills_max": max((a["beside"] for t in trials for a in t.after_kill), default=0),
        "uninterrupted_run_s": round(ws.run_s, 2), "ops_per_run": {k: len(v) for k, v in ws.ops.items()},
    }
    if live is not None:
        summary["live"] = {"kills": s.live_kills, "ok": live.ok, "problems": live.problems, "loads": live.loads,
                           "hidden_dirs_ignored_warnings": live.ignored_hidden, "error_lines": len(live.error_lines),
                           "benign_no_gpu_error_lines": live.benign_errors,
                           "not_ready_polls_during_reloads": sum(k["not_ready_polls"] for k in live.kills),
                           "requests_ok": sum(k["request_ok"] for k in live.kills),
                           "converge_s_max": max((k["converge_s"] for k in live.kills), default=0)}
    report = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(s).items()},
              "command": " ".join(_command(ws.onnx_sets["all"], Path("<tmp>/repo"))), "summary": summary,
              "trials": [asdict(t) | {"ok": t.ok} for t in trials], "live": asdict(live) if live else None}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print_json(json.dumps(summary))
    console.print(f"report: {args.out}")
    ok = all(t.ok for t in trials) and (live is None or live.ok)
    if ok and not s.keep and s.workdir is None:
        shutil.rmtree(ws.root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
