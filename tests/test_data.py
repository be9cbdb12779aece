"""Procedural try-on data: renderer invariants, looks (textures, prints, folds, backgrounds), the VITON-HD layout
round trip, recolor items, degradations, CLI."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from drape_core.colour import delta_e_2000, rgb_to_lab
from drape_train.data import synth
from drape_train.data.degrade import BASIC_MODES, MODES, apply, degrade, measure_scale, sample_params
from drape_train.data.layout import RECOLOR_JPEG, VitonDataset, measure_storage, pair_seed, write_dataset
from drape_train.data.readers import ItemDataset
from drape_train.data.synth import (BACKGROUNDS, FLOW_INVALID, GARMENT_LABELS, LIP_LABELS, LIP_PALETTE, PRINTS,
                                    TEXTURES, render_pair, warp_cloth)

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


# ----------------------------------------------------------------------------------------------- looks

@pytest.fixture(scope="module")
def many():
    """Garment A of 60 scenes at a small size: enough to see every texture, print kind and background."""
    return [render_pair(seed, 128, 96)[0] for seed in range(60)]


def test_every_texture_print_and_background_occurs(many):
    seen = {key: {s.meta[key] for s in many} for key in ("texture", "print", "background")}
    assert seen["texture"] == set(TEXTURES)
    assert seen["print"] == set(PRINTS) | {"none"}
    assert seen["background"] == set(BACKGROUNDS)


def _still_colours(s) -> int:
    """Distinct colours of the still's garment pixels (the still is written exactly, no noise or blur)."""
    return len(np.unique(s.cloth[s.cloth_mask > 0].reshape(-1, 3), axis=0))


def test_still_colours_follow_texture_and_print(many):
    """Solid: main colour, its tone for the inside of the back and the neckline band (<= 3 colours); a print
    adds its own colour and tones; a gradient is a continuum."""
    checked = {"solid": 0, "solid+print": 0, "gradient": 0}
    for s in many:
        n = _still_colours(s)
        if s.meta["texture"] == "solid" and s.meta["print"] == "none":
            assert n <= 3, n
            checked["solid"] += 1
        elif s.meta["texture"] == "solid":
            assert 3 < n <= 6, n
            checked["solid+print"] += 1
        elif s.meta["texture"] == "gradient":
            assert n > 40, n
            checked["gradient"] += 1
    assert min(checked.values()) >= 1, checked


def test_folds_only_darken_the_garment(monkeypatch):
    """Same scenes rendered without folds (same random draws): folds shade the garment only, never brighten it,
    and the GT relation image = warped still x shading still holds with them."""
    with_folds = [render_pair(seed, 128, 96) for seed in range(4)]
    real = synth.garments._sample_folds
    monkeypatch.setattr(synth.garments, "_sample_folds", lambda *a: real(*a)[:0])
    without = [render_pair(seed, 128, 96) for seed in range(4)]
    deepest = 1.0
    for pa, pb in zip(with_folds, without):
        for a, b in zip(pa, pb):
            garment = a.garment_mask > 0
            np.testing.assert_array_equal(a.parse, b.parse)
            np.testing.assert_array_equal(a.shading[~garment], b.shading[~garment])
            ratio = a.shading[garment] / b.shading[garment]
            assert ratio.max() <= 1 + 1e-6
            deepest = min(deepest, float(ratio.min()))
            assert a.meta["folds"] >= 2
    assert deepest < 0.93


def test_backgrounds_are_albedo_only(many):
    """Whatever the backdrop, its pixels stay label 0; flat ones are one colour, the others vary."""
    for s in many:
        bg = (s.parse == 0) & (s.shading > 0.999)     # away from the contact shadow
        albedo = s.image[bg].astype(np.float32)
        spread = albedo.std(0).max()
        if s.meta["background"] == "flat":
            assert spread < 1.0
        else:
            assert spread > 1.5, s.meta["background"]
    cluttered = [s for s in many if s.meta["background"] == "cluttered"]
    studio = [s for s in many if s.meta["background"] == "studio"]
    def colours(s):
        return len(np.unique(s.image[(s.parse == 0) & (s.shading == 1.0)], axis=0))

    assert max(colours(s) for s in studio) <= 2                 # wall and floor
    assert min(colours(s) for s in cluttered) >= 5              # and furniture in front of them


