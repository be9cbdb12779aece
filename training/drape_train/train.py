"""Train one or more networks with DeepSpeed. Run under the launcher:

    deepspeed --num_gpus 1 training/drape_train/train.py --config training/configs/gmm.yaml [--quick]

Several --config files train one after another in the same process (what the quick pipeline does, to pay the
launcher's start-up once). Each network writes to <out>/<network>/:
    ds/            DeepSpeed checkpoint (engine + optimizer + scheduler + step) for --resume
    weights.pt     the best validation weights of the bare network (what export reads)
    card.json      model card: resolution, tensor names/shapes, normalisation, labels, metrics, schedule
    metrics.csv    training losses and validation metrics per step
All files are written atomically (temp file + rename), so a kill at any moment leaves the last good ones:
weights.pt and card.json are renamed in as a pair (--resume completes a pair a kill interrupted), metrics.csv is
written before the DeepSpeed checkpoint (--resume drops rows past it), ds/latest is renamed in once its tag is
complete. tests/reliability/kill_training.py kills runs at random moments to prove it.

--resume continues exactly where the checkpoint was written: weights, optimizer, LR schedule, best-so-far, the
float16 loss scale (DeepSpeed's checkpoint leaves it out), and the data stream (the shuffled order is a function of
seed and epoch, and every epoch is the same number of steps, so the step says how far into which epoch it was), so
an interrupted run ends with the weights an uninterrupted one would have. --until STEP stops a run after the
checkpoint at STEP (a time-limited slot: a preemptible node, a job with a deadline); --resume goes on.

Several ranks (`deepspeed --num_gpus N`, or a hostfile): data parallel. batch_size is per rank; validation scores
each rank's share and every rank summarises the whole split; rank 0's buffers (BatchNorm statistics, what a
checkpoint holds) go to every rank before each validation; the GAN discriminator's gradients are averaged.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from torch.utils.tensorboard import SummaryWriter

from drape_train.config import TrainConfig, load_config
from drape_train.datasets import NetworkDataset
from drape_train.objectives import Objective, load_objective
from drape_train.outputs import (append_csv, atomic_write, make_card, plot_curves, prune_checkpoints, recover_best,
                                 save_best, tensor_specs, truncate_csv)

console = Console()


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", required=True, help="network YAML config(s), trained in order")
    ap.add_argument("--quick", action="store_true", help="use each config's quick_steps (the `make serve` schedule)")
    ap.add_argument("--steps", type=int, help="override the number of optimizer steps")
    ap.add_argument("--data", help="dataset root (VITON-HD layout); default: the config's data.root")
    ap.add_argument("--height", type=int, help="override the config's data.height (must match the dataset)")
    ap.add_argument("--width", type=int, help="override the config's data.width (must match the dataset)")
    ap.add_argument("--out", default="build/checkpoints", help="checkpoint root (default: %(default)s)")
    ap.add_argument("--resume", action="store_true", help="continue from <out>/<network>/ds if present")
    ap.add_argument("--until", type=int, metavar="STEP", help="stop after writing the checkpoint at STEP of the "
                    "schedule (--steps / the config's steps stay the schedule's length); --resume continues")
    ap.add_argument("--seed", type=int, help="override the config's schedule.seed (weights, data order)")
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: every core; on a loaded machine "
                    "fewer threads than cores avoids OpenMP stalls)")
    ap.add_argument("--local_rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)),
                    help="set by the deepspeed launcher")
    return ap.parse_args(argv)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_ds_config(ds: dict, cfg: TrainConfig, steps: int) -> tuple[dict, list[str]]:
    """Fill the run-dependent parts of a ds_config: batch, lr, schedule length, and torch_autocast's "auto"s
    (`resolve_autocast`). DeepSpeed's bf16 / fp16 modes are refused with the reason.

    The YAML's `schedule` is the one place for batch, lr and warmup: where the ds_config says otherwise, the YAML
    wins and the second return value says so (a user who edits only the JSON would otherwise replay the default),
    as it says why "auto" left mixed precision off where a GPU could have had it."""
    ds = json.loads(json.dumps(ds))
    notes = []

    def put(where: dict, key: str, value, name: str) -> None:
        if key in where and where[key] != value:
            notes.append(f"ds_config {name}={where[key]} is overridden by the YAML's schedule: {value} "
                         "(set schedule.* in the YAML instead)")
        where[key] = value

    put(ds, "train_micro_batch_size_per_gpu", cfg.schedule.batch_size, "train_micro_batch_size_per_gpu")
    put(ds["optimizer"]["params"], "lr", cfg.schedule.lr, "optimizer.params.lr")
    sched = ds.get("scheduler", {}).get("params", {})
    if "total_num_steps" in sched:
        sched["total_num_steps"] = steps
        sched["warmup_num_steps"] = min(cfg.schedule.warmup_steps, max(1, steps // 5))
    for key in ("bf16", "fp16"):
        if ds.get(key, {}).get("enabled", False) is not False:
            raise SystemExit(
                f"{cfg.network}: ds_config {key}.enabled is {ds[key]['enabled']!r}: DeepSpeed's {key} mode casts the "
                f"whole module to {key} (the float32 batches, the TPS basis, BatchNorm statistics, the GAN "
                f"discriminator under its own AdamW, weights.pt for export); mixed precision here is "
                f'"torch_autocast": {{"enabled": "auto", "dtype": "auto"}} with "{key}": {{"enabled": false}}')
    if "torch_autocast" in ds:
        ds["torch_autocast"], note = resolve_autocast(ds["torch_autocast"], ds.get("zero_optimization", {})
                                                      .get("stage", 0), cfg.network)
        notes += [note] if note else []
    return ds, notes


DTYPES = {"bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16", "fp16": "float16", "half": "float16"}


def resolve_autocast(amp: dict, zero_stage: int, network: str) -> tuple[dict, str | None]:
    """torch_autocast {"enabled": true | false | "auto", "dtype": "bfloat16" | "float16" | "auto"} as this machine
    runs it, and a note where "auto" left it off on a GPU.

    dtype "auto" is bfloat16 where the GPU has it (Ampere and later) and float16 on older GPUs (V100, T4), where
    DeepSpeed scales the loss dynamically (a torch GradScaler: overflowing steps are skipped and the scale backs
    off). enabled "auto" is on on a GPU that has the dtype, off on CPUs. float16 needs ZeRO stage 0: under ZeRO 1
    and 2 DeepSpeed (0.19.8, measured) clips the still-scaled gradient norm and then unscales again, so every
    clipped step is 65536 times too small, and a step that overflows is skipped without the scale ever backing off;
    "auto" falls back to float32 there and an explicit float16 is refused."""
    amp = dict(amp)
    cuda = torch.cuda.is_available()
    bf16 = cuda and torch.cuda.is_bf16_supported()
    dtype = amp.get("dtype", "bfloat16")
    if dtype == "auto":
        dtype = "float16" if cuda and not bf16 else "bfloat16"
    if dtype not in DTYPES:
        raise SystemExit(f"{network}: ds_config torch_autocast.dtype {amp['dtype']!r}: want auto, bfloat16 or float16")
    amp["dtype"] = DTYPES[dtype]
    fp16_zero = amp["dtype"] == "float16" and zero_stage > 0
    note = None
    if amp.get("enabled") == "auto":
        amp["enabled"] = cuda and (bf16 or amp["dtype"] == "float16") and not fp16_zero
        if fp16_zero and cuda:
            note = (f"torch_autocast auto: float32, not float16, with ZeRO stage {zero_stage} (DeepSpeed clips the "
                    "loss-scaled gradients and never backs the scale off there); ZeRO 0 trains in float16")
    elif amp.get("enabled") is True and fp16_zero:
        import deepspeed

        raise SystemExit(
            f"{network}: ds_config torch_autocast float16 with ZeRO stage {zero_stage}: DeepSpeed "
            f"{deepspeed.__version__} clips the loss-scaled gradient norm (every clipped step is the scale, 65536, "
            "times too small) and skips overflowing steps without backing the scale off; use ZeRO stage 0 for "
            "float16, or bfloat16 / float32 with ZeRO")
    return amp, note


def precision_name(autocast_dtype: torch.dtype | None) -> str:
    """How cards and logs name a precision: "bfloat16 autocast", or "float32" without autocast."""
    return f"{str(autocast_dtype).removeprefix('torch.')} autocast" if autocast_dtype else "float32"


def init_distributed() -> None:
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() == "cpu":
        # DeepSpeed's shared-memory comm op serves only its inference all-reduce; training's collectives (gradient
        # all-reduce, ZeRO's reduce-scatter / all-gather, barriers) go through torch.distributed's gloo on any
        # number of CPU ranks. Skipping it saves JIT-compiling it (~80 s cold).
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed()


def finish() -> None:
    """End a rank whose work is done, without the interpreter's teardown.

    A gloo worker thread can still be releasing a finished collective (DeepSpeed's last all-reduce, whose handle
    nobody kept) when the main thread reaches Python's finalization; freeing the tensors needs the GIL, the
    finalizing interpreter ends that thread inside a C++ destructor, and the rank dies with SIGABRT ("terminate
    called without an active exception") after its checkpoint is written, so the launcher reports a failed run.
    destroy_process_group() does not prevent it while DeepSpeed holds its groups (their threads live on), so this
    destroys the groups (NCCL's communicators are released properly), flushes, and leaves with os._exit. Measured and
    re-checked by tests/test_training.py::test_a_finished_rank_exits_0_where_teardown_aborts."""
    import logging

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) outside a process group."""
    dist = torch.distributed
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


class EpochOrder(DistributedSampler):
    """DistributedSampler's order, on one rank too: each epoch's permutation is a function of (seed, epoch) alone,
    not of how many epochs this process has drawn, and ``skip`` starts the next epoch that many items in. That is
    what lets --resume hand out the batches an uninterrupted run would have."""

    def __init__(self, ds, seed: int):
        rank, size = world()
        super().__init__(ds, num_replicas=size, rank=rank, shuffle=True, seed=seed)
        self.skip = 0

    def __iter__(self):
        order = list(super().__iter__())[self.skip:]
        self.skip = 0   # one epoch only: the next starts at its beginning
        return iter(order)

    def __len__(self) -> int:
        return max(0, super().__len__() - self.skip)


class Share(Sampler):
    """This rank's share of an evaluation split, in order: items rank, rank + N, ... of N ranks, each item on one
    rank exactly once (DistributedSampler pads a split to a multiple of N with repeats, which would count twice)."""

    def __init__(self, n_items: int, rank: int, size: int):
        self.items = range(rank, n_items, size)

    def __iter__(self):
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


def loader(ds, cfg: TrainConfig, shuffle: bool, seed: int) -> DataLoader:
    """Training (shuffle): full batches in EpochOrder. Validation: this rank's Share, the last batch as it falls."""
    order = EpochOrder(ds, seed) if shuffle else Share(len(ds), *world())
    return DataLoader(ds, batch_size=cfg.schedule.batch_size, sampler=order, drop_last=shuffle, num_workers=0)


def average_gradients(params) -> None:
    """Mean the gradients of a module trained outside the DeepSpeed engine (the GAN discriminator) over the ranks,
    as the engine does for its own. Without it each rank's discriminator drifts apart on its own batches, and a
    checkpoint (rank 0's) resumes every rank into rank 0's."""
    _, size = world()
    grads = [p.grad for p in params if p.grad is not None]
    if size == 1 or not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])
    torch.distributed.all_reduce(flat)
    flat /= size
    for g, v in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(v.view_as(g))


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


