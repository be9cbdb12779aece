"""Geometric Matching Module: correlate person and garment features, regress TPS offsets, warp with grid_sample.

Control points start from a classical answer, an affine moment alignment of the still's garment onto the torso
of the garment-agnostic person (`GMM.align`); the regressor correlates the person with the still as that
alignment already warps it (`prewarp`) and adds offsets for what is left. The TPS grid generator is linear in the
source control points once the target grid is fixed, so it is a single precomputed [H*W, K] matrix: the exported
graph is MatMul + GridSample (4D), both TensorRT-native (no AffineGrid).

With `gate_widths` a small U-Net (the *visibility gate*) reads the garment-agnostic person and the warped still
and decides which warped pixels this person shows: arms and hair in front of the torso, and a warp wider than the
body, are cut away. The served mask is the TPS mask times the gate, so it can only remove garment, never claim
pixels the warped still does not cover (VITON-HD masks its warped cloth with a predicted layout the same way).
`warp()` returns the TPS mask beside it, so training and evaluation can score both.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import Encoder, UNet, masked_moments
from .representation import AGNOSTIC_CHANNELS, ParsingGroups, agnostic


def tps_kernel(grid_size: int, h: int, w: int) -> torch.Tensor:
    """Matrix M [h*w, K] with grid = M @ source_points for a K = grid_size**2 TPS fixed at a regular target grid.

    Standard thin-plate spline with U(r) = r^2 log r^2 solved for the regular control grid in [-1, 1]^2.
    """
    lin = np.linspace(-1.0, 1.0, grid_size)
    py, px = np.meshgrid(lin, lin, indexing="ij")
    p = np.stack([px.ravel(), py.ravel()], axis=1)                       # [K,2] (x, y)
    k = len(p)

    def u(d2):
        return np.where(d2 > 0, d2 * np.log(np.maximum(d2, 1e-12)), 0.0)

    d2 = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    big = np.zeros((k + 3, k + 3))
    big[:k, :k] = u(d2)
    big[:k, k] = 1.0
    big[:k, k + 1:] = p
    big[k, :k] = 1.0
    big[k + 1:, :k] = p.T
    inv = np.linalg.inv(big)[:, :k]                                       # maps K source values -> (w, a) coeffs
    ys = (np.arange(h) + 0.5) / h * 2 - 1
    xs = (np.arange(w) + 0.5) / w * 2 - 1
    gy, gx = np.meshgrid(ys, xs, indexing="ij")
    q = np.stack([gx.ravel(), gy.ravel()], axis=1)                       # [HW,2]
    dq = ((q[:, None, :] - p[None, :, :]) ** 2).sum(-1)
    basis = np.concatenate([u(dq), np.ones((len(q), 1)), q], axis=1)      # [HW, K+3]
    return torch.from_numpy(basis @ inv).float()                          # [HW, K]


def regular_grid(grid_size: int) -> torch.Tensor:
    lin = torch.linspace(-1.0, 1.0, grid_size)
    py, px = torch.meshgrid(lin, lin, indexing="ij")
    return torch.stack([px.reshape(-1), py.reshape(-1)], dim=1)          # [K,2]


def pixel_coords(h: int, w: int) -> torch.Tensor:
    """[2,H,W] x and y of every pixel centre in grid_sample coordinates (align_corners=False)."""
    ys = (torch.arange(h) + 0.5) / h * 2 - 1
    xs = (torch.arange(w) + 0.5) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy])


def mask_frame(mask: torch.Tensor, coords: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid [B,2] and standard deviation [B,2] (x, y) of a soft mask [B,1,H,W] over ``coords`` [2,H,W]; the
    spread is kept >= 0.02 so an empty mask cannot divide by zero (ReduceMean/Sqrt/Clip only)."""
    centre, spread = masked_moments(coords[None], mask)
    return centre.flatten(1), spread.flatten(1).clamp(0.02, 4.0)