def test_fold_shading_profile():
    fold = np.array([[0.0, 0.0, 1.0, 0.0, 0.05, 0.2]], np.float32)   # along x from 0 to 1, 0.2 deep
    x = np.array([0.5, 0.0, 1.0, 0.5, 0.5], np.float32)
    y = np.array([0.0, 0.0, 0.0, 0.05, 0.5], np.float32)
    np.testing.assert_allclose(synth.fold_shading(fold, x, y), [0.8, 1.0, 1.0, 1 - 0.2 * np.exp(-1), 1.0],
                               atol=1e-6)


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
    assert np.abs(got["image"].astype(int) - ref.image).mean() < 1  # JPEG 98, 4:4:4
    inside = ref.garment_mask > 0   # no chroma subsampling: the garment's colours survive storage
    assert delta_e_2000(rgb_to_lab(got["image"][inside]), rgb_to_lab(ref.image[inside])).mean() < 1.5
    assert json.loads((tmp_path / "dataset.json").read_text())["jpeg"] == {"quality": 98, "chroma_subsampling": "4:4:4"}
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


def test_studio_storage_is_as_faithful_as_the_real_data_path():
    """The JPEG setting the studio writes puts no more colour error into the garment than real photos carry at the
    working resolution (stored 4x larger at 4:2:0, resized down), and well under half of 4:2:0 at that size."""
    res = measure_storage(n_pairs=4, height=128, width=96)
    studio, real = res["q98 4:4:4 (JPEG, the studio's)"], res["real-data path (x4, q95 4:2:0, area resize)"]
    assert studio < 1.5 * real + 0.2, res
    assert studio < 0.5 * res["q95 4:2:0"], res
    assert res["q95 4:4:4"] < res["q95 4:2:0"], res


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


@pytest.mark.parametrize("recolor", [False, True])
def test_output_does_not_depend_on_worker_count(tmp_path, recolor):
    counts = {"train": 2, "val": 1}
    write_dataset(tmp_path / "one", counts, seed=1, height=64, width=48, workers=1, progress=False, recolor=recolor)
    write_dataset(tmp_path / "two", counts, seed=1, height=64, width=48, workers=2, progress=False, recolor=recolor)
    files = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    # 3 pairs files, 6 samples x 7 files, dataset.json (+ 6 recolor items x 6 files)
    assert len(files) == 3 + 6 * 7 + 1 + (6 * 6 if recolor else 0)
    for f in files:
        assert (tmp_path / "one" / f).read_bytes() == (tmp_path / "two" / f).read_bytes(), f


def test_recolor_items(tmp_path):
    """Each sample as a recolor item: the degraded photo differs from the true one only inside the garment, the
    recorded params replay the degradation, and the reader returns everything."""
    write_dataset(tmp_path, {"train": 3, "test": 1}, seed=2, height=128, width=96, progress=False, recolor=True,
                  magnitude=(0.1, 0.3))
    info = json.loads((tmp_path / "dataset.json").read_text())
    assert info["recolor"]["magnitude"] == [0.1, 0.3] and info["recolor"]["modes"] == list(MODES)
    items = ItemDataset(tmp_path / "recolor", "train")
    assert items.items == [f"item_0000{k}_{j}" for k in range(3) for j in (0, 1)]
    viton = VitonDataset(tmp_path, "train")
    modes = set()
    for name in items.items:
        it = items.load(name)
        sid = name.removeprefix("item_")
        src = viton.load(sid)
        deg = it["degradation"]
        modes.add(deg["mode"])
        assert deg["source_id"] == sid and 0.1 <= deg["magnitude"] <= 0.3
        assert it["on_model"].shape == it["on_model_true"].shape == (128, 96, 3)
        np.testing.assert_array_equal(it["mask_on_model"], src["garment_mask"])
        np.testing.assert_array_equal(it["mask_still"], src["cloth_mask"])
        inside = it["mask_on_model"] > 0
        diff = np.abs(it["on_model"].astype(int) - it["on_model_true"])
        assert diff[~inside].mean() < 1.5                        # JPEG noise only
        assert diff[inside].mean() > 3 * diff[~inside].mean() + 1
        # the truth is the sample's render, and the params replay the degradation on it
        k, j = (int(v) for v in sid.split("_"))
        exact = render_pair(pair_seed(2, "train", k), 128, 96)[j].image
        assert np.abs(it["on_model_true"].astype(int) - exact).mean() < 1     # JPEG 98, 4:4:4
        replay = apply(exact, inside, deg["params"])
        ok, jpg = cv2.imencode(".jpg", replay[..., ::-1], list(RECOLOR_JPEG))
        np.testing.assert_array_equal(cv2.imdecode(jpg, cv2.IMREAD_COLOR)[..., ::-1], it["on_model"])
        measured = delta_e_2000(rgb_to_lab(it["on_model"][inside]), rgb_to_lab(it["on_model_true"][inside])).mean()
        assert measured == pytest.approx(deg["delta_e00"]["mean"], rel=0.1, abs=0.5), name
    assert len(modes) >= 3
    assert len(ItemDataset(tmp_path / "recolor", "test")) == 2
    for bad in ((0.3, 0.1), (0.2, 1.5), (-0.1, 0.2)):   # the range training and evaluation accept, no looser
        with pytest.raises(ValueError, match="0 <= low <= high <= 1"):
            write_dataset(tmp_path / "bad", {"train": 1}, progress=False, recolor=True, magnitude=bad)


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
        degrade(s.image, s.garment_mask, np.random.default_rng(0), "hsi", 0.1)
    with pytest.raises(ValueError, match="unknown degradation step"):
        apply(s.image, s.garment_mask, [{"mode": "hsi"}])


