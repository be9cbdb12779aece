"""What a training run leaves on disk, written so a kill at any moment leaves the last good files.

``weights.pt`` + ``card.json`` (the model card, ``drape_core.card``) renamed in as a pair, ``metrics.csv``,
``curves.png`` and the pruning of older DeepSpeed tags; ``train.py`` calls these from its loop, and --resume uses
``recover_best`` / ``truncate_csv`` to pick up where a kill left the files.
"""
from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import torch

from drape_core.card import FORMAT_VERSION, MAX_BATCH_SIZE, ModelCard, TensorSpec
from drape_train.config import TrainConfig
from drape_train.families import family
from drape_train.objectives import Objective


def atomic_write(path: Path, write) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    write(tmp)
    os.replace(tmp, path)


def tensor_specs(objective: Objective, batch: dict) -> tuple[list[TensorSpec], list[TensorSpec]]:
    net = objective.net
    net.eval()
    with torch.no_grad():
        device = next(net.parameters()).device
        ins = objective.inputs({k: v.to(device, non_blocking=True) for k, v in batch.items()})
        outs = net(*ins)
    net.train()
    outs = outs if isinstance(outs, tuple) else (outs,)

    def spec(names, tensors):
        return [TensorSpec(name=n, dtype="float32", shape=tuple(t.shape[1:])) for n, t in zip(names, tensors)]

    return spec(net.input_names, ins), spec(net.output_names, outs)


def make_card(cfg: TrainConfig, specs, metrics: dict, train_info: dict) -> ModelCard:
    labels = family(cfg.network).card_labels()
    return ModelCard(
        name=cfg.network, family=cfg.network, format_version=FORMAT_VERSION,
        resolution={"height": cfg.data.height, "width": cfg.data.width},
        inputs=specs[0], outputs=specs[1], max_batch_size=MAX_BATCH_SIZE,
        normalization="RGB float32 in [0,1], NCHW; logits are pre-sigmoid/pre-softmax",
        labels=labels, metrics=metrics, train=train_info,
        config=cfg.model_dump(),
    )


def save_best(out: Path, state: dict, card: ModelCard) -> None:
    """Write weights.pt and card.json as one pair: both temp files are complete before the first rename, so a kill
    leaves the old pair, the new pair, or the new weights with their card still in its temp file, which
    recover_best() renames in on --resume. (Renaming each file as soon as it is written left new weights under an
    old card for the length of a forward pass.)"""
    pid = os.getpid()
    weights_tmp, card_tmp = out / f".weights.pt.tmp{pid}", out / f".card.json.tmp{pid}"
    torch.save(state, weights_tmp)
    card_tmp.write_text(card.to_json())
    os.replace(weights_tmp, out / "weights.pt")
    os.replace(card_tmp, out / "card.json")


def recover_best(out: Path) -> None:
    """Finish a save_best() a kill interrupted between its renames (the card's temp file is complete and its weights
    temp file is gone), then drop every other temp file: those writes never finished."""
    for card_tmp in out.glob(".card.json.tmp*"):
        pid = card_tmp.name.removeprefix(".card.json.tmp")
        if (out / "weights.pt").exists() and not (out / f".weights.pt.tmp{pid}").exists():
            os.replace(card_tmp, out / "card.json")
    for tmp in (*out.glob(".*.tmp*"), *(out / "ds").glob(".*.tmp*")):
        tmp.unlink(missing_ok=True)


def plot_curves(csv_path: Path, png: Path, metric: str) -> None:
    """Training loss and the selection metric against step, one PNG per network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(csv.DictReader(csv_path.open())) if csv_path.exists() else []
    train = [(int(r["step"]), float(r["loss"])) for r in rows if r.get("loss")]
    val = [(int(r["step"]), float(r[f"val_{metric}"])) for r in rows if r.get(f"val_{metric}")]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    if train:
        a.plot(*zip(*train))
    a.set(title=f"{csv_path.parent.name}: training loss", xlabel="step", yscale="log")
    if val:
        b.plot(*zip(*val), marker="o")
    b.set(title=f"validation {metric}", xlabel="step")
    fig.tight_layout()
    atomic_write(png, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)


def prune_checkpoints(ds_dir: Path, keep: str) -> None:
    """Drop older DeepSpeed tags once `keep` is complete (DeepSpeed wrote `latest` after the files)."""
    if (ds_dir / "latest").exists() and (ds_dir / "latest").read_text().strip() == keep:
        for d in ds_dir.iterdir():
            if d.is_dir() and d.name != keep:
                shutil.rmtree(d, ignore_errors=True)


def truncate_csv(path: Path, step: int) -> None:
    """Drop the rows past the step --resume continues from: the resumed run logs those steps again."""
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    if any(int(r["step"]) > step for r in rows):
        write_csv(path, [r for r in rows if int(r["step"]) <= step])


def append_csv(path: Path, rows: list[dict]) -> None:
    """Rewrite the CSV with the union of columns (validation rows add columns the training rows lack)."""
    old = list(csv.DictReader(path.open())) if path.exists() else []
    write_csv(path, old + rows)


def write_csv(path: Path, rows: list[dict]) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))

    def write(p):
        with p.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rows)

    atomic_write(path, write)