PERCENTILES = (50, 90, 95, 99)


def broadcast_buffers(module: torch.nn.Module) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics). DeepSpeed syncs gradients, not buffers, so
    each rank's running statistics follow its own batches; rank 0's are the ones a checkpoint holds and a --resume
    hands to every rank. Done before each validation: the ranks score their shares with the weights the card and
    the checkpoint describe, and an interrupted run continues from the state the uninterrupted one had."""
    if world()[1] > 1:
        for b in module.buffers():
            torch.distributed.broadcast(b, src=0)


def validate(objective: Objective, val_loader: DataLoader, device) -> dict[str, float]:
    """Mean of per-sample metrics over the split; `px_*` entries are per-pixel pools summarised by percentiles.
    Each rank scores its Share and every rank summarises the union, so all ranks hold the same numbers: the best
    step, the card and early stopping are one decision, not one per rank."""
    was_training = objective.training
    objective.eval()
    pools: dict[str, list] = {}
    for b in val_loader:
        for k, v in objective.metrics(to_device(b, device)).items():
            pools.setdefault(k, []).append(v.float().flatten().cpu())
    objective.train(was_training)
    pools = {k: torch.cat(v) for k, v in pools.items()}
    if (size := world()[1]) > 1:
        shares = [None] * size
        torch.distributed.all_gather_object(shares, pools)    # a split smaller than the world leaves shares empty
        pools = {k: torch.cat([share[k] for share in shares if k in share])
                 for k in dict.fromkeys(k for share in shares for k in share)}
    out = {}
    for k, v in pools.items():
        if k.startswith("px_"):
            name = k[3:]
            out[f"{name}_mean"] = float(v.mean())
            # numpy: every pixel of the split (torch.quantile stops at 2^24 values, and a prefix would depend on
            # the order the shares arrive in)
            for q, val in zip(PERCENTILES, np.percentile(v.numpy(), PERCENTILES)):
                out[f"{name}_p{q}" if q != 50 else f"{name}_median"] = float(val)
        else:
            out[k] = float(torch.nanmean(v))
    return out


def configure(config_path: str, args) -> tuple[TrainConfig, dict, int, Path]:
    """The config with the command line's overrides, its DeepSpeed config, the schedule's length and the output
    folder (emptied unless --resume); a dataset at another resolution than the config's is refused here."""
    cfg, ds_cfg = load_config(config_path)
    if args.data:
        cfg.data.root = args.data
    if args.height:
        cfg.data.height = args.height
    if args.width:
        cfg.data.width = args.width
    if args.seed is not None:
        cfg.schedule.seed = args.seed
    info_path = Path(cfg.data.root) / "dataset.json"
    if info_path.is_file():  # the networks (GMM, recolor) are built for one resolution: refuse a mismatch early
        info = json.loads(info_path.read_text())
        if (info.get("height"), info.get("width")) != (cfg.data.height, cfg.data.width):
            raise SystemExit(f"{cfg.network}: dataset {cfg.data.root} is {info.get('height')}x{info.get('width')} "
                             f"but the config trains at {cfg.data.height}x{cfg.data.width}; pass --height/--width")
    steps = args.steps or (cfg.schedule.quick_steps if args.quick else cfg.schedule.steps)
    out = Path(args.out) / cfg.network
    out.mkdir(parents=True, exist_ok=True)
    if not args.resume:
        for stale in (out / "metrics.csv", out / "weights.pt", out / "card.json", *out.glob(".*.tmp*")):
            stale.unlink(missing_ok=True)
        shutil.rmtree(out / "ds", ignore_errors=True)
    return cfg, ds_cfg, steps, out


