"""Readers of real data layouts (VITON-HD / HR-VITON, garment-color-correction items, COCO / Fashionpedia) and
the `validate` command, on small fixtures built here the way the real datasets lay their files out."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from drape_train.data.__main__ import main
from drape_train.data.layout import VitonDataset, write_parse
from drape_train.data.readers import (FASHIONPEDIA_CATEGORIES, CocoGarments, ItemDataset, decode_segmentation,
                                      garment_group)
from drape_train.data.validate import validate

H, W = 64, 48


def _photo(seed: int, h: int = H, w: int = W) -> np.ndarray:
    """A smooth random picture (JPEG-friendly, so decoded sizes and rough colours are stable)."""
    small = np.random.default_rng(seed).integers(0, 256, (4, 3, 3)).astype(np.uint8)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _write_rgb(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1])


def _parse(h: int = H, w: int = W) -> np.ndarray:
    """A VITON-HD style parse: background, hair, face, neck (label 10, as in image-parse-v3), upper clothes, pants."""
    p = np.zeros((h, w), np.uint8)
    p[2:10, 18:30] = 2
    p[5:14, 19:29] = 13
    p[14:17, 21:27] = 10
    p[17:36, 12:36] = 5
    p[36:60, 14:34] = 9
    return p


def _body25(seed: int) -> list[float]:
    kp = np.zeros((25, 3))
    kp[:, 0] = np.arange(25) + seed
    kp[:, 1] = 2 * np.arange(25)
    kp[:, 2] = 0.9
    return kp.ravel().round(3).tolist()


def _viton_hd(root):
    """Two splits as the VITON-HD zip has them: pairs files at the root, cloth-mask as .jpg, palette parses,
    BODY_25 OpenPose json, folders the reader does not use, and no gt-warp/, meta/ or dataset.json."""
    splits = {"train": ["00891_00", "01234_00"], "test": ["05006_00", "11001_00"]}
    for split, ids in splits.items():
        d = root / split
        for k, sid in enumerate(ids):
            _write_rgb(d / "image" / f"{sid}.jpg", _photo(k))
            _write_rgb(d / "cloth" / f"{sid}.jpg", _photo(10 + k))
            mask = np.zeros((H, W), np.uint8)
            mask[8:56, 6:42] = 255
            (d / "cloth-mask").mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(d / "cloth-mask" / f"{sid}.jpg"), mask)
            (d / "image-parse-v3").mkdir(parents=True, exist_ok=True)
            write_parse(d / "image-parse-v3" / f"{sid}.png", _parse())
            (d / "openpose_json").mkdir(parents=True, exist_ok=True)
            (d / "openpose_json" / f"{sid}_keypoints.json").write_text(json.dumps(
                {"version": 1.3, "people": [{"person_id": [-1], "pose_keypoints_2d": _body25(k)}]}))
            _write_rgb(d / "openpose_img" / f"{sid}_rendered.png", _photo(20 + k))
            _write_rgb(d / "agnostic-v3.2" / f"{sid}.jpg", _photo(30 + k))
    (root / "train_pairs.txt").write_text("00891_00.jpg 00891_00.jpg\n01234_00.jpg 01234_00.jpg\n")
    (root / "test_pairs.txt").write_text("05006_00.jpg 11001_00.jpg\n11001_00.jpg 05006_00.jpg\n")
    return splits


@pytest.fixture
def viton(tmp_path):
    root = tmp_path / "zalando-hd-resized"
    _viton_hd(root)
    return root


# ----------------------------------------------------------------------------------------------- VITON-HD

def test_viton_hd_layout_loads(viton):
    ds = VitonDataset(viton, "train")
    assert ds.ids == ["00891_00", "01234_00"] and ds.info == {}
    assert ds.pairs == [("00891_00", "00891_00"), ("01234_00", "01234_00")]
    assert ds.target_for("00891_00", "00891_00") == "00891_00"          # paired: the photo is its own target
    test = VitonDataset(viton, "test")
    assert test.pairs[0] == ("05006_00", "11001_00") and test.target_for(*test.pairs[0]) is None

    s = ds.load("01234_00")
    assert {"image", "cloth", "cloth_mask", "parse", "keypoints", "garment_mask"} <= set(s)
    assert "flow" not in s and "meta" not in s
    assert s["image"].shape == s["cloth"].shape == (H, W, 3) and s["image"].dtype == np.uint8
    np.testing.assert_array_equal(s["parse"], _parse())                  # palette PNG -> label ids, neck 10 kept
    np.testing.assert_array_equal(s["garment_mask"], (_parse() == 5).astype(np.uint8) * 255)
    expected = np.zeros((H, W), np.uint8)
    expected[8:56, 6:42] = 255
    assert set(np.unique(s["cloth_mask"])) == {0, 255}
    assert (s["cloth_mask"] == expected).mean() > 0.99                   # .jpg mask, thresholded
    body25 = np.asarray(_body25(1)).reshape(25, 3)
    assert s["keypoints"].shape == (18, 3)
    np.testing.assert_allclose(s["keypoints"][:8], body25[:8])           # nose .. left wrist
    np.testing.assert_allclose(s["keypoints"][8], body25[9])             # RHip (BODY_25 8 is MidHip)
    np.testing.assert_allclose(s["keypoints"][17], body25[18])           # LEar


def test_lead_training_views_read_real_layout(viton):
    """The per-network torch views the trainer uses work on real VITON-HD folders (no GT warps there)."""
    from drape_train.datasets import NetworkDataset

    for network in ("garment_seg", "human_parsing", "gmm", "recolor"):
        item = NetworkDataset(str(viton), "train", network)[0]
        assert all(v.shape[-2:] == (H, W) for v in item.values()), network


def test_viton_older_variants(viton):
    """CP-VTON era data: an image-parse folder instead of image-parse-v3, and 'pose_keypoints' json."""
    d = viton / "train"
    (d / "image-parse-v3").rename(d / "image-parse")
    kp = d / "openpose_json" / "00891_00_keypoints.json"
    kp.write_text(json.dumps({"people": [{"pose_keypoints": _body25(0)}]}))
    ds = VitonDataset(viton, "train")
    assert ds.parse_folder == "image-parse"
    s = ds.load("00891_00")
    np.testing.assert_array_equal(s["parse"], _parse())
    assert s["keypoints"][0, 2] == pytest.approx(0.9)
    kp.write_text(json.dumps({"people": [{"face_keypoints_2d": []}]}))
    with pytest.raises(ValueError, match="00891_00_keypoints.json.*pose_keypoints"):
        ds.load("00891_00")


def test_validate_viton_clean(viton, capsys):
    rep = validate("viton", viton, progress=False)
    assert rep.ok, rep.errors
    assert rep.counts["train"]["pairs with target"] == 2 and rep.counts["test"]["pairs with target"] == 0
    assert rep.counts["train"]["complete ids"] == 2 and rep.counts["train"]["parse"] == "image-parse-v3"
    assert rep.counts["train"]["gt-warp"] is False
    assert main(["validate", "--layout", "viton", "--root", str(viton), "--quiet"]) == 0
    assert "OK" in capsys.readouterr().out


def test_validate_viton_catches_missing_mask_and_wrong_size_parse(viton, capsys):
    d = viton / "train"
    (d / "cloth-mask" / "01234_00.jpg").unlink()
    write_parse(d / "image-parse-v3" / "00891_00.png", cv2.resize(_parse(), (W // 2, H // 2),
                                                                   interpolation=cv2.INTER_NEAREST))
    bad = _parse()
    bad[0, 0] = 25
    write_parse(viton / "test" / "image-parse-v3" / "05006_00.png", bad)
    cv2.imwrite(str(viton / "test" / "cloth-mask" / "11001_00.jpg"), np.zeros((H, W), np.uint8))
    (viton / "test_pairs.txt").write_text("05006_00.jpg 99999_00.jpg\n")

    rep = validate("viton", viton, progress=False)
    problems = {(i.where.split("zalando-hd-resized/")[-1], i.problem) for i in rep.errors}
    assert ("train/cloth-mask/01234_00.png", "missing cloth mask of id '01234_00'") in problems
    assert ("train/image-parse-v3/00891_00.png", "parse map size 24x32 != image size 48x64") in problems
    assert any(w.endswith("test/image-parse-v3/05006_00.png") and "[25] outside the LIP range" in p
               for w, p in problems)
    assert any(w.endswith("test/cloth-mask/11001_00.jpg") and "empty" in p for w, p in problems)
    assert any(w.endswith("test_pairs.txt") and "'99999_00'" in p for w, p in problems)
    assert len(rep.errors) == 5

    assert main(["validate", "--layout", "viton", "--root", str(viton), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "5 errors" in out

    # the reader itself refuses the mismatched parse, naming both files
    with pytest.raises(ValueError, match=r"image-parse-v3/00891_00.png is 24x32 but .*image/00891_00.jpg is 48x64"):
        VitonDataset(viton, "train").load("00891_00")
    with pytest.raises(FileNotFoundError, match="cloth-mask/01234_00"):
        VitonDataset(viton, "train").load("01234_00")


def test_validate_viton_reports_an_empty_root(tmp_path):
    rep = validate("viton", tmp_path, progress=False)
    assert not rep.ok and "no <split>/image folder" in rep.errors[0].problem


# ----------------------------------------------------------------------------------------------- items

def _items(root):
    """garment-color-correction layout: train items with masks, a test item without (stills may differ in size)."""
    for name, seed in (("item_001", 1), ("item_002", 2)):
        d = root / "train" / name
        _write_rgb(d / "still.jpg", _photo(seed, 60, 60))
        _write_rgb(d / "on_model.jpg", _photo(seed + 50))
        m = np.zeros((60, 60), np.uint8)
        m[10:50, 12:48] = 255
        cv2.imwrite(str(d / "mask_still.png"), m)
        cv2.imwrite(str(d / "mask_on_model.png"), (_parse() == 5).astype(np.uint8) * 255)
    d = root / "test" / "item_100"
    _write_rgb(d / "still.jpg", _photo(7, 60, 60))
    _write_rgb(d / "on_model.jpg", _photo(8))


def test_items_layout_loads(tmp_path):
    _items(tmp_path)
    train = ItemDataset(tmp_path, "train")
    assert train.items == ["item_001", "item_002"] and train.has_masks(0)
    it = train.load(1)
    assert it["still"].shape == (60, 60, 3) and it["on_model"].shape == (H, W, 3)
    np.testing.assert_array_equal(it["mask_on_model"], (_parse() == 5).astype(np.uint8) * 255)
    assert it["mask_still"].shape == (60, 60) and it["mask_still"][30, 30] == 255 and it["mask_still"][0, 0] == 0
    assert it["on_model_true"] is None and it["degradation"] is None
    test = ItemDataset(tmp_path, "test")
    t = test.load("item_100")
    assert t["mask_still"] is None and t["mask_on_model"] is None and not test.has_masks(0)
    with pytest.raises(FileNotFoundError, match="val"):
        ItemDataset(tmp_path, "val")


def test_validate_items_catches_missing_and_mismatched_masks(tmp_path, capsys):
    _items(tmp_path)
    rep = validate("items", tmp_path, progress=False)
    assert rep.ok and rep.counts["test"] == {"items": 1, "with masks": 0, "without masks": 1, "with true colour": 0}

    (tmp_path / "train" / "item_002" / "mask_on_model.png").unlink()
    cv2.imwrite(str(tmp_path / "train" / "item_001" / "mask_still.png"), np.full((30, 30), 255, np.uint8))
    cv2.imwrite(str(tmp_path / "test" / "item_100" / "mask_still.png"), np.full((60, 60), 255, np.uint8))
    rep = validate("items", tmp_path, progress=False)
    errors = {(i.where.split(tmp_path.name + "/")[-1], i.problem) for i in rep.errors}
    assert errors == {("train/item_002/mask_on_model.png", "missing mask"),
                      ("train/item_001/mask_still.png", "mask_still size 30x30 != still.jpg size 60x60")}
    assert [i.where.endswith("test/item_100/mask_on_model.png") for i in rep.issues if i.severity == "warning"] \
        == [True]                                                      # test: one mask of two is only a warning
    assert main(["validate", "--layout", "items", "--root", str(tmp_path), "--quiet"]) == 1
    assert "missing mask" in capsys.readouterr().out
    with pytest.raises(ValueError, match="mask_still.png is 30x30 but .*still.jpg is 60x60"):
        ItemDataset(tmp_path, "train").load("item_001")


# ----------------------------------------------------------------------------------------------- COCO

def _rle_counts(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE, written out by hand: run lengths over the column-major (Fortran) pixel order,
    starting with a run of zeros."""
    flat = mask.T.ravel().astype(np.uint8)
    counts, current, run = [], 0, 0
    for v in flat:
        if v != current:
            counts.append(run)
            current, run = v, 0
        run += 1
    counts.append(run)
    return counts


