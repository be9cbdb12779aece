"""Data safety of training: kill -9 a real DeepSpeed training at random moments, then prove what is on disk.

Each trial starts a real short training with the launcher the Makefile uses
(``deepspeed --num_gpus 1 training/drape_train/train.py --config <net>.yaml --data <tiny set> --out <tmp> --steps S``;
a temporary copy of the network's YAML sets the tiny resolution and a short ``val_every``, so checkpoints are
written every few steps), SIGKILLs its whole process group (launcher and trainer), and checks:

a. whatever is on disk is valid: ``weights.pt`` loads and builds the network exactly as export does
   (``drape_export.onnx_export.load_network``, strict), ``card.json`` parses, names the network, resolution and
   schedule, and its validation metrics are those of *these* weights (recomputed on the validation split); the
   DeepSpeed ``ds/latest`` names a tag whose model-states file loads and holds that step; ``metrics.csv`` and
   ``curves.png`` parse. Files under a temporary name (``.<name>.tmp<pid>``) and DeepSpeed tags that ``latest``
   does not name are reported, never read.
b. ``--resume`` continues from the last saved step (the step in ``ds/latest`` before the resume; the trainer
   prints "resumed at step N") and finishes the same schedule: ``ds/latest`` is the last step, the card records
   the schedule, ``metrics.csv`` holds exactly one validation row per validation step (nothing lost, nothing twice).
c. killed before any checkpoint, ``--resume`` starts from scratch and finishes just the same.

Kill moments (seeded), in turn per trial:

* ``timed``: uniformly over the lifetime of an uninterrupted run (launcher start included, as in production);
* ``poll``: at the N-th moment a checkpoint write is seen in progress (a ``.tmp`` file, a DeepSpeed tag directory
  ``latest`` does not name yet, a tag being pruned), polled every millisecond;
* ``hook``: exactly before the N-th filesystem change of the trainer under the checkpoint folder (an audit hook
  loaded from ``tests/reliability/_kill_hook``; the trainer runs unmodified), N uniform over the operations an
  uninterrupted run performs -- lands between the two renames of a commit, which a timer almost never does.

With ``--double-kill`` a fraction of trials also kills the first resume before the final one.

Training runs pinned to one CPU (``--cpus``): the trainer uses one torch thread per core, and on a machine this
busy two threads fighting for two loaded cores run ~20x slower than one core alone.

Examples (from the repository root)::

    python -m tests.reliability.kill_training --trials 20 --out build/reliability/kill_training.json
    python -m tests.reliability.kill_training --trials 3 --modes hook --keep
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

ROOT = Path(__file__).resolve().parents[2]
HOOK_DIR = Path(__file__).resolve().parent / "_kill_hook"
DEFAULT_OUT = ROOT / "build" / "reliability" / "kill_training.json"
MODES = ("timed", "poll", "hook")
RESUMED = re.compile(r"resumed at step (\d+)")
NOT_TB = r"^(?!.*/tb/)"   # hook kills skip TensorBoard's event appends: a log, not the checkpoint
console = Console(stderr=True)


# ------------------------------------------------------------------------------------------------ settings


@dataclass
class Settings:
    """What one run of the script trains. Defaults: ~8 s of training after a ~15-20 s launcher start."""

    trials: int = 20
    seed: int = 0
    network: str = "garment_seg"
    height: int = 64
    width: int = 48
    steps: int = 40
    val_every: int = 5
    modes: tuple[str, ...] = MODES
    double_kill: float = 0.0          # fraction of trials whose first resume is killed too
    cpus: str = "auto"                # taskset CPU list for the trainer; "auto" = the last CPU, "all" = no pinning
    workdir: Path | None = None
    keep: bool = False

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise ValueError(f"--modes: unknown {bad}; known: {list(MODES)}")
        if self.steps < self.val_every or self.val_every < 1:
            raise ValueError(f"--steps {self.steps} must be >= --val-every {self.val_every} >= 1")
        if not 0.0 <= self.double_kill <= 1.0:
            raise ValueError(f"--double-kill {self.double_kill} must be in [0, 1]")

    @property
    def val_steps(self) -> list[int]:
        return sorted(set(range(self.val_every, self.steps + 1, self.val_every)) | {self.steps})


@dataclass
class Workspace:
    """The tiny dataset, the temporary YAML and the facts learnt from one uninterrupted run."""

    settings: Settings
    root: Path
    data: Path
    config: Path
    metric: str
    full_run_s: float = 0.0
    ops: list[str] = field(default_factory=list)   # filesystem changes of an uninterrupted run (hook log)

    @property
    def deepspeed(self) -> str:
        exe = Path(sys.executable).with_name("deepspeed")
        return str(exe) if exe.exists() else shutil.which("deepspeed") or "deepspeed"


def _cpu_list(spec: str) -> str | None:
    if spec == "all":
        return None
    if spec == "auto":
        return str(max(os.sched_getaffinity(0)))
    return spec


def prepare(settings: Settings) -> Workspace:
    """Generate the tiny dataset once and write the network's YAML with the short schedule beside its ds_config."""
    root = Path(settings.workdir or tempfile.mkdtemp(prefix="drape-kill-training-"))
    root.mkdir(parents=True, exist_ok=True)
    data = root / "data"
    if not (data / "dataset.json").exists():
        subprocess.run([sys.executable, "-m", "drape_train.data", "generate", "--out", str(data), "--train", "16",
                        "--val", "4", "--test", "4", "--height", str(settings.height), "--width", str(settings.width),
                        "--workers", "1", "--quiet"], cwd=ROOT, check=True, capture_output=True)
    src = ROOT / "training" / "configs" / f"{settings.network}.yaml"
    if not src.is_file():
        raise SystemExit(f"--network {settings.network}: no {src}")
    cfg = yaml.safe_load(src.read_text())
    cfg.setdefault("data", {}).update(height=settings.height, width=settings.width)
    cfg.setdefault("schedule", {}).update(steps=settings.steps, val_every=settings.val_every, early_stop_patience=0)
    config = root / f"{settings.network}.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    shutil.copy2(src.parent / cfg["deepspeed"], root / cfg["deepspeed"])
    return Workspace(settings, root, data, config, metric=cfg["metric"])