def discriminator_step(objective: Objective, d_opt) -> torch.Tensor:
    """One step of the optional PatchGAN discriminator on the generator batch just taken."""
    d_opt.zero_grad(set_to_none=True)     # drop the generator pass's gradients on D
    d_loss = objective.discriminator_loss()
    d_loss.backward()
    average_gradients(objective.disc.parameters())
    d_opt.step()
    # DeepSpeed clips by the norm over every module parameter, D's included: gradients left on D would enter the
    # generator's next clipping norm (and a resumed run, which starts without them, would take a different step
    # than the run it continues)
    d_opt.zero_grad(set_to_none=True)
    return d_loss.detach()


def train_info(cfg: TrainConfig, args, steps: int, step: int, val_items: int, wall_s: float, objective: Objective,
               ds_cfg: dict, device) -> dict:
    """The card's "train" section: what ran, and what a bit-for-bit rerun needs."""
    import deepspeed

    return {
        "steps": steps, "best_step": step, "seed": cfg.schedule.seed, "quick": args.quick,
        "val_items": val_items,
        "dataset": cfg.data.root, "wall_s": round(wall_s, 1),
        # what the network's forward ran under (the objective saw it), not what was asked
        "precision": precision_name(objective._amp),
        "deepspeed": ds_cfg, "device": str(device),
        # what a bit-for-bit rerun needs besides seed, config and data: on a CPU the float
        # reductions' order follows the thread count
        "threads": torch.get_num_threads(),
        "versions": {"torch": torch.__version__, "deepspeed": deepspeed.__version__},
    }