def _coco(root, broken: bool = False):
    from pycocotools import mask as mask_utils

    _write_rgb(root / "images" / "a.jpg", _photo(1, 40, 60))
    _write_rgb(root / "images" / "b.jpg", _photo(2, 50, 30))
    pants = np.zeros((40, 60), np.uint8)
    pants[26:38, 15:25] = 1
    dress = np.zeros((50, 30), np.uint8)
    cv2.ellipse(dress, (15, 25), (10, 20), 0, 0, 360, 1, -1)
    dress_rle = mask_utils.encode(np.asfortranarray(dress))
    cats = [{"id": 0, "name": "shirt, blouse", "supercategory": "upperbody"},
            {"id": 1, "name": "top, t-shirt, sweatshirt", "supercategory": "upperbody"},
            {"id": 6, "name": "pants", "supercategory": "lowerbody"},
            {"id": 10, "name": "dress", "supercategory": "wholebody"},
            {"id": 31, "name": "sleeve", "supercategory": "garment parts"}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "segmentation": [[10, 5, 30, 5, 30, 25, 10, 25]],
         "bbox": [10, 5, 20, 20], "iscrowd": 0, "area": 400},
        {"id": 2, "image_id": 1, "category_id": 6, "segmentation": {"counts": _rle_counts(pants), "size": [40, 60]},
         "bbox": [15, 26, 10, 12], "iscrowd": 1, "area": 120},
        {"id": 3, "image_id": 2, "category_id": 10,
         "segmentation": {"counts": dress_rle["counts"].decode(), "size": [50, 30]}, "bbox": [5, 5, 20, 40],
         "iscrowd": 0},
        {"id": 4, "image_id": 1, "category_id": 31, "segmentation": [[25, 8, 35, 8, 35, 18, 25, 18]],
         "bbox": [25, 8, 10, 10], "iscrowd": 0},
    ]
    images = [{"id": 1, "file_name": "a.jpg", "height": 40, "width": 60},
              {"id": 2, "file_name": "b.jpg", "height": 50, "width": 30}]
    if broken:
        images[1]["height"] = 55                                             # declared size != file
        images.append({"id": 3, "file_name": "missing.jpg", "height": 10, "width": 10})
        anns += [{"id": 5, "image_id": 1, "category_id": 0, "segmentation": [[5, 5, 5, 5, 5, 5]],   # no area
                  "bbox": [5, 5, 0, 0]},
                 {"id": 6, "image_id": 1, "category_id": 99, "segmentation": [[1, 1, 9, 1, 9, 9]],
                  "bbox": [1, 1, 8, 8]}]
    path = root / "instances_attributes_val2020.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path, pants.astype(bool), dress.astype(bool)