class GMM(nn.Module):
    input_names = ("parsing_logits", "garment", "garment_mask_logits")
    output_names = ("warped_garment", "warped_mask")
    resampled_outputs = output_names     # grid_sample's output: the export's parity check allows for it
    # The FP16 twin keeps the sampling path in FP32: GridSample and what its grid is computed from (the TPS
    # MatMul, the control points, the moment anchor), back to the learned layers (drape_export.onnx_export.
    # sampling_path). FP16 coordinates move sharp garment edges: a quick GMM's twin reached p99.9 0.122 against
    # the FP32 graph (bound 0.1); with the path in FP32 another quick GMM went from 0.029 to 0.007.
    fp16_fp32_sampling = ("GridSample",)

    def __init__(self, widths: list[int], height: int, width: int, grid_size: int = 5, prewarp: bool = True,
                 gate_widths: list[int] | None = None, gate_stride: int = 1):
        super().__init__()
        self.grid_size = grid_size
        self.prewarp = prewarp
        self.groups = ParsingGroups()
        self.person_enc = Encoder(AGNOSTIC_CHANNELS, widths)
        self.garment_enc = Encoder(4, widths)
        fh, fw = height // 2 ** (len(widths) - 1), width // 2 ** (len(widths) - 1)
        # The regressor keeps the correlation map's layout (flatten, not global pooling): where on the body a
        # garment patch matches is exactly what the control points have to encode.
        self.regress = nn.Sequential(
            nn.Conv2d(fh * fw, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
            nn.Conv2d(64, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.Flatten(), nn.Linear(32 * ((fh + 1) // 2) * ((fw + 1) // 2), 2 * grid_size ** 2),
        )
        nn.init.zeros_(self.regress[-1].weight)   # start at the identity warp
        nn.init.zeros_(self.regress[-1].bias)
        self.register_buffer("base", regular_grid(grid_size), persistent=False)
        self.register_buffer("kernel", tps_kernel(grid_size, height, width), persistent=False)
        self.register_buffer("cell_coords", F.avg_pool2d(pixel_coords(height, width)[None], 8)[0], persistent=False)
        self.height, self.width = height, width
        self.gate = None
        if gate_widths:
            self.gate = UNet(AGNOSTIC_CHANNELS + 4, 1, list(gate_widths), stem_stride=gate_stride)
            nn.init.constant_(self.gate.decoder.head.bias, 3.0)   # starts open (sigmoid 0.95): the TPS mask as is

    def control_points(self, parsing_logits, garment, garment_mask_logits, person=None) -> torch.Tensor:
        """Source control points [B,K,2] in grid_sample coordinates: a moment alignment plus learned offsets.
        ``person``: the agnostic representation of ``parsing_logits`` when the caller already has it."""
        person = agnostic(self.groups(parsing_logits)) if person is None else person
        mask = torch.sigmoid(garment_mask_logits)
        anchor = self.align(person, mask)
        fa = F.normalize(self.person_enc(person)[-1], dim=1)
        still = torch.cat([garment * 2 - 1, mask], 1)
        if self.prewarp:   # the regressor sees what is left to correct, in the person's frame
            still = F.grid_sample(still, self.grid(anchor), mode="bilinear", padding_mode="zeros", align_corners=False)
        fb = F.normalize(self.garment_enc(still)[-1], dim=1)
        b, c, h, w = fa.shape
        corr = torch.bmm(fb.flatten(2).transpose(1, 2), fa.flatten(2))  # [B, hw_garment, hw_person]
        corr = corr.reshape(b, h * w, h, w)
        offsets = torch.tanh(self.regress(corr)).reshape(b, self.grid_size ** 2, 2)
        return anchor + offsets

    def align(self, person: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Control points [B,K,2] of the axis-aligned affine warp that lays the still's garment over the torso.

        The torso is read off the garment-agnostic representation only (blurred body shape minus head, arms and
        lower body, softly thresholded at 0.5): the worn garment's outline enters only as blurred as the rest of
        the person representation. Centroid
        and spread of that region and of the still's mask give scale and shift per axis. A TPS reproduces an
        affine map exactly, so the offsets start from this classical answer instead of the identity grid.
        """
        torso = torch.sigmoid(200.0 * (person[:, 0:1] - person[:, 1:2] - person[:, 2:3] - person[:, 3:4] - 0.5))
        # moments of 8x8 cell averages: the same centroid, and 64x fewer terms per sum, so ONNX Runtime and
        # PyTorch agree on the anchor to ~1e-6 (a full-resolution sum differs by ~3e-5 grid units, which moves
        # sharp garment edges in the warp by more than the export's 1e-3 parity tolerance)
        torso, mask = F.avg_pool2d(torso, 8), F.avg_pool2d(mask, 8)
        (ct, st), (cs, ss) = mask_frame(torso, self.cell_coords), mask_frame(mask, self.cell_coords)
        return cs[:, None] + (self.base - ct[:, None]) * (ss / st)[:, None]

    def grid(self, points: torch.Tensor) -> torch.Tensor:
        # float32 under autocast too: in bfloat16 (8-bit mantissa) the sampling coordinates would be off by up to
        # half a pixel at 256 px
        with torch.autocast(points.device.type, enabled=False):
            return torch.matmul(self.kernel, points.float()).reshape(-1, self.height, self.width, 2)

    def warp(self, parsing_logits, garment, garment_mask_logits):
        """(control points, warped still [B,3,H,W], TPS-warped mask, gate logits or None, served mask)."""
        person = agnostic(self.groups(parsing_logits))
        points = self.control_points(parsing_logits, garment, garment_mask_logits, person)
        mask = torch.sigmoid(garment_mask_logits)
        warped = F.grid_sample(torch.cat([garment, mask], 1), self.grid(points), mode="bilinear",
                               padding_mode="zeros", align_corners=False)
        rgb, tps_mask = warped[:, :3], warped[:, 3:4]
        if self.gate is None:
            return points, rgb, tps_mask, None, tps_mask
        logits = self.gate(torch.cat([person, rgb * 2 - 1, tps_mask], 1))
        return points, rgb, tps_mask, logits, tps_mask * torch.sigmoid(logits)

    def forward(self, parsing_logits, garment, garment_mask_logits):
        _, rgb, _, _, mask = self.warp(parsing_logits, garment, garment_mask_logits)
        return rgb, mask


def smoothness(points: torch.Tensor, grid_size: int) -> torch.Tensor:
    """GIC-style second-order term: neighbouring control-point displacements should change linearly."""
    p = points.reshape(-1, grid_size, grid_size, 2)
    dx = p[:, :, 2:] - 2 * p[:, :, 1:-1] + p[:, :, :-2]
    dy = p[:, 2:] - 2 * p[:, 1:-1] + p[:, :-2]
    return dx.abs().mean() + dy.abs().mean()
