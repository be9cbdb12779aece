"""Check a dataset folder before training on it: missing or mismatched files, size and label anomalies, counts.

`python -m drape_train.data validate --layout viton|items|coco --root ...` prints the counts and the problems as
rich tables and exits non-zero when there is any error. Warnings (orphan files, keypoints off the image, masks
with grey levels) do not fail a run: real data has them and training copes.

What is decoded: masks and parse maps fully (their values are checked); photos by header only (format and size),
which keeps a pass over full VITON-HD (~13k ids at 1024x768) to minutes rather than tens of minutes.
"""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .degrade import MODES
from .layout import SPLITS, VitonDataset, read_keypoints, read_parse
from .readers import ITEM_MASKS, CocoGarments, decode_segmentation, find_image, item_splits
from .synth import LIP_LABELS

LAYOUTS = ("viton", "items", "coco")


@dataclass
class Issue:
    severity: str   # "error" | "warning"
    where: str      # the file (or folder) concerned
    problem: str


@dataclass
class Report:
    layout: str
    root: str
    issues: list[Issue] = field(default_factory=list)
    counts: dict = field(default_factory=dict)

    def error(self, where, problem: str):
        self.issues.append(Issue("error", str(where), problem))

    def warn(self, where, problem: str):
        self.issues.append(Issue("warning", str(where), problem))

    @property
    def errors(self) -> list[Issue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def ok(self) -> bool:
        return not self.errors


def _progress(enabled: bool) -> Progress:
    return Progress(TextColumn("[bold]validate[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), disable=not enabled)


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the header; ValueError when the file is not an image PIL can identify."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except (UnidentifiedImageError, OSError) as e:
        raise ValueError(f"not a readable image ({e.__class__.__name__})") from None


def _size(hw) -> str:
    return f"{hw[1]}x{hw[0]}"


def _check_mask(rep: Report, path: Path, ref_hw, ref_path: Path, what: str):
    """Decode a 0/255 mask: size must match its image, it must not be empty; grey levels are a warning."""
    raw = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if raw is None:
        rep.error(path, f"{what}: cannot decode")
        return
    mask = raw >= 128                                   # the readers' threshold (JPEG masks are noisy)
    if ref_hw is not None and mask.shape != tuple(ref_hw):
        rep.error(path, f"{what} size {_size(mask.shape)} != {ref_path.name} size {_size(ref_hw)}")
    if not mask.any():
        rep.error(path, f"{what} is empty (no pixel >= 128)")
    grey = ((raw > 24) & (raw < 232)).mean()
    if path.suffix.lower() == ".png" and grey > 0.01:
        rep.warn(path, f"{what}: {grey:.1%} of pixels are neither ~0 nor ~255 (expected a 0/255 mask)")


# ----------------------------------------------------------------------------------------------- VITON-HD

def _viton_id(rep: Report, ds: VitonDataset, sid: str, counts: Counter):
    p = ds.paths(sid, strict=False)
    missing = [k for k in ds.FILES if p[k] is None]
    for key in missing:
        rep.error(ds.expected_path(key, sid), f"missing {key.replace('_', ' ')} of id {sid!r}")
    if missing:
        return
    try:
        img_hw, cloth_hw = image_size(p["image"]), image_size(p["cloth"])
    except ValueError as e:
        rep.error(p["image"], str(e))
        return
    _check_mask(rep, p["cloth_mask"], cloth_hw, p["cloth"], "cloth mask")
    try:
        parse = read_parse(p["parse"])
    except (OSError, ValueError) as e:
        rep.error(p["parse"], f"parse map: cannot read ({e})")
    else:
        if parse.shape != img_hw:
            rep.error(p["parse"], f"parse map size {_size(parse.shape)} != image size {_size(img_hw)}")
        bad = sorted(int(v) for v in np.unique(parse) if v >= len(LIP_LABELS))
        if bad:
            rep.error(p["parse"], f"labels {bad} outside the LIP range 0..{len(LIP_LABELS) - 1}")
        if not np.isin(parse, (5, 6, 7)).any():
            counts["no garment label"] += 1
    try:
        kp = read_keypoints(p["keypoints"])
    except (ValueError, KeyError) as e:
        rep.error(p["keypoints"], f"keypoints: {e}")
    else:
        seen = kp[:, 2] > 0
        if not seen.any():
            rep.warn(p["keypoints"], "no person detected (all keypoints have confidence 0)")
        off = seen & ((kp[:, 0] < -1) | (kp[:, 1] < -1) | (kp[:, 0] > img_hw[1] + 1) | (kp[:, 1] > img_hw[0] + 1))
        if off.any():
            rep.warn(p["keypoints"], f"{int(off.sum())} keypoints outside the {_size(img_hw)} image")
    if p["gt_warp"] is not None:
        try:
            with np.load(p["gt_warp"]) as z:
                shape = z["flow"].shape
        except (OSError, KeyError, ValueError) as e:
            rep.error(p["gt_warp"], f"gt-warp: cannot read flow ({e})")
        else:
            if shape != (*img_hw, 2):
                rep.error(p["gt_warp"], f"gt-warp flow shape {shape} != ({img_hw[0]}, {img_hw[1]}, 2)")
    counts["ids"] += 1


def _viton_split(rep: Report, root: Path, split: str, bar: Progress):
    ds = VitonDataset(root, split)
    counts = Counter()
    job = bar.add_task(f"{split} ({len(ds)} ids)", total=len(ds))
    for sid in ds.ids:
        _viton_id(rep, ds, sid, counts)
        bar.advance(job)
    ids = set(ds.ids)
    for folder in ("cloth", "cloth-mask", ds.parse_folder, "openpose_json"):
        d = ds.dir / folder
        if not d.is_dir():
            rep.error(d, f"folder missing (split {split!r} has {len(ds)} images)")
            continue
        orphans = sorted(f.name for f in d.iterdir() if f.stem.removesuffix("_keypoints") not in ids)
        if orphans:
            rep.warn(d, f"{len(orphans)} files without an image/ counterpart, e.g. {orphans[0]}")
    pairs_file = root / f"{split}_pairs.txt"
    targets = 0
    if not pairs_file.exists():
        rep.warn(pairs_file, "no pairs file: try-on pairs of this split are unknown")
    else:
        cloth_ids = {f.stem for f in (ds.dir / "cloth").iterdir()} if (ds.dir / "cloth").is_dir() else set()
        for person, cloth in ds.pairs:
            if person not in ids:
                rep.error(pairs_file, f"pair ({person}, {cloth}): person {person!r} has no image/{person}.jpg")
            if cloth not in cloth_ids:
                rep.error(pairs_file, f"pair ({person}, {cloth}): cloth {cloth!r} has no cloth/{cloth}.jpg")
            targets += ds.target_for(person, cloth) is not None
    rep.counts[split] = {"ids": len(ds), "complete ids": counts["ids"], "pairs": len(ds.pairs),
                         "pairs with target": targets, "no garment label": counts["no garment label"],
                         "gt-warp": (ds.dir / "gt-warp").is_dir(), "parse": ds.parse_folder}


def validate_viton(root, splits=None, progress: bool = True) -> Report:
    """Every split of a VITON-HD layout that has an image/ folder (or the given splits)."""
    root = Path(root)
    rep = Report("viton", str(root))
    found = [s for s in (splits or SPLITS) if (root / s / "image").is_dir()]
    if not found:
        rep.error(root, f"no <split>/image folder (splits looked for: {', '.join(splits or SPLITS)})")
        return rep
    for split in splits or ():
        if split not in found:
            rep.error(root / split / "image", f"split {split!r} asked for but it has no image/ folder")
    with _progress(progress) as bar:
        for split in found:
            _viton_split(rep, root, split, bar)
    return rep


# ----------------------------------------------------------------------------------------------- items

def _item(rep: Report, d: Path, masks_required: bool, counts: Counter):
    sizes = {}
    for key in ("still", "on_model"):
        path = find_image(d, key)
        if path is None:
            rep.error(d / f"{key}.jpg", "missing image")
            continue
        try:
            sizes[key] = (image_size(path), path)
        except ValueError as e:
            rep.error(path, str(e))
    present = {k: (d / f"{m}.png").exists() for k, m in ITEM_MASKS.items()}
    if masks_required or any(present.values()):
        for key, mask in ITEM_MASKS.items():
            path = d / f"{mask}.png"
            if not present[key] and masks_required:
                rep.error(path, "missing mask")
            elif not present[key]:
                rep.warn(path, "missing mask (the item's other mask exists)")
            elif key in sizes:
                _check_mask(rep, path, sizes[key][0], sizes[key][1], mask)
    counts["with masks" if all(present.values()) else "without masks"] += 1
    true_path = find_image(d, "on_model_true")
    if true_path is not None:
        counts["with true colour"] += 1
        try:
            hw = image_size(true_path)
            if "on_model" in sizes and hw != sizes["on_model"][0]:
                rep.error(true_path, f"size {_size(hw)} != on_model size {_size(sizes['on_model'][0])}")
        except ValueError as e:
            rep.error(true_path, str(e))
    deg = d / "degradation.json"
    if deg.exists():
        try:
            rec = json.loads(deg.read_text())
            if rec.get("mode") not in MODES:
                rep.error(deg, f"mode {rec.get('mode')!r} is not one of {MODES}")
            if not isinstance(rec.get("magnitude"), (int, float)) or rec["magnitude"] < 0:
                rep.error(deg, f"magnitude {rec.get('magnitude')!r} is not a number >= 0")
        except json.JSONDecodeError as e:
            rep.error(deg, f"not valid JSON ({e})")
    counts["items"] += 1


def validate_items(root, progress: bool = True) -> Report:
    """Item folders under root/<split>/ (or root itself). Masks are required except in a split named "test"."""
    root = Path(root)
    rep = Report("items", str(root))
    try:
        splits = item_splits(root)
    except FileNotFoundError as e:
        rep.error(root, str(e))
        return rep
    if not splits:
        rep.error(root, "no item_* folders here or in its subfolders")
        return rep
    with _progress(progress) as bar:
        for split, d in splits.items():
            items = sorted(c for c in d.iterdir() if c.is_dir() and c.name.startswith("item_"))
            counts = Counter()
            job = bar.add_task(f"{split} ({len(items)} items)", total=len(items))
            for item in items:
                _item(rep, item, masks_required=split != "test", counts=counts)
                bar.advance(job)
            rep.counts[split] = {k: counts[k] for k in ("items", "with masks", "without masks", "with true colour")}
    return rep


# ----------------------------------------------------------------------------------------------- COCO

def validate_coco(annotations, images=None, progress: bool = True) -> Report:
    """A COCO instances file over an image folder: files, sizes, categories, decodable non-empty masks."""
    rep = Report("coco", str(annotations))
    try:
        ds = CocoGarments(annotations, images)
    except (FileNotFoundError, ValueError) as e:
        rep.error(annotations, str(e))
        return rep
    for ann in ds.orphans:
        rep.error(ds.annotations, f"annotation {ann.get('id')} refers to image_id {ann['image_id']}, not in images")
    groups, unknown_cats, n_ann = Counter(), Counter(), 0
    with _progress(progress) as bar:
        job = bar.add_task(f"{ds.annotations.name} ({len(ds)} images)", total=len(ds))
        for image_id in ds.ids:
            im = ds.images[image_id]
            path = ds.image_path(image_id)
            hw = (int(im["height"]), int(im["width"]))
            if not path.exists():
                rep.error(path, f"missing image (image id {image_id})")
            else:
                try:
                    if image_size(path) != hw:
                        rep.error(path, f"image is {_size(image_size(path))} but the annotations say {_size(hw)}")
                except ValueError as e:
                    rep.error(path, str(e))
            for ann in ds.by_image[image_id]:
                n_ann += 1
                where = f"{ds.annotations.name}: annotation {ann.get('id')} (image {im['file_name']})"
                if ann["category_id"] not in ds.categories:
                    unknown_cats[ann["category_id"]] += 1
                    rep.error(where, f"unknown category_id {ann['category_id']}")
                    continue
                try:
                    mask = decode_segmentation(ann["segmentation"], *hw)
                except (ValueError, KeyError, TypeError, IndexError) as e:
                    rep.error(where, f"cannot decode segmentation ({e})")
                    continue
                if not mask.any():
                    rep.error(where, "empty mask")
                box = ann.get("bbox")
                if box and (box[0] < -1 or box[1] < -1 or box[0] + box[2] > hw[1] + 1 or box[1] + box[3] > hw[0] + 1):
                    rep.warn(where, f"bbox {box} extends outside the {_size(hw)} image")
                groups[ds.group_of(ann["category_id"]) or "other"] += 1
            bar.advance(job)
    no_group = [c["name"] for c in ds.categories.values() if c["name"] and ds.group_of(c["id"]) is None]
    rep.counts["all"] = {"images": len(ds), "annotations": n_ann, "categories": len(ds.categories),
                         "upper instances": groups["upper"], "lower instances": groups["lower"],
                         "whole-body instances": groups["whole"], "other instances (parts, accessories)":
                         groups["other"], "categories outside the garment groups": len(no_group)}
    return rep


# ----------------------------------------------------------------------------------------------- report

def print_report(rep: Report, console: Console | None = None, max_rows: int = 50):
    """Counts per split, then up to max_rows issues (errors first), then a one-line verdict."""
    console = console or Console()
    if rep.counts:
        counts = Table(title=f"{rep.layout} dataset {rep.root}")
        counts.add_column("split")
        keys = list(dict.fromkeys(k for c in rep.counts.values() for k in c))
        for k in keys:
            counts.add_column(k, justify="right")
        for split, c in rep.counts.items():
            counts.add_row(split, *(str(c.get(k, "")) for k in keys))
        console.print(counts)
    if rep.issues:
        issues = Table(title=f"{len(rep.errors)} errors, {len(rep.issues) - len(rep.errors)} warnings")
        issues.add_column("severity")
        issues.add_column("where", overflow="fold")
        issues.add_column("problem", overflow="fold")
        ordered = sorted(rep.issues, key=lambda i: i.severity != "error")
        for i in ordered[:max_rows]:
            issues.add_row("[red]error[/]" if i.severity == "error" else "[yellow]warning[/]", i.where, i.problem)
        console.print(issues)
        if len(ordered) > max_rows:
            console.print(f"... and {len(ordered) - max_rows} more (raise --max-rows to list them)")
    console.print("[green]OK[/]" if rep.ok else f"[red]FAILED[/]: {len(rep.errors)} errors")


def validate(layout: str, root, annotations=None, splits=None, progress: bool = True) -> Report:
    if layout == "viton":
        return validate_viton(root, splits, progress)
    if layout == "items":
        return validate_items(root, progress)
    if layout == "coco":
        if annotations is None:
            jsons = sorted(Path(root).glob("*.json"))
            if len(jsons) != 1:
                rep = Report("coco", str(root))
                rep.error(root, f"pass --annotations: found {len(jsons)} .json files in the root, need exactly one")
                return rep
            annotations = jsons[0]
        return validate_coco(annotations, root, progress)
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")


__all__ = ["LAYOUTS", "Issue", "Report", "print_report", "validate", "validate_coco", "validate_items",
           "validate_viton"]