def resume(engine, out: Path, d_opt, scaler, args, cfg: TrainConfig) -> tuple[int, dict | None, int, float, int]:
    """(step, best, since_best, seconds trained before, skipped steps) where --resume continues; zeros without it.
    Finishes a weights + card pair a kill interrupted, and restores the discriminator and the loss scale."""
    step, best, since_best, before, skipped = 0, None, 0, 0.0, 0
    if args.resume and engine.global_rank == 0:
        recover_best(out)
    if args.resume and (out / "ds").exists():
        _, client = engine.load_checkpoint(str(out / "ds"))
        if client:
            step, best, since_best = client["step"], client["best"], client["since_best"]
            before = client.get("elapsed_s", 0.0)   # checkpoints from before elapsed_s was recorded carry none
            if d_opt is not None and "d_opt" in client:
                d_opt.load_state_dict(client["d_opt"])
            if scaler is not None and "amp_scaler" in client:   # the scale and its growth count, not 65536 again
                scaler.load_state_dict(client["amp_scaler"])
                skipped = client["skipped"]
            console.print(f"[bold]{cfg.network}[/]: resumed at step {step} ({before:.0f} s trained before)")
    return step, best, since_best, before, skipped


def save_checkpoint(engine, out: Path, rank0: bool, client_state: dict) -> None:
    """The DeepSpeed checkpoint of this step (--resume's), ``latest`` renamed in once complete, older tags pruned."""
    step = client_state["step"]
    engine.save_checkpoint(str(out / "ds"), tag=f"step{step}", client_state=client_state, save_latest=False)
    if rank0:  # DeepSpeed writes `latest` in place; a kill can leave it empty and --resume then fails
        atomic_write(out / "ds" / "latest", lambda p: p.write_text(f"step{step}"))
        prune_checkpoints(out / "ds", keep=f"step{step}")


