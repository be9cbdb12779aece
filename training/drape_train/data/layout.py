"""VITON-HD folder layout: write synthetic pairs into it, read it back (synthetic or real data alike).

    {root}/dataset.json                      resolution, counts, seed, generator version, "complete" flag
    {root}/{split}_pairs.txt                 "person.jpg cloth.jpg" per line
    {root}/{split}/image/{id}.jpg            person, RGB
    {root}/{split}/cloth/{id}.jpg            still product image
    {root}/{split}/cloth-mask/{id}.png       0/255 (real VITON-HD ships .jpg; both are read)
    {root}/{split}/image-parse-v3/{id}.png   palette PNG, pixel value = LIP label id
    {root}/{split}/openpose_json/{id}_keypoints.json   OpenPose COCO-18 (BODY_25 is read too)
    {root}/{split}/gt-warp/{id}.npz          extra: flow float16 [H,W,2] (grid_sample grid), garment_mask
    {root}/{split}/meta/{id}.json            extra: garment type, colours, seed

Synthetic pair k writes "{k:05d}_0" (garment A) and "{k:05d}_1" (garment B) of the same person. The pairs file
lists both directions, "k_0 k_1" and "k_1 k_0": the person of the first wearing the cloth of the second, whose
ground-truth try-on is image/<second>. Real VITON-HD ids ("00891_00") follow the same identity_suffix shape.

Real VITON-HD / HR-VITON read unchanged: `train_pairs.txt` / `test_pairs.txt` at the root (paired lines
"00891_00.jpg 00891_00.jpg" have their target, unpaired ones have none), cloth-mask as .jpg (thresholded at 128),
`image-parse-v3` palette PNGs (or an older `image-parse` folder), OpenPose BODY_25 json, and no gt-warp/ or meta/
(the garment mask then comes from the parse labels 5, 6, 7). Folders this reader does not use (openpose_img,
image-densepose, agnostic-v3.2, image-parse-agnostic-v3.2) are ignored.

With `recolor=True` every sample also becomes a recolor item in the garment-color-correction layout
(`drape_train.data.readers.ItemDataset` reads it):

    {root}/recolor/{split}/item_{id}/still.jpg           the still (cloth) of sample {id}
    {root}/recolor/{split}/item_{id}/mask_still.png      0/255
    {root}/recolor/{split}/item_{id}/on_model.jpg        the on-model photo with its garment colour degraded
    {root}/recolor/{split}/item_{id}/mask_on_model.png   0/255, the visible garment
    {root}/recolor/{split}/item_{id}/on_model_true.jpg   extra: the photo in its true colour (the target)
    {root}/recolor/{split}/item_{id}/degradation.json    extra: mode, magnitude, params (replayable with
                                                         degrade.apply), seed, measured Delta E 2000
"""
from __future__ import annotations

import json
import shutil
import zipfile
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from drape_core.contract import DEFAULT_RESOLUTION

from .degrade import MODES as DEGRADE_MODES
from .degrade import apply as apply_degradation
from .degrade import sample_params
from .synth import (FLOW_INVALID, GARMENT_LABELS, GENERATOR_VERSION, KEYPOINT_NAMES, LIP_LABELS, LIP_PALETTE,
                    NECK_LABEL, Sample, render_pair)

SPLITS = ("train", "val", "test")
FOLDERS = ("image", "cloth", "cloth-mask", "image-parse-v3", "openpose_json", "gt-warp", "meta")
PARSE_FOLDERS = ("image-parse-v3", "image-parse")   # HR-VITON / VITON-HD, then the older VITON name
RECOLOR_DIR = "recolor"
RECOLOR_MAGNITUDE = (0.05, 0.35)
RECOLOR_STREAM = 0x7EC0  # a third seed word: the degradation draws never overlap the renderer's streams
# Every colour image the studio writes (VITON layout and recolor items): quality 98 without chroma subsampling.
# The studio renders at the working resolution (256x192), where 4:2:0 averages the colours of fine stripes,
# checks and prints over 2x2 pixels. Real data reaches 256x192 from large JPEGs (VITON-HD: 1024x768, 4:2:0)
# through a resize that averages the chroma blocks away. Mean Delta E 2000 inside the garment against the raw
# render (`python -m drape_train.data storage`, 64 images): quality 95 4:2:0 3.49, quality 95 4:4:4 1.27, this
# setting 0.72, the real-data path 0.68. So this is the setting that gives the network what real photos give it;
# 4:2:0 at 256x192 bled colour across every pattern edge, which is what recolor is about.
JPEG = (cv2.IMWRITE_JPEG_QUALITY, 98, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444)
RECOLOR_JPEG = JPEG
READ_GARMENT_LABELS = (5, 6, 7)  # upper-clothes, dress, coat: what counts as "the garment" in real parses
BODY25_TO_COCO18 = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18]