IDENTITY = {"hsv": {"hue_deg": 0.0, "sat_gain": 1.0, "val_gain": 1.0}, "lab": {"dL": 0.0, "da": 0.0, "db": 0.0},
            "rgb": {"gain": [1.0, 1.0, 1.0], "offset": [0.0, 0.0, 0.0]},
            "hsl": {"hue_deg": 0.0, "sat_gain": 1.0, "light_shift": 0.0}}


@pytest.mark.parametrize("mode", BASIC_MODES)
def test_degrade_identity_params_change_nothing(pairs, mode):
    s = pairs[1][0]
    out = apply(s.image, s.garment_mask, [{"mode": mode, **IDENTITY[mode]}])
    assert np.abs(out.astype(int) - s.image).max() <= 1


def test_hsl_lightness_shift_moves_lightness_not_hue(pairs):
    s = pairs[1][1]
    inside = s.garment_mask > 0
    base = rgb_to_lab(s.image[inside])
    for shift in (0.15, -0.15):
        out = apply(s.image, inside, [{"mode": "hsl", "hue_deg": 0.0, "sat_gain": 1.0, "light_shift": shift}])
        lab = rgb_to_lab(out[inside])
        assert np.sign(lab[:, 0].mean() - base[:, 0].mean()) == np.sign(shift)
        assert abs(lab[:, 0].mean() - base[:, 0].mean()) > 5


def test_mixed_draws_from_every_basic_mode():
    seen = set()
    for k in range(40):
        steps = sample_params(np.random.default_rng(k), "mixed", 0.2)
        assert len(steps) == 2 and steps[0]["mode"] != steps[1]["mode"]
        seen |= {st["mode"] for st in steps}
    assert seen == set(BASIC_MODES)


def test_magnitude_table_in_docstring_is_current():
    """The Delta E 2000 table documenting the magnitude scale is what measure_scale() computes now."""
    import importlib

    mod = importlib.import_module("drape_train.data.degrade")  # the package re-exports a function of that name

    lines = mod.__doc__.splitlines()
    head = next(i for i, line in enumerate(lines) if line.split()[:2] == ["mode", "m=0.05"])
    mags = [float(v.removeprefix("m=")) for v in lines[head].split()[1:]]
    documented = {}
    for line in lines[head + 1:]:
        if not line.strip():
            break
        documented[line.split()[0]] = [float(v) for v in line.split()[1:]]
    measured = measure_scale(tuple(mags))
    assert set(documented) == set(MODES)
    for mode in MODES:
        np.testing.assert_allclose(documented[mode], [measured[mode][m] for m in mags], atol=0.051, err_msg=mode)
        assert all(np.diff(documented[mode]) > 0), f"{mode}: Delta E must grow with the magnitude"


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

    assert main(["generate", "--out", str(out), "--train", "1", "--val", "1", "--test", "0", "--height", "64",
                 "--width", "48", "--workers", "1", "--quiet", "--recolor", "--magnitude", "0.2", "0.2"]) == 0
    deg = json.loads((out / "recolor" / "val" / "item_00000_1" / "degradation.json").read_text())
    assert deg["magnitude"] == 0.2
    assert main(["sheet", "--root", str(out), "--split", "train", "--recolor", "--n", "2", "--tile-height", "64",
                 "--out", str(sheet)]) == 0
    assert cv2.imread(str(sheet)).shape == (2 * 64, 4 * 48, 3)

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:   # refused by name before anything is written
        main(["generate", "--out", str(tmp_path / "bad"), "--train", "1", "--recolor", "--magnitude", "0.2", "1.5"])
    assert exc.value.code == 2 and "--magnitude: magnitude must be a range" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_bench_reports_every_size(capsys):
    from drape_train.data.__main__ import bench, main

    rows = bench([(64, 48), (128, 96)], n=2)
    assert [r["size"] for r in rows] == ["64x48", "128x96"] and [r["pairs"] for r in rows] == [32, 8]
    assert all(r["samples_per_s"] > 0 for r in rows)
    assert main(["bench", "--n", "1", "--sizes", "64x48", "96x72"]) == 0
    out = capsys.readouterr().out
    assert "64x48" in out and "96x72" in out and "samples/s" in out
    with pytest.raises(SystemExit):
        main(["bench", "--sizes", "256by192"])
