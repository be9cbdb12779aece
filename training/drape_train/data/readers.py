"""Readers for real data layouts, next to the synthetic one: they all return numpy arrays, RGB uint8 images and
uint8 0/255 masks, so a training view can swap one source for another.

  VitonDataset    VITON-HD / HR-VITON folders (defined in layout.py, re-exported here)
  ItemDataset     the garment-color-correction item layout: <root>/<split>/item_*/{still.jpg, mask_still.png,
                  on_model.jpg, mask_on_model.png}; test items may come without masks. Our generator's extras
                  on_model_true.jpg (the true colour) and degradation.json are read when present.
  CocoGarments    COCO-style instance annotations (Fashionpedia) -> per-instance masks and upper / lower /
                  whole-body garment masks.

Fashionpedia's 46 categories: 13 whole garments (ids 0-12, supercategories upperbody / lowerbody / wholebody), then
accessories and garment parts (sleeve, collar, pocket, ...). A garment's own polygon already covers its parts,
so only the 13 garment categories go into the group masks; parts stay available per instance.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .layout import VitonDataset, check_same_size, read_mask, read_rgb

__all__ = ["FASHIONPEDIA_CATEGORIES", "GARMENT_GROUPS", "CocoGarments", "ItemDataset", "VitonDataset",
           "decode_segmentation", "garment_group"]

# ----------------------------------------------------------------------------------------------- items

ITEM_IMAGES = ("still", "on_model")
ITEM_MASKS = {"still": "mask_still", "on_model": "mask_on_model"}
IMAGE_EXTS = (".jpg", ".jpeg", ".png")


def find_image(folder: Path, stem: str) -> Path | None:
    """folder/stem with any image extension, or None."""
    for ext in IMAGE_EXTS:
        if (folder / f"{stem}{ext}").exists():
            return folder / f"{stem}{ext}"
    return None


def item_splits(root: Path) -> dict[str, Path]:
    """{split name: folder} of the item folders under root: its subfolders holding item_* folders, or root itself."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory")
    if any(d.is_dir() and d.name.startswith("item_") for d in root.iterdir()):
        return {root.name: root}
    return {d.name: d for d in sorted(root.iterdir())
            if d.is_dir() and any(c.is_dir() and c.name.startswith("item_") for c in d.iterdir())}


class ItemDataset:
    """One split of the item layout. `load(i)` -> still, on_model (RGB), mask_still, mask_on_model (0/255 or None
    when the item has no masks), on_model_true (RGB or None) and degradation (dict or None).

    on_model_true present means on_model is a degraded copy and on_model_true the recolor target (our generator);
    absent means on_model is the true photo and training degrades it on the fly (real catalogue data).
    """

    def __init__(self, root, split: str | None = None):
        self.root = Path(root)
        self.dir = self.root / split if split else self.root
        if not self.dir.is_dir():
            raise FileNotFoundError(f"{self.dir} does not exist: expected <root>/<split>/item_*/ folders")
        self.items = sorted(d.name for d in self.dir.iterdir() if d.is_dir() and d.name.startswith("item_"))
        if not self.items:
            raise FileNotFoundError(f"no item_* folders in {self.dir}")

    def __len__(self) -> int:
        return len(self.items)

    def load(self, item: int | str) -> dict:
        """Read one item (by index or folder name). Missing images, undecodable files and masks whose size differs
        from their image raise errors naming the file."""
        name = self.items[item] if isinstance(item, int) else item
        d = self.dir / name
        out: dict = {"id": name}
        for key in ITEM_IMAGES:
            path = find_image(d, key)
            if path is None:
                raise FileNotFoundError(f"missing {d / key}.jpg (item {name!r})")
            out[key] = read_rgb(path)
            mpath = d / f"{ITEM_MASKS[key]}.png"
            out[ITEM_MASKS[key]] = read_mask(mpath) if mpath.exists() else None
            if out[ITEM_MASKS[key]] is not None:
                check_same_size(mpath, out[ITEM_MASKS[key]], path, out[key])
        true_path = find_image(d, "on_model_true")
        out["on_model_true"] = read_rgb(true_path) if true_path else None
        if true_path is not None:
            check_same_size(true_path, out["on_model_true"], find_image(d, "on_model"), out["on_model"])
        deg = d / "degradation.json"
        out["degradation"] = json.loads(deg.read_text()) if deg.exists() else None
        return out

    def has_masks(self, item: int | str) -> bool:
        name = self.items[item] if isinstance(item, int) else item
        return all((self.dir / name / f"{m}.png").exists() for m in ITEM_MASKS.values())


# ----------------------------------------------------------------------------------------------- COCO / Fashionpedia

FASHIONPEDIA_CATEGORIES = (
    "shirt, blouse", "top, t-shirt, sweatshirt", "sweater", "cardigan", "jacket", "vest", "pants", "shorts", "skirt",
    "coat", "dress", "jumpsuit", "cape", "glasses", "hat", "headband, head covering, hair accessory", "tie", "glove",
    "watch", "belt", "leg warmer", "tights, stockings", "sock", "shoe", "bag, wallet", "scarf", "umbrella", "hood",
    "collar", "lapel", "epaulette", "sleeve", "pocket", "neckline", "buckle", "zipper", "applique", "bead", "bow",
    "flower", "fringe", "ribbon", "rivet", "ruffle", "sequin", "tassel",
)  # ids 0..45 in instances_attributes_{train,val}2020.json
GARMENT_GROUPS = {
    "upper": ("shirt, blouse", "top, t-shirt, sweatshirt", "sweater", "cardigan", "jacket", "vest"),
    "lower": ("pants", "shorts", "skirt"),
    "whole": ("coat", "dress", "jumpsuit", "cape"),
}
_GROUP_OF = {name: group for group, names in GARMENT_GROUPS.items() for name in names}


