"""Data safety, CI-sized: kill -9 during training and during repository assembly, then check what is on disk.

The full runs (>= 20 trials each) are scripts: ``python -m tests.reliability.kill_training`` and
``python -m tests.reliability.kill_assembly`` (RELIABILITY.md has their numbers). Here: three training kills aimed
at the moments that used to lose data (between the two renames of the best-weights pair, before the first DeepSpeed
checkpoint, and a write seen in progress from outside), ten assembly kills with the layout check after each, and one
kill under a poll-mode tritonserver. Every trial runs the real launcher / CLI; only the kill moment is chosen.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.reliability import kill_assembly as ka
from tests.reliability import kill_training as kt

ROOT = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def train_ws(tmp_path_factory) -> kt.Workspace:
    ws = kt.prepare(kt.Settings(steps=20, val_every=5, workdir=tmp_path_factory.mktemp("kill-training")))
    ws.full_run_s = 60.0  # only bounds the waits here; no kill below is timed
    return ws


def _assert_trial(trial: kt.Trial) -> None:
    detail = json.dumps({k: v for k, v in trial.__dict__.items() if k != "kills"}, default=str)
    assert trial.kills[0].killed, f"the kill never landed: {trial.kills[0]}"
    assert trial.ok, detail
    assert trial.resume_rc == 0 and trial.resumed_from == trial.expected_from, detail


@pytest.mark.slow
def test_kill_between_the_weights_and_card_renames_resumes_with_a_consistent_pair(train_ws):
    """Aimed at checkpoint writing: new weights.pt renamed in, its card.json not yet. The card waits under its temp
    name, the checker accepts it only because it describes the new weights, and --resume renames it in."""
    trial = kt.run_trial(train_ws, 0, "hook", random.Random(0), hook_target=(2, r"rename\t\S*\.card\.json\.tmp"))
    _assert_trial(trial)
    assert trial.pending_commit, trial.on_disk
    assert trial.expected_from is not None and trial.expected_from < 20


@pytest.mark.slow
def test_kill_before_the_first_deepspeed_checkpoint_resumes_from_scratch(train_ws):
    """weights.pt, card.json and metrics.csv of step 5 exist but no ds/ checkpoint: --resume starts at step 0,
    drops the logged rows it will log again, and finishes the schedule."""
    trial = kt.run_trial(train_ws, 1, "hook", random.Random(1), hook_target=(1, r"^mkdir\t\S*/ds$"))
    _assert_trial(trial)
    assert trial.expected_from is None and trial.resumed_from is None
    assert "best=5" in trial.on_disk, trial.on_disk


@pytest.mark.slow
def test_sigkill_from_outside_during_a_checkpoint_write(train_ws):
    """The launcher's whole process group SIGKILLed the moment a checkpoint write is seen in progress."""
    trial = kt.run_trial(train_ws, 2, "poll", random.Random(5))
    _assert_trial(trial)
    assert trial.kills[0].point, "no write was caught in progress"


def test_recover_best_finishes_only_a_pair_cut_between_its_renames(tmp_path):
    from drape_train.outputs import recover_best, truncate_csv

    (tmp_path / "weights.pt").write_text("new")
    (tmp_path / "card.json").write_text("old")
    (tmp_path / ".card.json.tmp41").write_text("new")             # weights renamed in, card not yet
    recover_best(tmp_path)
    assert (tmp_path / "card.json").read_text() == "new" and not list(tmp_path.glob(".*"))
    (tmp_path / ".weights.pt.tmp42").write_text("newer")          # both temp files written, neither renamed
    (tmp_path / ".card.json.tmp42").write_text("newer")
    recover_best(tmp_path)
    assert (tmp_path / "card.json").read_text() == "new" and (tmp_path / "weights.pt").read_text() == "new"
    assert not list(tmp_path.glob(".*"))
    (tmp_path / "metrics.csv").write_text("step,loss,val_iou\n5,1.0,\n5,,0.5\n10,0.5,\n10,,0.7\n")
    truncate_csv(tmp_path / "metrics.csv", 5)
    assert (tmp_path / "metrics.csv").read_text().splitlines() == ["step,loss,val_iou", "5,1.0,", "5,,0.5"]


