"""Procedural try-on data: renderer invariants, the VITON-HD layout round trip, degradations, CLI."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from drape_train.data.degrade import MODES, degrade
from drape_train.data.layout import VitonDataset, pair_seed, write_dataset
from drape_train.data.synth import (FLOW_INVALID, GARMENT_LABELS, LIP_LABELS, LIP_PALETTE, render_pair, warp_cloth)

SEEDS = range(6)
ARRAYS = ("image", "parse", "cloth", "cloth_mask", "garment_mask", "flow", "keypoints", "shading")


@pytest.fixture(scope="module")
def pairs():
    return {s: render_pair(s) for s in SEEDS}


def _samples(pairs):
    return [s for a, b in pairs.values() for s in (a, b)]


def _flow_error(sample, cloth=None):
    """|still warped by the GT flow x shading - person| over the visible garment (uint8 units)."""
    cloth = sample.cloth if cloth is None else cloth
    warped = warp_cloth(cloth.astype(np.float32), sample.flow) * sample.shading[..., None]
    return np.abs(warped - sample.image)[sample.garment_mask > 0]


# ----------------------------------------------------------------------------------------------- renderer

def test_lip_tables():
    assert len(LIP_LABELS) == 20 and LIP_LABELS[5] == "Upper-clothes" and LIP_LABELS[19] == "Right-shoe"
    assert LIP_PALETTE.shape == (20, 3) and LIP_PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in LIP_PALETTE}) == 20


def test_deterministic_and_seed_sensitive(pairs):
    again = render_pair(3)
    for ref, new in zip(pairs[3], again):
        for name in ARRAYS:
            x, y = getattr(ref, name), getattr(new, name)
            assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), name
    other = pairs[4][0]
    assert np.abs(pairs[3][0].image.astype(int) - other.image).mean() > 5
    assert not np.array_equal(pairs[3][0].parse, other.parse)


def test_shapes_labels_and_masks(pairs):
    for s in _samples(pairs):
        h, w = s.parse.shape
        assert (h, w) == (256, 192)
        assert s.image.shape == s.cloth.shape == (h, w, 3) and s.image.dtype == np.uint8
        assert s.parse.dtype == np.uint8 and s.parse.max() < len(LIP_LABELS)
        assert set(np.unique(s.cloth_mask)) <= {0, 255} and set(np.unique(s.garment_mask)) <= {0, 255}
        garment = np.isin(s.parse, GARMENT_LABELS)
        assert np.array_equal(garment, s.garment_mask > 0)
        expected = 6 if s.garment_type == "dress" else 5
        assert set(np.unique(s.parse[garment])) == {expected}
        assert 0.02 < garment.mean() < 0.3 and 0.2 < (s.cloth_mask > 0).mean() < 0.8
        for label in (2, 13, 14, 15, 18, 19):  # hair, face, both arms, both shoes always visible
            assert (s.parse == label).any(), LIP_LABELS[label]
        assert s.flow.shape == (h, w, 2) and s.flow.dtype == np.float32
        assert np.all(np.abs(s.flow[garment]) <= 1.0) and np.all(s.flow[~garment] == FLOW_INVALID)
        kp = s.keypoints
        assert kp.shape == (18, 3) and kp.dtype == np.float32
        assert np.all((kp[:, 0] >= 0) & (kp[:, 0] < w) & (kp[:, 1] >= 0) & (kp[:, 1] < h))
        assert kp[2, 0] < kp[5, 0] and kp[14, 0] < kp[15, 0], "R* keypoints are on the image left"
        assert kp[0, 1] < kp[1, 1] < kp[8, 1] < kp[9, 1] < kp[10, 1], "nose above neck above hip, knee, ankle"


def test_garment_pixels_sit_where_the_garment_is_drawn(pairs):
    """The parse is what was drawn: garment pixels carry the cloth's colours, skin pixels the skin colour."""
    for s in _samples(pairs):
        garment = s.garment_mask > 0
        albedo = s.image / np.maximum(s.shading, 1e-3)[..., None]
        cloth_colours = s.cloth[s.cloth_mask > 0].reshape(-1, 3).astype(np.float32)
        sample = albedo[garment][:: max(1, garment.sum() // 200)]
        nearest = np.min(np.abs(sample[:, None] - cloth_colours[None, ::7]).sum(-1), axis=1)
        assert np.median(nearest) < 6


def test_gt_flow_reproduces_visible_garment(pairs):
    kinds = set()
    for s in _samples(pairs):
        kinds.add(s.garment_type)
        err = _flow_error(s)
        assert err.mean() < 0.6 and np.percentile(err, 99.5) < 2.0, s.garment_type
    assert len(kinds) >= 3, f"seeds should cover several garment types, got {kinds}"
    a, b = pairs[0]  # negative control: the other garment's still does not fit this flow
    assert _flow_error(a, cloth=b.cloth).mean() > 10


def test_flow_is_grid_sample_convention(pairs):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    s = pairs[1][0]
    cloth = torch.from_numpy(s.cloth).permute(2, 0, 1)[None].float()
    grid = torch.from_numpy(s.flow)[None]
    warped = F.grid_sample(cloth, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    warped = warped[0].permute(1, 2, 0).numpy() * s.shading[..., None]
    err = np.abs(warped - s.image)[s.garment_mask > 0]
    assert err.mean() < 0.6 and np.percentile(err, 99.5) < 2.0


def test_pair_shares_identity_but_not_garment(pairs):
    for a, b in pairs.values():
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        same = (a.parse == b.parse) & ~np.isin(a.parse, GARMENT_LABELS)
        assert same.mean() > 0.7
        np.testing.assert_array_equal(a.image[same], b.image[same])  # background, face, hair, lower body
        face = (a.parse == 13) & (b.parse == 13)
        assert face.sum() > 100
        assert a.garment_rgb != b.garment_rgb
        assert a.garment_type != b.garment_type or a.meta["texture"] != b.meta["texture"]
        assert np.abs(a.cloth.astype(int) - b.cloth).mean() > 10


def test_occluding_arms_are_in_front_of_the_garment():
    """A forearm bent across the torso hides garment: arm pixels with garment on both sides of them."""
    def enclosed_arm_pixels(parse, k=5):
        g = np.isin(parse, GARMENT_LABELS)
        flanked = (np.roll(g, k, 0) & np.roll(g, -k, 0)) | (np.roll(g, k, 1) & np.roll(g, -k, 1))
        return (np.isin(parse, (14, 15)) & flanked).sum()

    front, side = [], []
    for seed in range(24):
        a, _ = render_pair(seed, 128, 96)
        (front if "front" in a.meta["pose"] else side if "hip" not in a.meta["pose"] else []).append(
            enclosed_arm_pixels(a.parse))
    assert len(front) >= 3 and len(side) >= 3
    assert min(front) > 20 > max(side)


@pytest.mark.parametrize("size", [(512, 384), (1024, 768)])
def test_other_resolutions_render_the_same_scene(size):
    h, w = size
    small, big = render_pair(5)[1], render_pair(5, h, w)[1]
    f = h / 256
    assert big.image.shape == (h, w, 3) and big.flow.shape == (h, w, 2)
    np.testing.assert_allclose(big.keypoints[:, :2], small.keypoints[:, :2] * f, atol=1e-2)
    down = cv2.resize(big.parse, (192, 256), interpolation=cv2.INTER_NEAREST)
    assert (down == small.parse).mean() > 0.97
    err = _flow_error(big)
    assert err.mean() < 0.6 and np.percentile(err, 99.5) < 2.0


# ----------------------------------------------------------------------------------------------- layout

def test_write_read_round_trip(tmp_path):
    info = write_dataset(tmp_path, {"train": 2, "val": 1}, seed=3, height=128, width=96, workers=1, progress=False)
    assert info["pairs"] == {"train": 2, "val": 1, "test": 0}
    assert json.loads((tmp_path / "dataset.json").read_text())["height"] == 128

    ds = VitonDataset(tmp_path, "train")
    assert ds.ids == ["00000_0", "00000_1", "00001_0", "00001_1"]
    assert ds.pairs == [("00000_0", "00000_1"), ("00000_1", "00000_0"), ("00001_0", "00001_1"),
                        ("00001_1", "00001_0")]
    assert ds.target_for("00000_0", "00000_1") == "00000_1"
    assert ds.target_for("00000_0", "00001_1") is None

    ref = render_pair(pair_seed(3, "train", 1), 128, 96)[1]
    got = ds.load("00001_1")
    np.testing.assert_array_equal(got["parse"], ref.parse)
    np.testing.assert_array_equal(got["cloth_mask"], ref.cloth_mask)  # uint8 0/255, like Sample
    np.testing.assert_array_equal(got["garment_mask"], ref.garment_mask)
    np.testing.assert_allclose(got["keypoints"], ref.keypoints, atol=1e-3)
    np.testing.assert_allclose(got["flow"], ref.flow, atol=2e-3)
    assert np.abs(got["image"].astype(int) - ref.image).mean() < 3  # JPEG 95
    assert got["meta"]["garment_type"] == ref.garment_type

    png = Image.open(tmp_path / "train" / "image-parse-v3" / "00001_1.png")
    assert png.mode == "P"
    assert np.array_equal(np.array(png.getpalette()[:60], np.uint8).reshape(20, 3), LIP_PALETTE)
    pose = json.loads((tmp_path / "train" / "openpose_json" / "00001_1_keypoints.json").read_text())
    assert pose["version"] == 1.3 and len(pose["people"][0]["pose_keypoints_2d"]) == 54

    # real VITON-HD ships cloth-mask as .jpg: read that too, thresholded
    mask_png = tmp_path / "train" / "cloth-mask" / "00001_1.png"
    cv2.imwrite(str(mask_png.with_suffix(".jpg")), cv2.imread(str(mask_png), cv2.IMREAD_GRAYSCALE))
    mask_png.unlink()
    assert (ds.load("00001_1")["cloth_mask"] == ref.cloth_mask).mean() > 0.99

    (tmp_path / "train" / "openpose_json" / "00000_0_keypoints.json").unlink()
    with pytest.raises(FileNotFoundError, match="openpose_json.*00000_0_keypoints"):
        ds.load("00000_0")
    assert VitonDataset(tmp_path, "test").ids == []

    # a rerun with fewer pairs leaves no stale ids behind
    write_dataset(tmp_path, {"train": 1}, seed=3, height=64, width=48, workers=1, progress=False)
    assert VitonDataset(tmp_path, "train").ids == ["00000_0", "00000_1"]
    assert json.loads((tmp_path / "dataset.json").read_text())["complete"] is True


def test_never_overwrites_data_it_did_not_write(tmp_path):
    (tmp_path / "train" / "image").mkdir(parents=True)
    (tmp_path / "train" / "image" / "00891_00.jpg").write_bytes(b"real data")
    with pytest.raises(FileExistsError, match="dataset.json"):
        write_dataset(tmp_path, {"train": 1}, height=64, width=48, progress=False)
    assert (tmp_path / "train" / "image" / "00891_00.jpg").read_bytes() == b"real data"


def test_splits_never_share_seeds():
    seeds = {pair_seed(0, split, k) for split in ("train", "val", "test") for k in range(1000)}
    assert len(seeds) == 3000
    assert pair_seed(1, "train", 0) not in {pair_seed(0, s, k) for s in ("train", "val", "test") for k in range(99)}


def test_output_does_not_depend_on_worker_count(tmp_path):
    counts = {"train": 2, "val": 1}
    write_dataset(tmp_path / "one", counts, seed=1, height=64, width=48, workers=1, progress=False)
    write_dataset(tmp_path / "two", counts, seed=1, height=64, width=48, workers=2, progress=False)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    assert len(files) == 3 + 6 * 7 + 1  # 3 pairs files, 6 samples x 7 files, dataset.json
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f


# ----------------------------------------------------------------------------------------------- degradations

@pytest.mark.parametrize("mode", MODES)
def test_degrade_changes_only_inside_mask(pairs, mode):
    s = pairs[2][0]
    inside = s.garment_mask > 0
    out = degrade(s.image, s.garment_mask, np.random.default_rng(0), mode, 0.1)
    assert out.dtype == np.uint8 and out.shape == s.image.shape
    np.testing.assert_array_equal(out[~inside], s.image[~inside])
    assert np.abs(out[inside].astype(int) - s.image[inside]).mean() > 1.0
    again = degrade(s.image, inside, np.random.default_rng(0), mode, 0.1)  # bool mask, same seed
    np.testing.assert_array_equal(out, again)
    stronger = degrade(s.image, s.garment_mask, np.random.default_rng(0), mode, 0.3)
    assert np.abs(stronger[inside].astype(int) - s.image[inside]).mean() > \
        np.abs(out[inside].astype(int) - s.image[inside]).mean()


def test_degrade_rejects_unknown_mode(pairs):
    s = pairs[0][0]
    with pytest.raises(ValueError, match="mode"):
        degrade(s.image, s.garment_mask, np.random.default_rng(0), "hsl", 0.1)


# ----------------------------------------------------------------------------------------------- CLI

def test_cli_generate_and_sheet(tmp_path, capsys):
    from drape_train.data.__main__ import main

    out = tmp_path / "synth"
    assert main(["generate", "--out", str(out), "--train", "1", "--val", "2", "--test", "0", "--height", "64",
                 "--width", "48", "--workers", "1", "--quiet"]) == 0
    assert (out / "val_pairs.txt").read_text().count("\n") == 4
    sheet = tmp_path / "sheet.png"
    assert main(["sheet", "--root", str(out), "--split", "val", "--n", "3", "--tile-height", "64",
                 "--out", str(sheet)]) == 0
    img = cv2.imread(str(sheet))
    assert img.shape == (3 * 64, 5 * 48, 3)
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "VITON-HD" in capsys.readouterr().out
