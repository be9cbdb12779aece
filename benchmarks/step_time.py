"""Training step time per family, float32 against bfloat16 / float16 autocast and ZeRO stages, side by side.

    python benchmarks/step_time.py --steps 300                    # the five families, this machine
    python benchmarks/step_time.py --steps 40 --families recolor gmm --out build/bench/step_time_cpu

Each setting trains every family with the real launcher and train.py (`deepspeed --num_gpus RANKS`), from the
shipped configs with only the precision and ZeRO stage changed, validation once at the end. A setting is one
launcher run that trains the families one after another in one process (tom on the gmm that run trained, as the
default schedule does). The time per step is train.py's own `s_per_step` (metrics.csv, every 10 steps: training
steps only, validation and checkpoints excluded); the first row (start-up, allocator and kernel warm-up) is
dropped and the median of the rest is reported, with items per second (batch x ranks / s), each setting's
ratio to the first one, and the validation metric the run reached (a short run's, for a precision that
trains as well as float32 does, not a quality number). Settings are `precision:zero stage` pairs; precision is
`fp32`, `bf16` (DeepSpeed's torch_autocast in bfloat16, what `"auto"` turns on on a GPU that has it) or `fp16`
(torch_autocast in float16 with DeepSpeed's dynamic loss scale, what `"auto"` turns on on older GPUs; ZeRO 0 only,
see train.resolve_autocast).

On the GPU machine this is the issue's "a few hundred steps with bf16 and ZeRO-2, step time vs CPU": run it there
and here with the same --steps and compare the fp32 rows. Writes `<out>/step_time.json` and `<out>/step_time.png`.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

from drape_core.card import read_card
from drape_serving.server import free_port
from drape_train.train import resolve_autocast

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("garment_seg", "human_parsing", "gmm", "tom", "recolor")   # tom after the gmm it trains on
AUTOCAST = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}      # --settings precision -> torch_autocast dtype


def torch_autocast(precision: str) -> dict:
    """The ds_config torch_autocast block a --settings precision trains with (fp32: off)."""
    return {"enabled": AUTOCAST[precision] is not None, "dtype": AUTOCAST[precision] or "bfloat16"}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES,
                    help="networks to time (default: all five)")
    ap.add_argument("--settings", nargs="+", default=["fp32:0", "bf16:2"], metavar="PRECISION:ZERO",
                    help="precision (fp32 | bf16 | fp16) and ZeRO stage (0-2; fp16: 0) per setting; ratios are "
                         "to the first (default: %(default)s)")
    ap.add_argument("--steps", type=int, default=300, help="training steps per family and setting (default: 300)")
    ap.add_argument("--ranks", type=int, default=1, help="data-parallel ranks (GPUs; CPU processes here)")
    ap.add_argument("--data", default="data/synth", help="dataset root (default: %(default)s, `make data`)")
    ap.add_argument("--out", default="build/bench/step_time", help="work and result folder (default: %(default)s)")
    args = ap.parse_args(argv)
    for s in args.settings:
        precision, _, zero = s.partition(":")
        if precision not in AUTOCAST or zero not in ("0", "1", "2"):
            ap.error(f"--settings {s!r}: want fp32, bf16 or fp16, a colon and a ZeRO stage 0-2 (e.g. bf16:2)")
        try:   # train.py's own rule for which precision runs with which ZeRO stage (float16: stage 0 only)
            resolve_autocast(torch_autocast(precision), int(zero), f"--settings {s}")
        except SystemExit as e:
            ap.error(str(e))
    if args.steps < 20:
        ap.error(f"--steps {args.steps}: at least 20 (a time is logged every 10 steps and the first is dropped)")
    if not (Path(args.data) / "dataset.json").is_file():
        ap.error(f"--data {args.data}: no dataset.json there (make data, or python -m drape_train.data generate)")
    return args


def write_configs(folder: Path, families, setting: str, steps: int) -> list[Path]:
    """The shipped YAML + ds_config of each family with this setting's precision and ZeRO stage."""
    precision, _, zero = setting.partition(":")
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in families:
        cfg = yaml.safe_load((ROOT / f"training/configs/{name}.yaml").read_text())
        ds = json.loads((ROOT / "training/configs" / cfg["deepspeed"]).read_text())
        ds["torch_autocast"] = torch_autocast(precision)
        ds["zero_optimization"]["stage"] = int(zero)
        cfg["deepspeed"] = f"{name}.ds.json"
        cfg.setdefault("schedule", {}).update(val_every=steps, early_stop_patience=0)
        if name == "tom" and "gmm" not in families:
            cfg.setdefault("data", {})["warps"] = "exact"   # no gmm trained in this run to warp with
        (folder / f"{name}.ds.json").write_text(json.dumps(ds, indent=1))
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        paths.append(folder / f"{name}.yaml")
    return paths