def garment_group(category_name: str) -> str | None:
    """"upper" / "lower" / "whole" for a Fashionpedia garment category name, None for accessories and parts.

    Matched on the normalised name (case, spaces around commas), so "Top, T-Shirt,Sweatshirt" works too.
    """
    key = ", ".join(part.strip() for part in category_name.lower().split(","))
    return _GROUP_OF.get(key)


def decode_segmentation(segm, height: int, width: int) -> np.ndarray:
    """A COCO segmentation (polygon list, uncompressed RLE {counts: [..]} or compressed RLE {counts: "..."}) ->
    bool mask [height, width]. Uses pycocotools, the reference implementation of COCO's RLE and polygon fill."""
    from pycocotools import mask as mask_utils

    if isinstance(segm, list):
        polys = [p for p in segm if len(p) >= 6]  # fewer than 3 points is no area
        if not polys:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
    elif isinstance(segm, dict) and "counts" in segm:
        size = [int(v) for v in segm.get("size", (height, width))]
        if size != [height, width]:
            raise ValueError(f"RLE size {size} does not match the image's {[height, width]} (height, width)")
        if isinstance(segm["counts"], list):
            rle = mask_utils.frPyObjects(segm, height, width)
        else:
            counts = segm["counts"]
            rle = {"size": size, "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise ValueError(f"unknown segmentation format {type(segm).__name__}: expected a polygon list or RLE dict")
    return mask_utils.decode(rle).astype(bool)


class CocoGarments:
    """COCO instance annotations (Fashionpedia's instances_attributes_*.json) over an image folder.

    `load(image_id)` -> image (RGB), masks {"upper", "lower", "whole"} (0/255, the union of that group's
    instances) and instances (category, group, bool mask, bbox) for every annotation, parts included.
    """

    def __init__(self, annotations, images=None):
        self.annotations = Path(annotations)
        try:
            data = json.loads(self.annotations.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"annotation file {self.annotations} does not exist") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{self.annotations}: not valid JSON ({e})") from None
        missing = [k for k in ("images", "annotations", "categories") if k not in data]
        if missing:
            raise ValueError(f"{self.annotations}: not a COCO instances file, missing keys {missing}")
        self.images_dir = Path(images) if images is not None else self.annotations.parent
        self.categories = {c["id"]: c for c in data["categories"]}
        self.images = {im["id"]: im for im in data["images"]}
        self.ids = sorted(self.images)
        self.by_image: dict = {i: [] for i in self.ids}
        self.orphans = []  # annotations whose image_id is not in images (validate reports them)
        for i, ann in enumerate(data["annotations"]):
            lacking = [k for k in ("image_id", "category_id", "segmentation") if k not in ann]
            if lacking:
                raise ValueError(f"{self.annotations}: annotation #{i} (id {ann.get('id')}) lacks {lacking}")
            self.by_image.get(ann["image_id"], self.orphans).append(ann)

    def __len__(self) -> int:
        return len(self.ids)

    def group_of(self, category_id) -> str | None:
        cat = self.categories.get(category_id)
        return garment_group(cat["name"]) if cat else None

    def image_path(self, image_id) -> Path:
        return self.images_dir / self.images[image_id]["file_name"]

    def instances(self, image_id) -> list[dict]:
        """Decoded annotations of one image (no pixels read): category name, group, bool mask, bbox."""
        im = self.images[image_id]
        h, w = int(im["height"]), int(im["width"])
        out = []
        for ann in self.by_image[image_id]:
            cat = self.categories.get(ann["category_id"])
            if cat is None:
                raise ValueError(f"{self.annotations}: annotation {ann.get('id')} of image {image_id} has unknown "
                                 f"category_id {ann['category_id']}")
            try:
                mask = decode_segmentation(ann["segmentation"], h, w)
            except ValueError as e:
                raise ValueError(f"{self.annotations}: annotation {ann.get('id')} of image {image_id}: {e}") from None
            out.append({"id": ann.get("id"), "category": cat["name"], "group": garment_group(cat["name"]),
                        "mask": mask, "bbox": ann.get("bbox"), "iscrowd": bool(ann.get("iscrowd", 0))})
        return out

    def load(self, image_id) -> dict:
        path = self.image_path(image_id)
        if not path.exists():
            raise FileNotFoundError(f"missing image {path} (image id {image_id} of {self.annotations})")
        image = read_rgb(path)
        im = self.images[image_id]
        if image.shape[:2] != (int(im["height"]), int(im["width"])):
            raise ValueError(f"{path} is {image.shape[1]}x{image.shape[0]} but {self.annotations} says "
                             f"{im['width']}x{im['height']} (width x height)")
        inst = self.instances(image_id)
        masks = {}
        for group in GARMENT_GROUPS:
            m = np.zeros(image.shape[:2], bool)
            for i in inst:
                if i["group"] == group:
                    m |= i["mask"]
            masks[group] = m.astype(np.uint8) * 255
        return {"id": image_id, "file_name": im["file_name"], "image": image, "masks": masks, "instances": inst}