# ------------------------------------------------------------------------------------------------ processes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Run:
    """One launcher process group and where its output goes."""

    process: subprocess.Popen
    log: Path
    started: float

    def wait(self, timeout: float) -> int | None:
        try:
            return self.process.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the whole group: the launcher and the trainer it spawned (what an OOM kill or node loss does)."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        self.wait_group_gone()

    def wait_group_gone(self, timeout: float = 10.0) -> None:
        """The trainer is the launcher's child: look at the disk only once no process of the group is left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.02)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def launch(ws: Workspace, out: Path, log: Path, resume: bool, hook: dict | None = None) -> Run:
    """Start `deepspeed ... train.py` in its own process group (the Makefile's command, on the tiny set)."""
    s = ws.settings
    cmd = [ws.deepspeed, "--num_gpus", "1", "--master_port", str(_free_port()), "training/drape_train/train.py",
           "--config", str(ws.config), "--data", str(ws.data), "--out", str(out), "--steps", str(s.steps)]
    if resume:
        cmd.append("--resume")
    cpus = _cpu_list(s.cpus)
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    if hook is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(HOOK_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        env["DRAPE_KILL_HOOK"] = json.dumps(hook)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return Run(proc, log, time.monotonic())


def _run_timeout(ws: Workspace) -> float:
    return max(300.0, 8 * ws.full_run_s)


# ------------------------------------------------------------------------------------------------ disk checks


@dataclass
class DiskState:
    """What a kill left in <out>/<network>/, and every way it is not a valid checkpoint (``problems``)."""

    latest: str | None = None          # the tag ds/latest names (None: no such file)
    latest_step: int | None = None
    tags: list[str] = field(default_factory=list)
    stale_tags: list[str] = field(default_factory=list)
    weights: bool = False
    card: bool = False
    best_step: int | None = None
    pending_commit: bool = False       # new weights + their card still under its temp name (--resume finishes it)
    temp_files: list[str] = field(default_factory=list)
    val_rows: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        if not (self.latest or self.weights or self.card or self.tags or self.temp_files):
            return "nothing"
        parts = [f"latest={self.latest}" if self.latest else "no latest"]
        parts.append(f"best={self.best_step}" if self.card else ("weights only" if self.weights else "no weights"))
        if self.pending_commit:
            parts.append("card pending")
        if self.stale_tags:
            parts.append(f"stale {','.join(self.stale_tags)}")
        if self.temp_files:
            parts.append(f"{len(self.temp_files)} tmp")
        return " ".join(parts)


def recompute_metrics(net_dir: Path, card_path: Path | None = None, cpus: str | None = None) -> dict[str, float]:
    """The validation metrics of weights.pt, the network built the way export builds it (from the card's config,
    strict state-dict load)."""
    import torch

    from drape_export.onnx_export import load_network
    from drape_train.config import TrainConfig
    from drape_train.datasets import NetworkDataset
    from drape_train.objectives import Objective
    from drape_train.train import loader, validate

    if card_path is not None and card_path.name != "card.json":  # a pending card: load_network reads card.json
        staged = Path(tempfile.mkdtemp(prefix="pending-card-"))
        (staged / "card.json").write_bytes(card_path.read_bytes())
        (staged / "weights.pt").symlink_to((net_dir / "weights.pt").resolve())
        try:
            return recompute_metrics(staged, cpus=cpus)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    net, card = load_network(net_dir)
    cfg = TrainConfig.model_validate(card.config)
    objective = Objective(cfg)
    objective.net = net
    val = NetworkDataset(cfg.data.root, "val", cfg.network, seed=cfg.schedule.seed + 1)
    # what train.py ran with: every core's worth of torch threads, on the trainer's CPUs -> the same rounding
    before = os.sched_getaffinity(0)
    if cpus is not None:
        os.sched_setaffinity(0, {int(c) for c in cpus.split(",")})
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    try:
        with torch.no_grad():
            return validate(objective, loader(val, cfg, False, cfg.schedule.seed), torch.device("cpu"))
    finally:
        os.sched_setaffinity(0, before)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-4 + 1e-4 * abs(b)


def _check_ds(ds: Path, state: DiskState) -> None:
    import torch

    state.tags = sorted((p.name for p in ds.iterdir() if p.is_dir()), key=_tag_step) if ds.is_dir() else []
    latest = ds / "latest"
    if not latest.exists():
        state.stale_tags = list(state.tags)
        return
    tag = latest.read_text().strip()
    state.latest = tag or "''"
    if not tag:
        state.problems.append("ds/latest is empty (resume cannot find the checkpoint)")
        return
    states = ds / tag / "mp_rank_00_model_states.pt"
    try:
        saved = torch.load(states, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any failure to load is the finding
        state.problems.append(f"ds/latest names {tag} but {states.name} does not load: {type(exc).__name__}: {exc}")
        return
    state.latest_step = saved.get("step")
    if state.latest_step != _tag_step(tag):
        state.problems.append(f"ds/{tag} holds step {state.latest_step}")
    if "module" not in saved or "optimizer" not in saved:
        state.problems.append(f"ds/{tag} lacks the module or optimizer state")
    state.stale_tags = [t for t in state.tags if t != tag]


def _tag_step(tag: str) -> int:
    m = re.fullmatch(r"step(\d+)", tag)
    return int(m.group(1)) if m else -1


def _check_pair(net_dir: Path, ws: Workspace, state: DiskState) -> None:
    """weights.pt and card.json exist together and the card describes these weights. One more state is valid: the
    new weights renamed in and their complete card still under its temp name (the kill fell between the two
    renames of outputs.save_best); --resume renames that card in, so it is checked instead and reported."""
    state.weights, state.card = (net_dir / "weights.pt").exists(), (net_dir / "card.json").exists()
    pending = [p for p in net_dir.glob(".card.json.tmp*")
               if not (net_dir / f".weights.pt.tmp{p.name.removeprefix('.card.json.tmp')}").exists()]
    if not state.weights:
        if state.card:
            state.problems.append("card.json without weights.pt")
        return
    problems = _card_problems(net_dir / "card.json", net_dir, ws, state) if state.card else ["no card.json"]
    if problems and state.weights and pending:
        rolled = _card_problems(pending[0], net_dir, ws, state)
        if not rolled:
            state.pending_commit = True
            state.card = True
            return
    state.problems += [f"weights.pt {p}" if p == "no card.json" else p for p in problems]


def _card_problems(card_path: Path, net_dir: Path, ws: Workspace, state: DiskState) -> list[str]:
    s = ws.settings
    try:
        card = json.loads(card_path.read_text())
    except ValueError as exc:
        return [f"{card_path.name} does not parse: {exc}"]
    state.best_step = card.get("train", {}).get("best_step")
    problems = [f"{card_path.name} {key}={card.get(key)!r}, expected {value!r}"
                for key, value in {"name": s.network, "resolution": {"height": s.height, "width": s.width}}.items()
                if card.get(key) != value]
    if card.get("train", {}).get("steps") != s.steps:
        problems.append(f"{card_path.name} schedule {card.get('train', {}).get('steps')} steps, expected {s.steps}")
    try:
        metrics = recompute_metrics(net_dir, card_path, _cpu_list(s.cpus))
    except Exception as exc:  # noqa: BLE001
        return problems + [f"weights.pt does not load into the network: {type(exc).__name__}: {exc}"]
    wrong = {k: (v, metrics.get(k)) for k, v in card.get("metrics", {}).items()
             if k not in metrics or not _close(metrics[k], v)}
    if wrong or not card.get("metrics"):
        detail = ", ".join(f"{k} card {a:.5f} weights {b}" for k, (a, b) in list(wrong.items())[:3])
        problems.append(f"{card_path.name} (best step {state.best_step}) does not describe weights.pt: {detail}")
    return problems


def _check_logs(net_dir: Path, ws: Workspace, state: DiskState) -> None:
    csv_path = net_dir / "metrics.csv"
    if csv_path.exists():
        try:
            rows = list(csv.DictReader(csv_path.open()))
            state.val_rows = [int(r["step"]) for r in rows if r.get(f"val_{ws.metric}")]
            [int(r["step"]) for r in rows]
        except (ValueError, KeyError, csv.Error) as exc:
            state.problems.append(f"metrics.csv does not parse: {exc}")
    png = net_dir / "curves.png"
    if png.exists():
        from PIL import Image

        try:
            with Image.open(png) as im:
                im.verify()
        except Exception as exc:  # noqa: BLE001
            state.problems.append(f"curves.png is not a valid PNG: {exc}")


def inspect(ws: Workspace, out: Path) -> DiskState:
    """Check everything a kill may have left under <out>/<network>/ (see the module docstring, point a)."""
    state = DiskState()
    net_dir = out / ws.settings.network
    if not net_dir.is_dir():
        return state
    state.temp_files = sorted(str(p.relative_to(net_dir)) for p in net_dir.rglob(".*") if p.is_file())
    _check_ds(net_dir / "ds", state)
    _check_pair(net_dir, ws, state)
    _check_logs(net_dir, ws, state)
    return state


# ------------------------------------------------------------------------------------------------ kills


@dataclass
class Kill:
    """One SIGKILL: how it was aimed, when it landed, what the trainer was doing."""

    mode: str
    at_s: float = 0.0
    target: str = ""
    point: str = ""           # what was in progress (poll: the marker seen; hook: the operation about to run)
    killed: bool = True       # False: the run finished before the kill moment came


def _write_markers(net_dir: Path) -> str:
    """A checkpoint write in progress, as seen from outside ("" when none)."""
    try:
        tmp = [e.name for e in os.scandir(net_dir) if e.name.startswith(".") and ".tmp" in e.name]
    except FileNotFoundError:
        return ""
    if tmp:
        return f"tmp {tmp[0]}"
    ds = net_dir / "ds"
    try:
        tags = [e.name for e in os.scandir(ds) if e.is_dir()]
        latest = (ds / "latest").read_text().strip() if (ds / "latest").exists() else ""
    except (FileNotFoundError, NotADirectoryError):
        return ""
    ahead = [t for t in tags if _tag_step(t) > _tag_step(latest)]
    if ahead:
        return f"ds save {ahead[0]} (latest {latest or '-'})"
    if len(tags) > 1:
        return f"ds prune ({len(tags)} tags, latest {latest})"
    return ""


def kill_timed(run: Run, at_s: float) -> Kill:
    if run.wait(at_s) is not None:
        return Kill("timed", at_s, f"{at_s:.1f}s", killed=False)
    run.kill()
    return Kill("timed", time.monotonic() - run.started, f"{at_s:.1f}s")


def kill_poll(run: Run, net_dir: Path, nth: int, timeout: float) -> Kill:
    seen, before = 0, ""
    while run.process.poll() is None and time.monotonic() - run.started < timeout:
        marker = _write_markers(net_dir)
        if marker and not before:
            seen += 1
            if seen == nth:
                run.kill()
                return Kill("poll", time.monotonic() - run.started, f"write #{nth}", marker)
        before = marker
        time.sleep(0.0005)
    if run.process.poll() is None:
        run.kill()
        return Kill("poll", time.monotonic() - run.started, f"write #{nth}", "timeout")
    return Kill("poll", time.monotonic() - run.started, f"write #{nth}", killed=False)


def kill_hooked(run: Run, hook_log: Path, target: str, timeout: float) -> Kill:
    code = run.wait(timeout)
    if code is None:
        run.kill()
        return Kill("hook", time.monotonic() - run.started, target, "timeout")
    run.wait_group_gone()
    lines = hook_log.read_text().splitlines() if hook_log.exists() else []
    point = next((ln.split("\t", 2)[2] for ln in lines if ln.startswith("KILL\t")), "")
    return Kill("hook", time.monotonic() - run.started, target, _short(point), killed=bool(point))


def _short(op: str) -> str:
    """An operation with paths relative to the checkpoint folder."""
    return re.sub(r"\S*/ckpt\d*/", "", op)


def hook_spec(out: Path, log: Path, kill_at: int = 0, pattern: str | None = NOT_TB) -> dict:
    return {"root": str(out), "log": str(log), "kill_at": kill_at, "pattern": pattern}


# ------------------------------------------------------------------------------------------------ trials


@dataclass
class Trial:
    index: int
    mode: str
    kills: list[Kill] = field(default_factory=list)
    on_disk: str = ""
    pending_commit: bool = False
    disk_problems: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    expected_from: int | None = None     # the step ds/latest held before the final resume (None: from scratch)
    resumed_from: int | None = None
    resume_rc: int | None = None
    final_problems: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.disk_problems and not self.final_problems


def calibrate(ws: Workspace) -> DiskState:
    """One uninterrupted run with the hook counting: its wall time and operation list aim the kills, and its
    result must pass the same checks (a checker that fails a clean run proves nothing)."""
    out = ws.root / "calibration" / "ckpt"
    shutil.rmtree(out.parent, ignore_errors=True)
    log = out.parent / "hook.log"
    run = launch(ws, out, out.parent / "train.log", resume=False, hook=hook_spec(out, log))
    code = run.wait(900)
    ws.full_run_s = time.monotonic() - run.started
    if code != 0:
        raise SystemExit(f"calibration training failed (exit {code}):\n{run.output()[-3000:]}")
    ws.ops = [op for op in (ln.split("\t", 1)[1] for ln in log.read_text().splitlines() if not ln.startswith("KILL"))
              if re.search(NOT_TB, op)]
    state = inspect(ws, out)
    problems = state.problems + _final_problems(ws, state)
    if problems:
        raise SystemExit(f"an uninterrupted run already fails the checks: {problems}")
    return state


def _final_problems(ws: Workspace, state: DiskState) -> list[str]:
    s = ws.settings
    problems = []
    if state.latest != f"step{s.steps}":
        problems.append(f"finished with ds/latest={state.latest}, expected step{s.steps}")
    if not state.card:
        problems.append("finished without weights.pt/card.json")
    if sorted(state.val_rows) != s.val_steps:
        problems.append(f"metrics.csv validation rows {state.val_rows}, expected one per step {s.val_steps}")
    return problems


def _kill_once(ws: Workspace, trial_dir: Path, out: Path, mode: str, rng: random.Random, resume: bool,
               hook_target: tuple[int, str | None] | None = None) -> Kill:
    tag = f"{'resume' if resume else 'run'}-{mode}"
    timeout = _run_timeout(ws)
    if mode == "timed":  # a resumed run is shorter; runs vary on a shared machine: aim inside the typical lifetime
        span = (0.02, 0.6 if resume else 0.9)
        return kill_timed(launch(ws, out, trial_dir / f"{tag}.log", resume), rng.uniform(*span) * ws.full_run_s)
    if mode == "poll":
        run = launch(ws, out, trial_dir / f"{tag}.log", resume)
        return kill_poll(run, out / ws.settings.network, rng.randint(1, len(ws.settings.val_steps)), timeout)
    kill_at, pattern = hook_target or (rng.randint(1, max(1, len(ws.ops))), NOT_TB)
    hook_log = trial_dir / f"{tag}.hook.log"
    run = launch(ws, out, trial_dir / f"{tag}.log", resume, hook=hook_spec(out, hook_log, kill_at, pattern))
    target = f"op {kill_at}" + (f" of /{pattern}/" if pattern != NOT_TB else f"/{len(ws.ops)}")
    return kill_hooked(run, hook_log, target, timeout)


def run_trial(ws: Workspace, index: int, mode: str, rng: random.Random,
              hook_target: tuple[int, str | None] | None = None, double_kill: bool = False) -> Trial:
    """Kill a fresh training (and maybe its first resume), check the disk, resume to the end, check again."""
    t0 = time.monotonic()
    trial = Trial(index, mode)
    trial_dir = ws.root / f"trial{index:03d}"
    shutil.rmtree(trial_dir, ignore_errors=True)
    out = trial_dir / "ckpt"
    trial.kills.append(_kill_once(ws, trial_dir, out, mode, rng, resume=False, hook_target=hook_target))
    state = inspect(ws, out)
    trial.on_disk, trial.disk_problems, trial.temp_files = state.summary(), list(state.problems), state.temp_files
    trial.pending_commit = state.pending_commit
    if double_kill:
        trial.kills.append(_kill_once(ws, trial_dir, out, "timed", rng, resume=True))
        state = inspect(ws, out)
        trial.disk_problems += [f"after kill 2: {p}" for p in state.problems]
    trial.expected_from = state.latest_step
    run = launch(ws, out, trial_dir / "resume-final.log", resume=True)
    trial.resume_rc = run.wait(_run_timeout(ws))
    if trial.resume_rc is None:
        run.kill()
    text = run.output()
    found = RESUMED.findall(text)
    trial.resumed_from = int(found[-1]) if found else None
    if trial.resume_rc != 0:
        trial.final_problems.append(f"--resume exited {trial.resume_rc}: {text.strip().splitlines()[-1:]}")
    elif trial.resumed_from != trial.expected_from:
        trial.final_problems.append(f"--resume started from step {trial.resumed_from or 0}, the checkpoint on disk "
                                    f"was step {trial.expected_from or 0}")
    final = inspect(ws, out)
    trial.final_problems += final.problems + (_final_problems(ws, final) if trial.resume_rc == 0 else [])
    trial.wall_s = time.monotonic() - t0
    if trial.ok and not ws.settings.keep:
        shutil.rmtree(trial_dir, ignore_errors=True)
    return trial


# ------------------------------------------------------------------------------------------------ report


def summarize(ws: Workspace, trials: list[Trial]) -> dict:
    first = [t.kills[0] for t in trials]
    second = [k for t in trials for k in t.kills[1:]]
    return {
        "trials": len(trials),
        "passed": sum(t.ok for t in trials),
        "failed": [t.index for t in trials if not t.ok],
        "by_mode": {m: sum(t.mode == m for t in trials) for m in ws.settings.modes},
        "kills_landed": sum(k.killed for k in first),
        "kills_not_landed_run_finished_first": sum(not k.killed for k in first),
        "second_kills_of_a_resume": {"tried": len(second), "landed": sum(k.killed for k in second)},
        "killed_inside_a_write": sum(k.killed and k.mode in ("poll", "hook") and k.point not in ("", "timeout")
                                     for k in first),
        "card_pending_rolled_forward_by_resume": sum(t.pending_commit for t in trials),
        "resumed_from_the_last_saved_step": sum(t.expected_from is not None and t.resumed_from == t.expected_from
                                                for t in trials),
        "no_checkpoint_restarted_from_scratch": sum(t.expected_from is None and t.resumed_from is None for t in trials),
        "temp_files_after_kill": sum(len(t.temp_files) for t in trials),
        "calibration_run_s": round(ws.full_run_s, 1),
        "checkpoint_ops_per_run": len(ws.ops),
    }


def print_table(trials: list[Trial]) -> None:
    table = Table(title="kill -9 during training")
    for col in ("#", "mode", "kill at", "aimed", "in progress", "on disk after kill", "resumed", "result"):
        table.add_column(col, overflow="fold")
    for t in trials:
        k = t.kills[0]
        resumed = "scratch" if t.resumed_from is None else f"step {t.resumed_from}"
        extra = f" (+{len(t.kills) - 1} kill)" if len(t.kills) > 1 else ""
        result = "[green]ok[/]" if t.ok else "[red]" + "; ".join(t.disk_problems + t.final_problems) + "[/]"
        table.add_row(str(t.index), t.mode, f"{k.at_s:.2f}s" if k.killed else "finished", k.target,
                      k.point[:60], t.on_disk, resumed + extra, result)
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = Settings()
    ap.add_argument("--trials", type=int, default=d.trials, help="kill trials (default %(default)s)")
    ap.add_argument("--seed", type=int, default=d.seed, help="seed of the kill moments (default %(default)s)")
    ap.add_argument("--network", default=d.network, help="network to train (default %(default)s: the fastest)")
    ap.add_argument("--height", type=int, default=d.height, help="tiny dataset height (default %(default)s)")
    ap.add_argument("--width", type=int, default=d.width, help="tiny dataset width (default %(default)s)")
    ap.add_argument("--steps", type=int, default=d.steps, help="schedule length (default %(default)s)")
    ap.add_argument("--val-every", type=int, default=d.val_every,
                    help="validation + checkpoint period in steps (default %(default)s)")
    ap.add_argument("--modes", default=",".join(d.modes), help="kill modes used in turn (default %(default)s)")
    ap.add_argument("--double-kill", type=float, default=0.25,
                    help="fraction of trials whose first resume is killed too (default %(default)s)")
    ap.add_argument("--cpus", default=d.cpus,
                    help="taskset CPU list for training; 'auto' = the last CPU, 'all' = no pinning (default %(default)s)")
    ap.add_argument("--workdir", type=Path, help="work folder (default: a new temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep every trial folder (default: only failed ones)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report (default %(default)s)")
    args = ap.parse_args(argv)
    try:
        settings = Settings(trials=args.trials, seed=args.seed, network=args.network, height=args.height,
                            width=args.width, steps=args.steps, val_every=args.val_every,
                            modes=tuple(m.strip() for m in args.modes.split(",") if m.strip()),
                            double_kill=args.double_kill, cpus=args.cpus, workdir=args.workdir, keep=args.keep)
    except ValueError as exc:
        ap.error(str(exc))
    ws = prepare(settings)
    console.print(f"workdir {ws.root}; calibrating: one uninterrupted run of {settings.network} "
                  f"({settings.steps} steps, checkpoint every {settings.val_every})")
    calibrate(ws)
    console.print(f"uninterrupted run: {ws.full_run_s:.1f} s, {len(ws.ops)} filesystem changes under the checkpoint")
    rng = random.Random(settings.seed)
    trials: list[Trial] = []
    cols = (TextColumn("[bold]kill trials"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"))
    with Progress(*cols, console=console) as progress:
        task = progress.add_task("trials", total=settings.trials, info="")
        for i in range(settings.trials):
            mode = settings.modes[i % len(settings.modes)]
            trial = run_trial(ws, i, mode, rng, double_kill=rng.random() < settings.double_kill)
            trials.append(trial)
            progress.update(task, advance=1, info=f"last: {mode} {'ok' if trial.ok else 'FAILED'}; "
                                                   f"{sum(not t.ok for t in trials)} failed")
    print_table(trials)
    report = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
              "command": " ".join([ws.deepspeed, "--num_gpus 1 training/drape_train/train.py --config", str(ws.config),
                                   "--data", str(ws.data), "--out <trial>/ckpt --steps", str(settings.steps)]),
              "summary": summarize(ws, trials), "trials": [asdict(t) | {"ok": t.ok} for t in trials]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    console.print_json(json.dumps(report["summary"]))
    console.print(f"report: {args.out}")
    if not settings.keep and all(t.ok for t in trials) and settings.workdir is None:
        shutil.rmtree(ws.root, ignore_errors=True)
    return 0 if all(t.ok for t in trials) else 1


if __name__ == "__main__":
    sys.exit(main())
