"""The soak's measuring parts (tests/reliability/soak.py), CI-sized: the 10-minute run itself is a script.

``sample_memory`` against the real server: every python-model stub found, the RSS split (anon + shmem + file)
adds up to the total, the /dev/shm regions are this server's. ``growth``: the windows and the ratio.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.reliability import soak  # noqa: E402


def test_sample_memory_of_the_real_server(real_server):
    s = soak.sample_memory(real_server.process.pid, 0.0)
    import psutil

    stubs = {c.pid for c in psutil.Process(real_server.process.pid).children()
             if c.cmdline() and c.cmdline()[0].endswith(soak.STUB_BINARY)}
    assert s.stubs == len(stubs) > 0, "every python-backend stub of the server is sampled"
    assert set(map(int, s.stub_pids.split())) == stubs
    assert s.total_rss == s.server_rss + s.stubs_rss
    # /proc/<pid>/status splits RSS exactly into anon + file + shmem (each rounded to kB): the parts must add up
    split = s.server_anon + s.server_shmem + s.stubs_anon + s.stubs_shmem + s.total_file
    assert abs(split - s.total_rss) <= 0.02 * s.total_rss + (1 << 20), (split, s.total_rss)
    assert s.stubs_shmem > 0 and s.server_shmem > 0, "stubs and server share their /dev/shm regions"
    prefix = next(a.split("shm-region-prefix-name=", 1)[1] for a in real_server.command
                  if "shm-region-prefix-name=" in a)
    regions = list(Path("/dev/shm").glob(prefix + "*"))
    assert regions and s.shm_bytes == sum(r.stat().st_blocks * 512 for r in regions) > 0


def _samples(values, dt=5.0):
    return [soak.MemorySample(t=i * dt, server_rss=v, stubs_rss=0, total_rss=v, total_pss=v, stubs=0, stub_pids="")
            for i, v in enumerate(values)]


def test_growth_compares_the_baseline_window_with_the_last():
    # 0-115 s at 100, 120-260 s at 105, 265-295 s (the last 30 s) at 112: baseline = [120, 150) = 105, end = 112
    values = [100] * 24 + [105] * 29 + [112] * 7
    g = soak.growth(_samples(values), baseline_s=120.0)
    assert g["baseline_bytes"] == 105 and g["end_bytes"] == 112
    assert g["growth"] == pytest.approx(112 / 105 - 1, abs=1e-4)
    assert soak.growth(_samples([7] * 60), 120.0)["growth"] == 0.0


def test_growth_refuses_a_run_too_short_for_its_baseline():
    with pytest.raises(ValueError, match="too short"):
        soak.growth(_samples([1] * 10), baseline_s=120.0)