def test_fashionpedia_groups():
    assert len(FASHIONPEDIA_CATEGORIES) == 46 and FASHIONPEDIA_CATEGORIES[10] == "dress"
    upper = ["shirt, blouse", "top, t-shirt, sweatshirt", "sweater", "cardigan", "jacket", "vest"]
    assert [garment_group(n) for n in upper] == ["upper"] * 6
    assert [garment_group(n) for n in ("pants", "shorts", "skirt")] == ["lower"] * 3
    assert [garment_group(n) for n in ("coat", "dress", "jumpsuit", "cape")] == ["whole"] * 4
    others = [n for n in FASHIONPEDIA_CATEGORIES if garment_group(n) is None]
    assert len(others) == 33 and {"sleeve", "collar", "shoe", "bag, wallet", "tights, stockings"} <= set(others)
    assert garment_group("Top,T-Shirt , sweatshirt") == "upper"


def test_coco_reader_decodes_polygons_and_both_rles(tmp_path):
    ann, pants, dress = _coco(tmp_path)
    ds = CocoGarments(ann, tmp_path / "images")
    assert ds.ids == [1, 2]
    a = ds.load(1)
    upper = np.zeros((40, 60), np.uint8)
    upper[5:25, 10:30] = 255                                  # the polygon's 20x20 pixels
    np.testing.assert_array_equal(a["masks"]["upper"], upper)
    np.testing.assert_array_equal(a["masks"]["lower"] > 0, pants)
    assert not a["masks"]["whole"].any()
    sleeve = [i for i in a["instances"] if i["category"] == "sleeve"]
    assert len(a["instances"]) == 3 and sleeve[0]["group"] is None and sleeve[0]["mask"].sum() == 100
    b = ds.load(2)
    np.testing.assert_array_equal(b["masks"]["whole"] > 0, dress)
    assert b["image"].shape == (50, 30, 3)
    with pytest.raises(ValueError, match="RLE size"):
        decode_segmentation({"counts": [0, 4], "size": [2, 2]}, 3, 3)


def test_validate_coco(tmp_path, capsys):
    ann, _, _ = _coco(tmp_path)
    rep = validate("coco", tmp_path / "images", annotations=ann, progress=False)
    assert rep.ok, rep.errors
    c = rep.counts["all"]
    assert (c["images"], c["annotations"], c["upper instances"], c["lower instances"], c["whole-body instances"],
            c["other instances (parts, accessories)"]) == (2, 4, 1, 1, 1, 1)

    broken = tmp_path / "broken"
    shutil.copytree(tmp_path / "images", broken / "images")
    ann, _, _ = _coco(broken, broken=True)
    rep = validate("coco", broken / "images", annotations=ann, progress=False)
    problems = [i.problem for i in rep.errors]
    assert "image is 30x50 but the annotations say 30x55" in problems
    assert any("missing image" in p for p in problems) and "empty mask" in problems
    assert "unknown category_id 99" in problems
    assert any("RLE size [50, 30] does not match the image's [55, 30]" in p for p in problems)  # the dress's RLE
    assert len(problems) == 5
    args = ["validate", "--layout", "coco", "--root", str(broken / "images"), "--annotations", str(ann), "--quiet"]
    assert main(args) == 1
    assert "5 errors" in capsys.readouterr().out