def train_one(config_path: str, args) -> dict:
    import deepspeed

    cfg, ds_cfg, steps, out = configure(config_path, args)
    seed_everything(cfg.schedule.seed)

    train_ds = NetworkDataset(cfg.data.root, "train", cfg.network, seed=cfg.schedule.seed, pairs=cfg.data.pairs,
                              magnitude=cfg.data.magnitude)
    # gmm validates on the pairs it trains on: with "mixed", half the val items are another garment's still on
    # the person (what try-on serves), so the best checkpoint is not picked by the paired score alone
    val_ds = NetworkDataset(cfg.data.root, "val", cfg.network, seed=cfg.schedule.seed + 1, pairs=cfg.data.pairs,
                            magnitude=cfg.data.magnitude)
    objective = Objective(cfg)
    objective.family.train_setup(objective, cfg, Path(args.out), load_objective, console)   # TOM: the GMM's warps
    ds_cfg, notes = resolve_ds_config(ds_cfg, cfg, steps)
    for line in notes:
        console.print(f"[yellow]{cfg.network}[/]: {line}")
    engine, _, _, _ = deepspeed.initialize(model=objective, model_parameters=objective.generator_parameters(),
                                           config=ds_cfg)
    precision = precision_name(engine.torch_autocast_dtype() if engine.torch_autocast_enabled() else None)
    console.print(f"[bold]{cfg.network}[/]: {precision} on {engine.device}"
                  + (" (the network; weights, optimizer, losses and validation in float32)" if precision != "float32"
                     else ""))
    # float16 autocast (ZeRO 0): DeepSpeed's dynamic loss scale, a torch GradScaler it neither logs nor checkpoints
    scaler = getattr(engine, "torch_autocast_z0_gradscaler", None)
    d_opt = None
    if objective.disc is not None:   # the optional PatchGAN discriminator trains beside the engine, plain AdamW
        d_opt = torch.optim.AdamW(objective.disc.parameters(), lr=cfg.loss.gan_lr, betas=(0.5, 0.999))

    # before: seconds trained before a --resume; skipped (float16): steps since the last log row whose gradients
    # overflowed (not taken; the scale backs off)
    step, best, since_best, before, skipped = resume(engine, out, d_opt, scaler, args, cfg)
    if args.until is not None and args.until <= step:
        raise SystemExit(f"{cfg.network}: --until {args.until} is not past step {step}, where this run starts")
    rank0 = engine.global_rank == 0
    if args.resume and rank0:
        truncate_csv(out / "metrics.csv", step)
    train_loader = loader(train_ds, cfg, True, cfg.schedule.seed)
    if len(train_loader) == 0:
        raise SystemExit(f"{cfg.network}: {len(train_ds)} training items make no full batch of "
                         f"{cfg.schedule.batch_size}")
    val_loader = loader(val_ds, cfg, False, cfg.schedule.seed)
    log_rows: list[dict] = []
    tb = SummaryWriter(str(out / "tb")) if rank0 else None
    sign = 1 if cfg.metric_mode == "max" else -1
    t0 = time.time() - before   # wall times count the whole run: up to the checkpoint resumed from, then this one
    val_every = min(cfg.schedule.val_every, steps)

    def batches(epoch: int, taken: int):
        while True:
            train_ds.epoch = epoch
            train_loader.sampler.set_epoch(epoch)
            train_loader.sampler.skip = taken * cfg.schedule.batch_size
            yield from train_loader
            epoch, taken = epoch + 1, 0

    it = batches(*divmod(step, len(train_loader)))   # every epoch is len(train_loader) steps: the step says where
    cols = (TextColumn(f"[bold]{cfg.network:<14}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*cols, console=console, disable=not rank0, transient=False) as progress:
        task = progress.add_task("train", total=steps, completed=step, info="")
        tick, tick_step = time.time(), step   # s_per_step: training steps only (validation and saving restart it)
        while step < steps:
            batch = to_device(next(it), engine.device)
            loss, logs = engine(batch)
            engine.backward(loss)
            scale = scaler.get_scale() if scaler is not None else None
            engine.step()
            if scaler is not None and scaler.get_scale() < scale:
                skipped += 1
            if d_opt is not None:
                logs["d_loss"] = discriminator_step(objective, d_opt)
            step += 1
            if step % 10 == 0 or step == steps:
                row = {"step": step, "loss": float(loss.detach()), "lr": engine.get_lr()[0],
                       **{k: float(v.detach()) for k, v in logs.items()}}
                row["s_per_step"], tick, tick_step = (time.time() - tick) / (step - tick_step), time.time(), step
                if scaler is not None:
                    row["loss_scale"], row["skipped_steps"], skipped = scaler.get_scale(), skipped, 0
                log_rows.append(row)
                if tb:
                    for k, v in row.items():
                        if k != "step":
                            tb.add_scalar(f"train/{k}", v, step)
                progress.update(task, info=f"loss {float(loss.detach()):.4f}")
            progress.update(task, completed=step)
            if step % val_every == 0 or step == steps or step == args.until:
                broadcast_buffers(objective)
                metrics = validate(objective, val_loader, engine.device)
                log_rows.append({"step": step, **{f"val_{k}": v for k, v in metrics.items()}})
                if tb:
                    for k, v in metrics.items():
                        tb.add_scalar(f"val/{k}", v, step)
                    tb.flush()
                improved = best is None or sign * metrics[cfg.metric] > sign * best["metrics"][cfg.metric]
                if improved:
                    best, since_best = {"step": step, "metrics": metrics}, 0
                    if rank0:
                        state = {k: v.cpu() for k, v in objective.net.state_dict().items()}
                        specs = tensor_specs(objective, next(iter(val_loader)))
                        save_best(out, state, make_card(cfg, specs, metrics, train_info(
                            cfg, args, steps, step, len(val_ds), time.time() - t0, objective, ds_cfg, engine.device)))
                else:
                    since_best += 1
                if rank0:  # the log first: rows past the checkpoint a kill leaves are dropped by --resume
                    append_csv(out / "metrics.csv", log_rows)
                    log_rows = []
                save_checkpoint(engine, out, rank0, {
                    "step": step, "best": best, "since_best": since_best,
                    "elapsed_s": time.time() - t0, **({"d_opt": d_opt.state_dict()} if d_opt else {}),
                    **({"amp_scaler": scaler.state_dict(), "skipped": skipped} if scaler is not None else {})})
                progress.update(task, info=f"{cfg.metric} {metrics[cfg.metric]:.4f}")
                if cfg.schedule.early_stop_patience and since_best >= cfg.schedule.early_stop_patience:
                    console.print(f"{cfg.network}: early stop at step {step} (best {best['step']})")
                    break
                if step == args.until and step < steps:
                    console.print(f"{cfg.network}: stopped at step {step} of {steps} (--until); --resume continues")
                    break
                tick, tick_step = time.time(), step
    wall = time.time() - t0
    if rank0:
        tb.close()
        plot_curves(out / "metrics.csv", out / "curves.png", cfg.metric)
        console.print(f"[bold]{cfg.network}[/]: best {cfg.metric}={best['metrics'][cfg.metric]:.4f} at step "
                      f"{best['step']} ({wall:.0f} s) -> {out}")
    return {"network": cfg.network, "best": best, "wall_s": wall}


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads or max(1, os.cpu_count() or 1))
    init_distributed()
    for config_path in args.config:
        train_one(config_path, args)


if __name__ == "__main__":
    main()
    finish()