# ----------------------------------------------------------------------------------------------- assembly


@pytest.fixture(scope="module")
def asm_ws(tmp_path_factory) -> ka.Workspace:
    if not (ROOT / "build" / "onnx" / "tom" / "card.json").exists():
        pytest.fail("build/onnx is missing: run `make quick` (make test does it first)")
    ws = ka.prepare(ka.Settings(workdir=tmp_path_factory.mktemp("kill-assembly")))
    ka.calibrate(ws)
    return ws


# aimed where a partial state could show: a version renamed in before its config, mid-prune, between models,
# just before and after the whole-repository swap; the rest seeded anywhere
AIMS = [
    (False, r"re:^rename\t\S*/\.\d+\.incoming-\S* -> "),
    (False, r"re:^rename\t\S* -> \S*/repo/\w+/config\.pbtxt$"),
    (False, r"re:^rename\t\S*/repo/\w+/\d+ -> \S*\.pruned-"),
    (False, r"re:^(remove|rmdir)\t[^/]"),
    (True, r"re:^rename\t\S*\.building-\S*/\.manifest\.json\.tmp-\S* -> "),   # swap: the last step before it
    (True, r"re:^rmtree\t\S*\.repo\.building-"),                                # swap: right after it
    (False, "publish"),
    (False, "publish"),
    (False, "any"),
    (False, "any"),
]


@pytest.mark.slow
def test_ten_assembly_kills_leave_only_complete_versions(asm_ws):
    rng = random.Random(0)
    repo = asm_ws.root / "repo"
    assert ka.assemble(asm_ws, asm_ws.onnx_sets["all"], repo)[0] == 0
    current, trials = "all", []
    for i, (swap, aim) in enumerate(AIMS):
        trial, current = ka.run_trial(asm_ws, i, repo, current, rng, "hook", swap, False, aim=aim)
        trials.append(trial)
    failed = [(t.index, [k.point for k in t.kills], t.problems) for t in trials if not t.ok]
    assert not failed, failed
    landed = [k for t in trials for k in t.kills if k.killed]
    assert len(landed) >= 8, [k.__dict__ for t in trials for k in t.kills]
    assert any(k.phase == "publish" for k in landed)
    swaps = [t.recovery for t in trials if t.swap]
    assert "replaced" in swaps[0] and "versioned" in swaps[1], swaps  # killed before / after the exchange


def test_layout_check_flags_what_triton_must_not_see(asm_ws, tmp_path):
    """The checker can fail: a partial version, a digit-led temp name, a hidden model dir, a missing repository."""
    import shutil

    repo = tmp_path / "repo"
    shutil.copytree(asm_ws.root / "reference-all" / "repo", repo)
    assert ka.check_layout(asm_ws, repo).problems == []
    (repo / "gmm" / "1" / "model.onnx").unlink()
    shutil.copytree(repo / "tom" / "1", repo / "tom" / "2.incoming")
    (repo / ".tryon.old").mkdir()
    problems = " | ".join(ka.check_layout(asm_ws, repo).problems)
    assert "gmm/1: partial version" in problems and "tom/2.incoming" in problems and ".tryon.old" in problems
    shutil.rmtree(repo)
    assert "missing" in ka.check_layout(asm_ws, repo).problems[0]


@pytest.mark.server
@pytest.mark.slow
def test_poll_mode_triton_never_loads_a_partial_version(asm_ws):
    """One tritonserver polling the repository every second; an assembly killed mid-publish (some models at the
    new version, some at the old): Triton converges on exactly the newest complete version of each, answers the
    good request as before, and logs no failed load."""
    result = ka.run_live(asm_ws, kills=1, complete_after=False)
    assert result.ok, result.problems
    assert result.kills[0]["kill"]["killed"] and result.kills[0]["kill"]["phase"] == "publish", result.kills[0]
    assert all(k["request_ok"] for k in result.kills) and result.error_lines == []
