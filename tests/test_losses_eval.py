"""Losses (VGG perceptual/style by path, PatchGAN, segmentation options) and the evaluation baselines."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from drape_train.config import load_config
from drape_train.data.synth import render_pair
from drape_train.evaluate import bbox_affine_warp, reinhard, seg_baseline, torso_box
from drape_train.losses import boundary_loss, focal_loss, tversky_loss, vgg19_features
from drape_train.objectives import Objective, delta_e2000, seg_metrics


def _tom_batch(b=2, h=256, w=192):
    return {"person": torch.rand(b, 3, h, w), "parse": torch.randint(0, 20, (b, h, w)),
            "warped_garment": torch.rand(b, 3, h, w), "warped_mask": (torch.rand(b, 1, h, w) > 0.5).float(),
            "target": torch.rand(b, 3, h, w)}


def test_perceptual_is_disabled_with_a_log_line_without_weights(caplog):
    cfg, _ = load_config("training/configs/tom.yaml")
    cfg.loss.perceptual, cfg.loss.vgg19_weights = 1.0, "/nonexistent/vgg19.pth"
    with caplog.at_level(logging.WARNING, logger="drape_train"):
        obj = Objective(cfg)
    assert obj._vgg is None and "perceptual/style losses disabled" in caplog.text
    _, logs = obj(_tom_batch())
    assert "perceptual" not in logs


def test_perceptual_style_and_gan_train_with_user_weights(tmp_path):
    path = tmp_path / "vgg19.pth"
    torch.manual_seed(0)
    torch.save({f"features.{k}": v for k, v in vgg19_features().state_dict().items()}, path)
    cfg, _ = load_config("training/configs/tom.yaml")
    cfg.loss.perceptual, cfg.loss.style, cfg.loss.gan, cfg.loss.vgg19_weights = 1.0, 1.0, 0.1, str(path)
    obj = Objective(cfg)
    b = _tom_batch()
    loss, logs = obj(b)
    assert {"perceptual", "style", "adv"} <= set(logs) and float(logs["perceptual"].detach()) > 0
    loss.backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in obj.net.parameters())
    gen = {id(p) for p in obj.generator_parameters()}
    assert not any(id(p) in gen for p in obj.disc.parameters()), "D must not be in the engine's optimizer"
    d = obj.discriminator_loss()
    d.backward()
    assert obj.disc.net[0].weight.grad is not None


def test_segmentation_losses_are_zero_for_perfect_and_positive_for_wrong_masks():
    t = torch.zeros(1, 1, 32, 32)
    t[..., 8:24, 8:24] = 1
    assert float(tversky_loss(t, t)) < 1e-6 and float(boundary_loss(t, t)) == 0.0
    wrong = torch.roll(t, 4, -1)
    assert float(tversky_loss(wrong, t)) > 0.1 and float(boundary_loss(wrong, t)) > 0.1
    assert float(focal_loss((t * 2 - 1) * 20, t)) < float(focal_loss((wrong * 2 - 1) * 20, t))


def test_seg_metrics_counts():
    pred = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    pred[..., :2, :] = True
    tgt = torch.zeros_like(pred)
    tgt[..., :1, :] = True
    m = seg_metrics(pred, tgt)
    assert float(m["iou"]) == pytest.approx(0.5) and float(m["precision"]) == pytest.approx(0.5)
    assert float(m["recall"]) == 1.0 and float(m["dice"]) == pytest.approx(2 / 3)


def test_baselines_do_their_job_on_a_rendered_pair():
    a, b = render_pair(11)
    mask = seg_baseline(a.cloth.astype(np.float64) / 255)
    truth = a.cloth_mask > 127
    assert (mask & truth).sum() / (mask | truth).sum() > 0.8          # plain-background stills are easy
    box = torso_box(a.parse)
    assert box is not None and box[0] < box[2] and box[1] < box[3]
    warped = bbox_affine_warp((b.cloth_mask > 127).astype(np.float32), a.parse)
    gm = a.garment_mask > 127
    assert ((warped > 0.5) & gm).sum() / ((warped > 0.5) | gm).sum() > 0.3
    # Reinhard moves the on-model garment's mean colour towards the still's
    onm, still = a.image / 255.0, b.cloth / 255.0
    out = reinhard(onm, gm, still, b.cloth_mask > 127)
    before = np.abs(onm[gm].mean(0) - still[b.cloth_mask > 127].mean(0)).sum()
    after = np.abs(out[gm].mean(0) - still[b.cloth_mask > 127].mean(0)).sum()
    assert after < before and np.array_equal(out[~gm], onm[~gm])


def test_delta_e2000_metric_matches_numpy_reference():
    from skimage.color import deltaE_ciede2000, rgb2lab

    g = np.random.default_rng(0)
    a, b = g.random((2, 8, 8, 3)), g.random((2, 8, 8, 3))
    got = delta_e2000(torch.from_numpy(a).permute(0, 3, 1, 2), torch.from_numpy(b).permute(0, 3, 1, 2))[:, 0]
    ref = deltaE_ciede2000(rgb2lab(a), rgb2lab(b))
    assert np.abs(got.numpy() - ref).max() < 0.05


@pytest.mark.parametrize("hw", [(256, 192), (512, 384)])
def test_tom_is_scored_on_what_the_tryon_ensemble_returns(hw):
    """The TOM loss and metrics composite exactly like serving's post-processing (model resolution, no letterbox)."""
    from drape_runtime.prepost import tryon_composite
    from drape_train.objectives import served_tryon

    g = torch.Generator().manual_seed(3)
    h, w = hw
    tryon, person = torch.rand(1, 3, h, w, generator=g), torch.rand(1, 3, h, w, generator=g)
    edit = torch.zeros(1, 1, h, w)
    edit[..., h // 4: h // 2, w // 3: 2 * w // 3] = 1.0                # a hard edge: the feather matters
    person = (person * 255).round() / 255                                # serving's orig is uint8
    ours = served_tryon(tryon, edit, person)[0].permute(1, 2, 0).numpy() * 255
    orig = (person[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    theirs = tryon_composite(tryon[0].numpy(), edit[0].numpy(), orig).astype(np.float32)
    assert np.abs(ours - theirs).max() <= 1.01                           # serving rounds to uint8 twice
    far = np.zeros((h, w), bool)
    far[: h // 8] = True                                                 # well outside the edit mask: the photo
    assert np.abs(ours[far] - orig[far]).max() < 1e-3


def test_tryon_sheet_draws_the_served_chain_of_each_checkpoint_folder(tmp_path):
    from conftest import CHECKPOINTS
    from drape_train.data.layout import write_dataset
    from drape_train.datasets import NetworkDataset
    from drape_train.tryon_sheet import main, sheet

    if not (CHECKPOINTS / "tom" / "weights.pt").is_file():
        pytest.fail(f"{CHECKPOINTS} has no tom: run `make quick` (make test does it first)")
    data = tmp_path / "data"
    write_dataset(data, {"train": 1, "val": 1, "test": 2}, seed=3, height=256, width=192, workers=1)
    img = sheet([CHECKPOINTS, CHECKPOINTS], str(data), "test", rows=2)
    h, w = 256, 192
    assert img.shape == (2 * h, 6 * w, 3) and img.dtype == np.uint8
    ds = NetworkDataset(str(data), "test", "tom", seed=12345)
    for col, key in ((0, "person"), (1, "target")):
        want = (ds[0][key].permute(1, 2, 0).numpy() * 255).round()
        assert np.abs(img[:h, col * w:(col + 1) * w] - want).max() <= 1
    assert np.array_equal(img[:, 2 * w:4 * w], img[:, 4 * w:6 * w])     # one folder twice: the same columns
    assert not np.array_equal(img[:h, 3 * w:4 * w], img[:h, :w])        # the served try-on edits the photo
    with pytest.raises(FileNotFoundError, match="no gmm/weights.pt"):
        sheet([tmp_path], str(data), "test", rows=1)
    assert main(["--checkpoints", str(CHECKPOINTS), "--data", str(data), "--rows", "1",
                 "--out", str(tmp_path / "s.jpg")]) == 0 and (tmp_path / "s.jpg").stat().st_size > 1000


def test_fallback_margin_tuner_scores_the_served_decision_at_each_margin(tmp_path, capsys):
    """tune_fallback: one pass gives, per margin, what the postprocess would serve; margin -inf would always take
    the transfer and +inf never, so those two rows are the transfer's and the gated network's own scores."""
    from conftest import CHECKPOINTS
    from drape_train.data.layout import write_dataset
    from drape_train.tune_fallback import decisions, main, served

    if not (CHECKPOINTS / "recolor" / "weights.pt").is_file():
        pytest.fail(f"{CHECKPOINTS} has no recolor: run `make quick` (make test does it first)")
    data = tmp_path / "data"
    write_dataset(data, {"train": 1, "val": 3, "test": 1}, seed=5, height=256, width=192, workers=1)
    from drape_train.datasets import NetworkDataset

    rows = decisions(CHECKPOINTS / "recolor", str(data), "val")
    assert rows.shape == (len(NetworkDataset(str(data), "val", "recolor")), 7) and (rows[:, 6] > 0).all()
    kept, _, _, e_net, e_tr, e_photo, n = rows.T
    always = np.where(kept > 0, e_photo, e_tr).sum() / n.sum()
    never = np.where(kept > 0, e_photo, e_net).sum() / n.sum()
    assert served(rows, -np.inf) == (pytest.approx(always), int((kept == 0).sum()))
    assert served(rows, np.inf) == (pytest.approx(never), 0)
    main(["--checkpoint", str(CHECKPOINTS / "recolor"), "--data", str(data), "--split", "val", "--margins", "0.03"])
    assert "margin 0.03: served" in capsys.readouterr().out