def run_setting(folder: Path, configs: list[Path], args) -> None:
    cmd = [str(Path(sys.executable).parent / "deepspeed"), "--num_gpus", str(args.ranks), "--master_port",
           str(free_port()), str(ROOT / "training/drape_train/train.py"), "--config", *map(str, configs),
           "--data", args.data, "--out", str(folder / "ckpt"), "--steps", str(args.steps)]
    log = folder / "train.log"
    with log.open("w") as f:
        done = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if done.returncode:
        tail = log.read_text().splitlines()[-15:]
        raise SystemExit(f"{folder.name}: training failed (exit {done.returncode}); {log}:\n" + "\n".join(tail))


def step_times(net_dir: Path) -> tuple[list[float], int | None]:
    """train.py's seconds per step, every 10 steps, and (float16) how many steps the loss scale skipped."""
    rows = list(csv.DictReader((net_dir / "metrics.csv").open()))
    skipped = [int(r["skipped_steps"]) for r in rows if r.get("skipped_steps")]
    return [float(r["s_per_step"]) for r in rows if r.get("s_per_step")], sum(skipped) if skipped else None


def main(argv=None) -> None:
    args = parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 140)
    out = Path(args.out)
    results = []
    for setting in args.settings:
        folder = out / setting.replace(":", "_zero")
        configs = write_configs(folder, args.families, setting, args.steps)
        console.print(f"[bold]{setting}[/]: training {', '.join(args.families)} for {args.steps} steps each "
                      f"({folder / 'train.log'})")
        t0 = time.time()
        run_setting(folder, configs, args)
        for name in args.families:
            card = read_card(folder / "ckpt" / name)
            times, skipped = step_times(folder / "ckpt" / name)
            times = times[1:]
            batch = card.config["schedule"]["batch_size"]
            results.append({"family": name, "setting": setting, "precision": card.train["precision"],
                            "zero": card.train["deepspeed"]["zero_optimization"]["stage"],
                            "device": card.train["device"], "s_per_step": statistics.median(times),
                            "items_per_s": batch * args.ranks / statistics.median(times), "rows": len(times),
                            "batch_per_rank": batch, "metric": card.config["metric"],
                            "val": card.metrics[card.config["metric"]], "skipped_steps": skipped})
        console.print(f"  {time.time() - t0:.0f} s")
    first = {r["family"]: r["s_per_step"] for r in results if r["setting"] == args.settings[0]}
    table = Table(title=f"s per training step, median of {results[0]['rows']} x 10-step windows "
                        f"({args.ranks} rank(s), {results[0]['device']})")
    for col in ("family", "setting", "precision", "ms/step", "items/s", f"vs {args.settings[0]}",
                f"val metric at step {args.steps}", "skipped (fp16)"):
        table.add_column(col, justify="left" if col in ("family", "setting", "precision") else "right")
    for r in results:
        r["ratio"] = r["s_per_step"] / first[r["family"]]
        table.add_row(r["family"], r["setting"], r["precision"], f"{1000 * r['s_per_step']:.1f}",
                      f"{r['items_per_s']:.1f}", f"{r['ratio']:.2f}x", f"{r['metric']} {r['val']:.4f}",
                      "-" if r["skipped_steps"] is None else str(r["skipped_steps"]))
    console.print(table)
    meta = {"steps": args.steps, "ranks": args.ranks, "settings": args.settings, "data": args.data,
            "host": platform.node(), "cpus": os.cpu_count(), "command": " ".join(sys.argv)}
    (out / "step_time.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    plot(results, args.settings, out / "step_time.png")
    console.print(f"-> {out / 'step_time.json'}, {out / 'step_time.png'}")


def plot(results: list[dict], settings: list[str], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(r["family"] for r in results))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(settings)
    for i, setting in enumerate(settings):
        ms = [1000 * next(r["s_per_step"] for r in results if r["family"] == f and r["setting"] == setting)
              for f in families]
        ax.bar([j + i * width for j in range(len(families))], ms, width, label=setting)
    ax.set_xticks([j + width * (len(settings) - 1) / 2 for j in range(len(families))], families)
    ax.set(ylabel="ms per training step", title=f"training step time ({results[0]['device']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
