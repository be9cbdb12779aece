"""Colour science against published reference values, numpy and torch, and the torch gradients losses need."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from drape_core import colour as color

# Sharma, Wu & Dalal (2005), Color Res. Appl. 30(1), Table 1: L1 a1 b1 L2 a2 b2 and Delta E 2000 to 4 decimals
# (also hajim.rochester.edu/ece/sites/gsharma/ciede2000/dataNprograms/ciede2000testdata.txt).
SHARMA = np.array([[float(v) for v in line.split()] for line in """
50.0000 2.6772 -79.7751 50.0000 0.0000 -82.7485 2.0425
50.0000 3.1571 -77.2803 50.0000 0.0000 -82.7485 2.8615
50.0000 2.8361 -74.0200 50.0000 0.0000 -82.7485 3.4412
50.0000 -1.3802 -84.2814 50.0000 0.0000 -82.7485 1.0000
50.0000 -1.1848 -84.8006 50.0000 0.0000 -82.7485 1.0000
50.0000 -0.9009 -85.5211 50.0000 0.0000 -82.7485 1.0000
50.0000 0.0000 0.0000 50.0000 -1.0000 2.0000 2.3669
50.0000 -1.0000 2.0000 50.0000 0.0000 0.0000 2.3669
50.0000 2.4900 -0.0010 50.0000 -2.4900 0.0009 7.1792
50.0000 2.4900 -0.0010 50.0000 -2.4900 0.0010 7.1792
50.0000 2.4900 -0.0010 50.0000 -2.4900 0.0011 7.2195
50.0000 2.4900 -0.0010 50.0000 -2.4900 0.0012 7.2195
50.0000 -0.0010 2.4900 50.0000 0.0009 -2.4900 4.8045
50.0000 -0.0010 2.4900 50.0000 0.0010 -2.4900 4.8045
50.0000 -0.0010 2.4900 50.0000 0.0011 -2.4900 4.7461
50.0000 2.5000 0.0000 50.0000 0.0000 -2.5000 4.3065
50.0000 2.5000 0.0000 73.0000 25.0000 -18.0000 27.1492
50.0000 2.5000 0.0000 61.0000 -5.0000 29.0000 22.8977
50.0000 2.5000 0.0000 56.0000 -27.0000 -3.0000 31.9030
50.0000 2.5000 0.0000 58.0000 24.0000 15.0000 19.4535
50.0000 2.5000 0.0000 50.0000 3.1736 0.5854 1.0000
50.0000 2.5000 0.0000 50.0000 3.2972 0.0000 1.0000
50.0000 2.5000 0.0000 50.0000 1.8634 0.5757 1.0000
50.0000 2.5000 0.0000 50.0000 3.2592 0.3350 1.0000
60.2574 -34.0099 36.2677 60.4626 -34.1751 39.4387 1.2644
63.0109 -31.0961 -5.8663 62.8187 -29.7946 -4.0864 1.2630
61.2901 3.7196 -5.3901 61.4292 2.2480 -4.9620 1.8731
35.0831 -44.1164 3.7933 35.0232 -40.0716 1.5901 1.8645
22.7233 20.0904 -46.6940 23.0331 14.9730 -42.5619 2.0373
36.4612 47.8580 18.3852 36.2715 50.5065 21.2231 1.4146
90.8027 -2.0831 1.4410 91.1528 -1.6435 0.0447 1.4441
90.9257 -0.5406 -0.9208 88.6381 -0.8985 -0.7239 1.5381
6.7747 -0.2908 -2.4247 5.8714 -0.0985 -2.2286 0.6377
2.0776 0.0795 -1.1350 0.9033 -0.0636 -0.5514 0.9082
""".strip().splitlines()])
LAB1, LAB2, DE00 = SHARMA[:, :3], SHARMA[:, 3:6], SHARMA[:, 6]

# sRGB (8 bit) -> CIELAB D65, as published by Lindbloom's and EasyRGB's calculators (2 decimals).
SRGB_LAB = [
    ((255, 255, 255), (100.0, 0.0, 0.0)),
    ((0, 0, 0), (0.0, 0.0, 0.0)),
    ((255, 0, 0), (53.24, 80.09, 67.20)),
    ((0, 255, 0), (87.73, -86.18, 83.18)),
    ((0, 0, 255), (32.30, 79.19, -107.86)),
]


def _random_lab(rng, n):
    lab = rng.uniform([0, -110, -110], [100, 110, 110], (n, 3))
    lab[: n // 8, 1:] = 0                      # achromatic colours: C* = 0, hue undefined
    return lab


# ----------------------------------------------------------------------------------------------- published data

def test_ciede2000_numpy_matches_sharma_table():
    assert len(SHARMA) == 34
    got = color.delta_e_2000(LAB1, LAB2)
    assert got.shape == (34,) and got.dtype == np.float64
    np.testing.assert_allclose(got, DE00, atol=5e-5, rtol=0)  # the table is rounded to 4 decimals
    np.testing.assert_allclose(color.delta_e_2000(LAB2, LAB1), DE00, atol=5e-5, rtol=0)  # symmetric


def test_ciede2000_torch_matches_sharma_table():
    t1, t2 = torch.from_numpy(LAB1), torch.from_numpy(LAB2)
    got = color.delta_e_2000(t1, t2)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), DE00, atol=5e-5, rtol=0)
    got32 = color.delta_e_2000(t1.float(), t2.float())          # what a loss computes in
    assert got32.dtype == torch.float32
    np.testing.assert_allclose(got32.numpy(), DE00, atol=2e-3, rtol=0)


@pytest.mark.parametrize("rgb,lab", SRGB_LAB)
def test_srgb_to_lab_published_values(rgb, lab):
    got = color.rgb_to_lab(np.array(rgb, np.uint8))
    np.testing.assert_allclose(got, lab, atol=0.006)              # the references have 2 decimals
    got_t = color.rgb_to_lab(torch.tensor(rgb, dtype=torch.float64) / 255)
    np.testing.assert_allclose(got_t.numpy(), lab, atol=0.006)


def test_white_is_exactly_l100_and_neutral():
    lab = color.rgb_to_lab(np.ones(3))
    np.testing.assert_allclose(lab, [100, 0, 0], atol=1e-9)
    np.testing.assert_allclose(color.WHITE_D65, [0.95047, 1.0, 1.08883], atol=1e-6)


# ----------------------------------------------------------------------------------------------- cross-checks

def test_ciede2000_agrees_with_scikit_image():
    from skimage.color import deltaE_ciede2000

    rng = np.random.default_rng(0)
    a = _random_lab(rng, 4000)
    b = np.concatenate([a[:500], a[500:2000] + rng.normal(0, 3, (1500, 3)), _random_lab(rng, 2000)])
    b[:100, 1:] = 0
    np.testing.assert_allclose(color.delta_e_2000(a, b), deltaE_ciede2000(a, b), atol=1e-9, rtol=0)
    assert np.all(color.delta_e_2000(a[:500], b[:500]) == 0)      # identical colours: exactly 0


def test_rgb_to_lab_agrees_with_scikit_image_and_kornia():
    import kornia
    from skimage.color import rgb2lab

    rgb = np.random.default_rng(1).random((2000, 3))
    ours = color.rgb_to_lab(rgb)
    np.testing.assert_allclose(ours, rgb2lab(rgb[None])[0], atol=0.02)
    k = kornia.color.rgb_to_lab(torch.from_numpy(rgb).float().T[:, :, None]).squeeze(-1).T.numpy()
    np.testing.assert_allclose(ours, k, atol=0.02)


def test_round_trips_and_layouts():
    rng = np.random.default_rng(2)
    rgb = rng.random((500, 3))
    np.testing.assert_allclose(color.lab_to_rgb(color.rgb_to_lab(rgb)), rgb, atol=1e-10)
    np.testing.assert_allclose(color.linear_to_srgb(color.srgb_to_linear(rgb)), rgb, atol=1e-12)
    np.testing.assert_allclose(color.xyz_to_linear(color.linear_to_xyz(rgb)), rgb, atol=1e-12)
    # uint8 in numpy means 0..255
    u8 = (rgb * 255).round().astype(np.uint8)
    np.testing.assert_allclose(color.rgb_to_lab(u8), color.rgb_to_lab(u8 / 255.0), atol=1e-12)
    # NCHW tensors with dim=1 give the same numbers as channels-last
    x = torch.from_numpy(rgb.reshape(5, 10, 10, 3)).float()
    nchw = color.rgb_to_lab(x.permute(0, 3, 1, 2), dim=1)
    assert nchw.shape == (5, 3, 10, 10)
    torch.testing.assert_close(nchw.permute(0, 2, 3, 1), color.rgb_to_lab(x))
    de = color.delta_e_2000(nchw, nchw.flip(0), dim=1)
    assert de.shape == (5, 10, 10)
    torch.testing.assert_close(color.lab_to_rgb(nchw, dim=1), x.permute(0, 3, 1, 2), atol=1e-5, rtol=0)


def test_delta_e_76_is_euclidean():
    assert color.delta_e_76(np.array([50.0, 0, 0]), np.array([60.0, 0, 0])) == pytest.approx(10)
    assert color.delta_e_76(np.array([50.0, 30, 40]), np.array([50.0, 0, 0])) == pytest.approx(50)
    # and CIEDE2000 of that same 3-4-5 pair differs (it weighs chroma down): the published 24.1219... is not 50
    assert color.delta_e_2000(np.array([50.0, 30, 40]), np.array([50.0, 0, 0])) == pytest.approx(24.1219, abs=1e-4)


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match=r"3 colour channels.*\(4, 2\)"):
        color.delta_e_2000(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="3 colour channels"):
        color.rgb_to_lab(torch.zeros(2, 4, 8, 8), dim=1)


# ----------------------------------------------------------------------------------------------- gradients

@pytest.mark.parametrize("fn", [color.delta_e_2000, color.delta_e_76])
def test_gradients_are_finite_where_sqrt_and_atan2_are_singular(fn):
    lab = torch.tensor([[50.0, 10.0, -20.0],    # identical pair: Delta E = 0, sqrt(0)
                        [40.0, 0.0, 0.0],       # both achromatic: atan2(0, 0), C' = 0
                        [60.0, 0.0, 0.0],       # one achromatic
                        [70.0, 5.0, 5.0]], requires_grad=True)
    other = torch.tensor([[50.0, 10.0, -20.0], [45.0, 0.0, 0.0], [60.0, 3.0, -4.0], [71.0, 4.0, 6.0]],
                         requires_grad=True)
    d = fn(lab, other)
    assert torch.all(torch.isfinite(d)) and d[0] == 0
    d.sum().backward()
    assert torch.all(torch.isfinite(lab.grad)) and torch.all(torch.isfinite(other.grad))
    assert lab.grad[3].abs().sum() > 0      # ordinary pairs do get a gradient


def test_rgb_loss_gradient_is_finite_at_black_white_and_identity():
    rgb = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.5, 0.2, 0.9], [0.02, 0.03, 0.01]], requires_grad=True)
    target = torch.tensor([[0.0, 0.0, 0.0], [0.9, 1.0, 1.0], [0.5, 0.2, 0.9], [0.05, 0.0, 0.01]])
    loss = color.delta_e_2000(color.rgb_to_lab(rgb), color.rgb_to_lab(target)).sum()
    loss.backward()
    assert torch.all(torch.isfinite(rgb.grad))
    assert rgb.grad[1].abs().sum() > 0 and rgb.grad[3].abs().sum() > 0


def test_gradcheck_matches_finite_differences():
    torch.manual_seed(0)
    lab1 = (torch.rand(6, 3, dtype=torch.float64) * torch.tensor([100.0, 160, 160]) - torch.tensor([0, 80, 80]))
    lab2 = lab1 + torch.randn(6, 3, dtype=torch.float64) * 4
    assert torch.autograd.gradcheck(color.delta_e_2000, (lab1.requires_grad_(), lab2.requires_grad_()))
    rgb = (torch.rand(6, 3, dtype=torch.float64) * 0.9 + 0.05).requires_grad_()
    assert torch.autograd.gradcheck(color.rgb_to_lab, (rgb,))


def test_torch_and_numpy_agree_on_random_colours():
    """The loss (torch) and the metric (numpy) are one implementation: equal on random sRGB colours and pairs."""
    rng = np.random.default_rng(7)
    rgb = rng.random((4000, 3))
    lab = color.rgb_to_lab(rgb)
    lab_t = color.rgb_to_lab(torch.from_numpy(rgb))
    np.testing.assert_allclose(lab_t.numpy(), lab, atol=1e-9, rtol=0)
    other = color.rgb_to_lab(rng.random((4000, 3)))
    np.testing.assert_allclose(color.delta_e_2000(lab_t, torch.from_numpy(other)).numpy(),
                               color.delta_e_2000(lab, other), atol=1e-9, rtol=0)
    np.testing.assert_allclose(color.delta_e_76(lab_t, torch.from_numpy(other)).numpy(),
                               color.delta_e_76(lab, other), atol=1e-9, rtol=0)


def test_servings_float32_path_stays_near_the_reference():
    """Serving's OpenCV float32 Lab (the keep-gate's thresholds were tuned on it) against the reference formulas:
    0.15 CIE76 apart on average, 0.67 at worst on 200k random colours; the inverse agrees to 4e-4 in sRGB."""
    rng = np.random.default_rng(0)
    rgb = rng.random((200000, 3)).astype(np.float32)
    d = color.delta_e_76(color.rgb_to_lab_f32(rgb).astype(np.float64), color.rgb_to_lab(rgb.astype(np.float64)))
    assert d.mean() < 0.2 and d.max() < 0.7, (d.mean(), d.max())
    assert color.rgb_to_lab_f32(rgb.reshape(400, 500, 3)).shape == (400, 500, 3)
    lab = color.rgb_to_lab(rgb.astype(np.float64))
    back = color.lab_to_rgb_f32(lab.astype(np.float32))
    assert np.abs(back - color.lab_to_rgb(lab, clip=False)).max() < 1e-3