STORAGE_SETTINGS = {
    "q95 4:2:0": (cv2.IMWRITE_JPEG_QUALITY, 95),
    "q95 4:4:4": (cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
    "q98 4:4:4 (JPEG, the studio's)": JPEG,
}


def _jpeg_roundtrip(rgb: np.ndarray, params) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[..., ::-1]), list(params))
    if not ok:
        raise OSError("JPEG encoding failed")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]


def measure_storage(n_pairs: int = 32, seed: int = 0, height: int = DEFAULT_RESOLUTION[0], width: int = DEFAULT_RESOLUTION[1],
                    large: int = 4) -> dict:
    """Mean CIEDE2000 inside the garment between the raw render and what a loader reads back at height x width.

    Rows: each of STORAGE_SETTINGS applied at height x width (what the studio writes), and "real-data path":
    rendered ``large`` times bigger (VITON-HD's 1024x768 for the default size), stored as quality 95 4:2:0 and
    resized down with INTER_AREA, as a loader reads a real dataset at the working resolution. The raw reference
    for every row is the large render resized the same way, so every row sees the same scene.
    """
    from drape_core.colour import delta_e_2000, rgb_to_lab
    from .synth import render_pair

    def down(x):
        return cv2.resize(x, (width, height), interpolation=cv2.INTER_AREA)

    errors: dict[str, list[np.ndarray]] = {}
    for k in range(n_pairs):
        for s in render_pair(30_000 + seed * 1000 + k, height * large, width * large):
            raw, inside = down(s.image), down(s.garment_mask) > 200
            reads = {name: _jpeg_roundtrip(raw, params) for name, params in STORAGE_SETTINGS.items()}
            reads["real-data path (x%d, q95 4:2:0, area resize)" % large] = down(
                _jpeg_roundtrip(s.image, STORAGE_SETTINGS["q95 4:2:0"]))
            for name, img in reads.items():
                errors.setdefault(name, []).append(delta_e_2000(rgb_to_lab(img[inside]), rgb_to_lab(raw[inside])))
    return {name: float(np.concatenate(v).mean()) for name, v in errors.items()}


def magnitude_range(magnitude) -> tuple[float, float]:
    """(low, high) floats of a recolor degradation magnitude range; ValueError unless 0 <= low <= high <= 1."""
    low, high = (float(v) for v in magnitude)
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"magnitude must be a range [low, high] with 0 <= low <= high <= 1, got {list(magnitude)}")
    return low, high


def pair_seed(base_seed: int, split: str, k: int) -> int:
    """Seed of pair k: base seed, split and index in disjoint bit fields, so no two (seed, split, k) share one."""
    if not 0 <= k < 1 << 28 or base_seed < 0:
        raise ValueError(f"need 0 <= k < 2**28 and base_seed >= 0, got k={k}, base_seed={base_seed}")
    return (base_seed << 32) | (SPLITS.index(split) << 28) | k


# ----------------------------------------------------------------------------------------------- writing

def _imwrite(path: Path, rgb_or_gray: np.ndarray, *params):
    img = rgb_or_gray[..., ::-1] if rgb_or_gray.ndim == 3 else rgb_or_gray
    if not cv2.imwrite(str(path), np.ascontiguousarray(img), list(params)):
        raise OSError(f"could not write {path}")


def _save_npz(path: Path, **arrays):
    """np.savez_compressed with a fixed zip timestamp, so reruns are byte-identical."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arr), allow_pickle=False)


def write_parse(path: Path, parse: np.ndarray):
    """Palette PNG: pixel values are label ids, the palette only colours them for viewers."""
    im = Image.fromarray(parse.astype(np.uint8))
    im.putpalette(LIP_PALETTE.ravel().tolist() + [0] * (768 - LIP_PALETTE.size))
    im.save(path, optimize=False)


def openpose_dict(keypoints: np.ndarray) -> dict:
    return {"version": 1.3, "people": [{
        "person_id": [-1], "pose_keypoints_2d": [round(float(v), 3) for v in keypoints.reshape(-1)],
        "face_keypoints_2d": [], "hand_left_keypoints_2d": [], "hand_right_keypoints_2d": [],
        "pose_keypoints_3d": [], "face_keypoints_3d": [], "hand_left_keypoints_3d": [],
        "hand_right_keypoints_3d": []}]}


def write_sample(split_dir: Path, sid: str, s: Sample, extra_meta: dict | None = None):
    _imwrite(split_dir / "image" / f"{sid}.jpg", s.image, *JPEG)
    _imwrite(split_dir / "cloth" / f"{sid}.jpg", s.cloth, *JPEG)
    _imwrite(split_dir / "cloth-mask" / f"{sid}.png", s.cloth_mask)
    write_parse(split_dir / "image-parse-v3" / f"{sid}.png", s.parse)
    (split_dir / "openpose_json" / f"{sid}_keypoints.json").write_text(json.dumps(openpose_dict(s.keypoints)))
    _save_npz(split_dir / "gt-warp" / f"{sid}.npz", flow=s.flow.astype(np.float16), garment_mask=s.garment_mask > 0)
    meta = {**s.meta, "garment_type": s.garment_type, "garment_rgb": list(s.garment_rgb), **(extra_meta or {})}
    (split_dir / "meta" / f"{sid}.json").write_text(json.dumps(meta, indent=1, sort_keys=True))


def degradation_for(seed: int, j: int, magnitude=RECOLOR_MAGNITUDE) -> tuple[str, float, list[dict]]:
    """The seeded degradation of sample j of pair `seed`: (mode, magnitude, steps). Any mode of degrade.MODES."""
    rng = np.random.default_rng([seed, j, RECOLOR_STREAM])
    mode = DEGRADE_MODES[int(rng.integers(len(DEGRADE_MODES)))]
    m = float(rng.uniform(*magnitude))
    return mode, m, sample_params(rng, mode, m)


def write_recolor_item(item_dir: Path, s: Sample, mode: str, magnitude: float, steps: list[dict], info: dict):
    """One recolor item: still + mask, degraded on-model + mask, the true on-model photo and degradation.json."""
    from drape_core.colour import delta_e_2000, rgb_to_lab

    item_dir.mkdir(parents=True, exist_ok=True)
    degraded = apply_degradation(s.image, s.garment_mask, steps)
    inside = s.garment_mask > 0
    de = delta_e_2000(rgb_to_lab(degraded[inside]), rgb_to_lab(s.image[inside])) if inside.any() else np.zeros(1)
    _imwrite(item_dir / "still.jpg", s.cloth, *RECOLOR_JPEG)
    _imwrite(item_dir / "mask_still.png", s.cloth_mask)
    _imwrite(item_dir / "on_model.jpg", degraded, *RECOLOR_JPEG)
    _imwrite(item_dir / "mask_on_model.png", s.garment_mask)
    _imwrite(item_dir / "on_model_true.jpg", s.image, *RECOLOR_JPEG)
    record = {"mode": mode, "magnitude": round(magnitude, 6), "params": steps,
              "delta_e00": {"mean": round(float(de.mean()), 4), "p95": round(float(np.percentile(de, 95)), 4)},
              **info}
    (item_dir / "degradation.json").write_text(json.dumps(record, indent=1, sort_keys=True))


def _write_pair(task: tuple) -> int:
    split_dir, k, seed, height, width, recolor = task
    a, b = render_pair(seed, height, width)
    for j, s in enumerate((a, b)):
        sid = f"{k:05d}_{j}"
        write_sample(Path(split_dir), sid, s, {"pair": k, "pair_seed": seed})
        if recolor is not None:
            mode, m, steps = degradation_for(seed, j, recolor["magnitude"])
            item = Path(recolor["dir"]) / f"item_{sid}"
            write_recolor_item(item, s, mode, m, steps, {"seed": [seed, j, RECOLOR_STREAM], "source_id": sid,
                                                         "split": Path(split_dir).name})
    return k


def _worker_init():
    cv2.setNumThreads(1)  # parallelism is across processes; OpenCV's own pool would only oversubscribe


def pair_lines(n: int) -> list[str]:
    lines = []
    for k in range(n):
        lines += [f"{k:05d}_0.jpg {k:05d}_1.jpg", f"{k:05d}_1.jpg {k:05d}_0.jpg"]
    return lines


def _clear_previous(root: Path):
    """A rerun replaces an earlier synthetic dataset (no stale ids survive); anything else is never touched."""
    if (root / "dataset.json").exists():
        for split in SPLITS:
            for folder in FOLDERS:
                shutil.rmtree(root / split / folder, ignore_errors=True)
            shutil.rmtree(root / RECOLOR_DIR / split, ignore_errors=True)
            (root / f"{split}_pairs.txt").unlink(missing_ok=True)
    elif any((root / split).exists() for split in SPLITS):
        raise FileExistsError(f"{root} holds train/val/test folders but no dataset.json: not a synthetic dataset "
                              f"written by this tool, refusing to overwrite it")


def write_dataset(root, n_pairs: dict, seed: int = 0, height: int = DEFAULT_RESOLUTION[0], width: int = DEFAULT_RESOLUTION[1], workers: int = 1,
                  progress: bool = True, recolor: bool = False, magnitude: tuple = RECOLOR_MAGNITUDE) -> dict:
    """Render n_pairs[split] pairs per split into the VITON-HD layout under root; returns dataset.json's content.

    recolor=True also writes every sample as a recolor item under root/recolor/<split>/ (module docstring), with a
    seeded degradation: a mode drawn uniformly from degrade.MODES and a magnitude uniform in `magnitude`.
    Every file depends only on its pair seed, so the output is byte-identical for any worker count. dataset.json
    says "complete": false until the last file is written.
    """
    lo, hi = magnitude_range(magnitude)   # the same range training and evaluation accept
    root = Path(root)
    unknown = set(n_pairs) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; expected some of {SPLITS}")
    _clear_previous(root)
    info = {
        "generator": "drape_train.data.synth", "version": GENERATOR_VERSION, "complete": False, "seed": seed,
        "height": height, "width": width, "jpeg": {"quality": JPEG[1], "chroma_subsampling": "4:4:4"},
        "pairs": {s: int(n_pairs.get(s, 0)) for s in SPLITS},
        "samples": {s: 2 * int(n_pairs.get(s, 0)) for s in SPLITS},
        "labels": list(LIP_LABELS), "neck_label": NECK_LABEL, "garment_labels": list(GARMENT_LABELS),
        "keypoints": {"format": "openpose-coco18", "names": list(KEYPOINT_NAMES)},
        "flow": {"convention": "grid_sample align_corners=False, x then y, person pixel -> cloth image",
                 "invalid": FLOW_INVALID},
        "recolor": {"dir": RECOLOR_DIR, "layout": "recolor/<split>/item_<id>/", "modes": list(DEGRADE_MODES),
                    "magnitude": [lo, hi]} if recolor else None,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(info, indent=1))
    tasks = []
    for split in SPLITS:
        n = int(n_pairs.get(split, 0))
        split_dir = root / split
        for folder in FOLDERS:
            (split_dir / folder).mkdir(parents=True, exist_ok=True)
        (root / f"{split}_pairs.txt").write_text("".join(line + "\n" for line in pair_lines(n)))
        rec = {"dir": str(root / RECOLOR_DIR / split), "magnitude": (lo, hi)} if recolor else None
        tasks += [(str(split_dir), k, pair_seed(seed, split, k), height, width, rec) for k in range(n)]

    columns = (TextColumn("[bold]synth[/] {task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn())
    with Progress(*columns, disable=not progress) as bar:
        job = bar.add_task(f"{root} ({height}x{width}, {workers} workers)", total=len(tasks))
        if workers <= 1:
            for t in tasks:
                _write_pair(t)
                bar.advance(job)
        else:
            with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_worker_init) as ex:
                for _ in ex.map(_write_pair, tasks, chunksize=4):
                    bar.advance(job)

    info["complete"] = True
    (root / "dataset.json").write_text(json.dumps(info, indent=1))
    return info


# ----------------------------------------------------------------------------------------------- reading

def read_parse(path: Path) -> np.ndarray:
    """Label ids from a palette/grey PNG; an RGB-colourised parse is mapped back through LIP_PALETTE."""
    im = Image.open(path)
    if im.mode in ("P", "L"):
        return np.asarray(im, np.uint8)
    if im.mode in ("I", "I;16"):
        return np.asarray(im).astype(np.uint8)
    rgb = np.asarray(im.convert("RGB")).astype(np.int32)
    code = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    pal = LIP_PALETTE.astype(np.int32)
    keys = (pal[:, 0] << 16) | (pal[:, 1] << 8) | pal[:, 2]
    idx = np.searchsorted(keys, code, sorter=np.argsort(keys))
    idx = np.argsort(keys)[np.clip(idx, 0, len(keys) - 1)]
    if not (keys[idx] == code).all():
        raise ValueError(f"{path}: RGB parse has colours outside LIP_PALETTE; save label ids instead")
    return idx.astype(np.uint8)


def read_keypoints(path: Path) -> np.ndarray:
    """[18,3] (x, y, confidence) from an OpenPose json; zeros when nobody was detected.

    Reads "pose_keypoints_2d" (OpenPose >= 1.2, VITON-HD) or "pose_keypoints" (older OpenPose, CP-VTON's VITON).
    """
    try:
        people = json.loads(Path(path).read_text()).get("people", [])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not people:
        return np.zeros((18, 3), np.float32)
    person = people[0]
    values = person.get("pose_keypoints_2d", person.get("pose_keypoints"))
    if values is None:
        raise ValueError(f"{path}: people[0] has neither pose_keypoints_2d nor pose_keypoints")
    if len(values) % 3:
        raise ValueError(f"{path}: {len(values)} pose values is not a multiple of 3 (x, y, confidence)")
    kp = np.asarray(values, np.float32).reshape(-1, 3)
    if len(kp) == 25:
        kp = kp[BODY25_TO_COCO18]
    if len(kp) != 18:
        raise ValueError(f"{path}: expected 18 (COCO) or 25 (BODY_25) keypoints, got {len(kp)}")
    return kp


def _mask255(m: np.ndarray) -> np.ndarray:
    return m.astype(np.uint8) * 255


def read_rgb(path: Path) -> np.ndarray:
    """RGB uint8 [H,W,3]; OSError naming the file when it cannot be decoded."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"could not decode {path}")
    return np.ascontiguousarray(img[..., ::-1])


def read_mask(path: Path) -> np.ndarray:
    """uint8 0/255 [H,W] from a grey PNG or JPEG mask (JPEG noise thresholded at 128)."""
    mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise OSError(f"could not decode {path}")
    return _mask255(mask >= 128)


def check_same_size(path: Path, got: np.ndarray, ref_path: Path, ref: np.ndarray):
    """ValueError naming both files when an annotation's size differs from its image's."""
    if got.shape[:2] != ref.shape[:2]:
        raise ValueError(f"{path} is {got.shape[1]}x{got.shape[0]} but {ref_path} is {ref.shape[1]}x{ref.shape[0]} "
                         f"(width x height): annotations must match their image")



class VitonDataset:
    """Reader for one split of the layout above. Images come back RGB uint8, masks uint8 0/255 (as in Sample)."""

    def __init__(self, root, split: str):
        self.root, self.split = Path(root), split
        self.dir = self.root / split
        if not (self.dir / "image").is_dir():
            raise FileNotFoundError(f"{self.dir / 'image'} does not exist: not a VITON-HD style split")
        self.ids = sorted({p.stem for p in (self.dir / "image").iterdir() if p.suffix.lower() in (".jpg", ".png")})
        self._idset = set(self.ids)
        pairs_file = self.root / f"{split}_pairs.txt"
        self.pairs = []
        if pairs_file.exists():
            for n, line in enumerate(pairs_file.read_text().splitlines(), 1):
                if line.strip():
                    parts = line.split()
                    if len(parts) != 2:
                        raise ValueError(f"{pairs_file}:{n}: expected 'person.jpg cloth.jpg', got {line!r}")
                    self.pairs.append((Path(parts[0]).stem, Path(parts[1]).stem))
        meta = self.root / "dataset.json"
        self.info = json.loads(meta.read_text()) if meta.exists() else {}

    def __len__(self) -> int:
        return len(self.ids)

    def _find(self, folder: str, sid: str, exts: tuple[str, ...], suffix: str = "", required: bool = True):
        for ext in exts:
            p = self.dir / folder / f"{sid}{suffix}{ext}"
            if p.exists():
                return p
        if required:
            raise FileNotFoundError(f"missing {self.dir / folder / (sid + suffix)}{{{','.join(exts)}}} "
                                    f"for id {sid!r} of split {self.split!r}")
        return None

    @property
    def parse_folder(self) -> str:
        """image-parse-v3 (HR-VITON, VITON-HD, synthetic) or, when only that exists, the older image-parse."""
        for name in PARSE_FOLDERS:
            if (self.dir / name).is_dir():
                return name
        return PARSE_FOLDERS[0]

    FILES = {  # key -> (folder, accepted extensions, suffix after the id); folder None = parse_folder
        "image": ("image", (".jpg", ".png"), ""),
        "cloth": ("cloth", (".jpg", ".png"), ""),
        "cloth_mask": ("cloth-mask", (".png", ".jpg"), ""),
        "parse": (None, (".png",), ""),
        "keypoints": ("openpose_json", (".json",), "_keypoints"),
    }

    def expected_path(self, key: str, sid: str) -> Path:
        folder, exts, suffix = self.FILES[key]
        return self.dir / (folder or self.parse_folder) / f"{sid}{suffix}{exts[0]}"

    def paths(self, sid: str, strict: bool = True) -> dict:
        """Paths of the files of one id. A missing required file raises FileNotFoundError naming it (strict) or
        maps to None; the optional gt_warp and meta are None when absent."""
        out = {key: self._find(folder or self.parse_folder, sid, exts, suffix, required=strict)
               for key, (folder, exts, suffix) in self.FILES.items()}
        out["gt_warp"] = self._find("gt-warp", sid, (".npz",), required=False)
        out["meta"] = self._find("meta", sid, (".json",), required=False)
        return out

    def load(self, sid: str) -> dict:
        """All annotations of one id: image, cloth, cloth_mask, parse, keypoints, garment_mask (+ flow, meta).

        Raises FileNotFoundError naming a missing file, ValueError naming a parse map or mask whose size differs
        from its image, OSError naming an undecodable file.
        """
        p = self.paths(sid)
        out = {
            "id": sid,
            "image": read_rgb(p["image"]),
            "cloth": read_rgb(p["cloth"]),
            "parse": read_parse(p["parse"]),
            "keypoints": read_keypoints(p["keypoints"]),
            "cloth_mask": read_mask(p["cloth_mask"]),
        }
        check_same_size(p["parse"], out["parse"], p["image"], out["image"])
        check_same_size(p["cloth_mask"], out["cloth_mask"], p["cloth"], out["cloth"])
        warp = p["gt_warp"]
        if warp is not None:
            with np.load(warp) as z:
                out["flow"] = z["flow"].astype(np.float32)
                out["garment_mask"] = _mask255(z["garment_mask"] > 0)
            check_same_size(warp, out["flow"], p["image"], out["image"])
        else:
            out["garment_mask"] = _mask255(np.isin(out["parse"], READ_GARMENT_LABELS))
        if p["meta"] is not None:
            out["meta"] = json.loads(p["meta"].read_text())
        return out

    def target_for(self, person_id: str, cloth_id: str) -> str | None:
        """Id of the ground-truth try-on image (person_id's person in cloth_id's garment), if the split has one.

        It exists when both ids share the identity prefix (the part before the last "_"): then image/<cloth_id>
        is that same person wearing that cloth.
        """
        same = person_id.rsplit("_", 1)[0] == cloth_id.rsplit("_", 1)[0]
        return cloth_id if same and cloth_id in self._idset else None
