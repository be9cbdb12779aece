"""Small building blocks shared by every family.

Everything here exports to ONNX opset 17 with ops TensorRT runs natively (Conv, BatchNorm folded into Conv,
Relu, Resize, MatMul, Softmax, GridSample): no AffineGrid, no data-dependent shapes.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvBlock(nn.Sequential):
    """Two 3x3 conv + BN + ReLU: the unit every encoder and decoder stage is made of."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """Halve the resolution (strided conv keeps it cheap on CPU) then refine."""

    def __init__(self, cin: int, cout: int):
        super().__init__(
            nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class AttentionGate(nn.Module):
    """Additive attention gate on a skip connection (Attention U-Net, Oktay et al. 2018).

    The coarser decoder feature decides which skip pixels pass: background clutter is suppressed before the
    concatenation, which matters on busy backgrounds.
    """

    def __init__(self, cskip: int, cgate: int, cinter: int):
        super().__init__()
        self.theta = nn.Conv2d(cskip, cinter, 1, bias=False)
        self.phi = nn.Conv2d(cgate, cinter, 1)
        self.psi = nn.Conv2d(cinter, 1, 1)

    def forward(self, skip: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        a = torch.relu(self.theta(skip) + self.phi(gate))
        return skip * torch.sigmoid(self.psi(a))


class Up(nn.Module):
    """Bilinear 2x upsample, (optionally gate the skip), concatenate the skip, ConvBlock."""

    def __init__(self, cin: int, cskip: int, cout: int, gate: bool = False):
        super().__init__()
        self.gate = AttentionGate(cskip, cin, max(cskip // 2, 4)) if gate else None
        self.block = ConvBlock(cin + cskip, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        if self.gate is not None:
            skip = self.gate(skip, x)
        return self.block(torch.cat([x, skip], dim=1))


class Encoder(nn.Module):
    """U-Net encoder: returns the feature pyramid, finest first.

    `stem_stride=2` starts at half resolution: 4x cheaper at the widest level, for dense classifiers whose logits
    are upsampled (segmentation), where per-pixel width matters more than the last half-pixel of precision.
    """

    def __init__(self, cin: int, widths: list[int], stem_stride: int = 1):
        super().__init__()
        if stem_stride not in (1, 2):
            raise ValueError(f"Encoder stem_stride must be 1 or 2, got {stem_stride}")
        self.stem = ConvBlock(cin, widths[0]) if stem_stride == 1 else Down(cin, widths[0])
        self.downs = nn.ModuleList(Down(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for down in self.downs:
            feats.append(down(feats[-1]))
        return feats


class Decoder(nn.Module):
    """U-Net decoder over an Encoder's pyramid; `bottleneck` may replace the coarsest feature."""

    def __init__(self, widths: list[int], cout: int, gates: bool = False):
        super().__init__()
        rev = widths[::-1]
        self.ups = nn.ModuleList(Up(a, s, s, gates) for a, s in zip(rev[:-1], rev[1:]))
        self.head = nn.Conv2d(widths[0], cout, 1)

    def forward(self, feats: list[torch.Tensor], bottleneck: torch.Tensor | None = None) -> torch.Tensor:
        x = feats[-1] if bottleneck is None else bottleneck
        for up, skip in zip(self.ups, feats[-2::-1]):
            x = up(x, skip)
        return self.head(x)


class UNet(nn.Module):
    """U-Net; with `attention` (needs the bottleneck size h x w) the skips are gated and the bottleneck runs
    global self-attention with 2D positions, so a pixel's label can depend on the whole figure."""

    def __init__(self, cin: int, cout: int, widths: list[int], stem_stride: int = 1,
                 attention: tuple[int, int] | None = None, heads: int = 4):
        super().__init__()
        self.stem_stride = stem_stride
        self.encoder = Encoder(cin, widths, stem_stride)
        self.decoder = Decoder(widths, cout, gates=attention is not None)
        self.attn = CrossAttention(widths[-1], heads, *attention) if attention is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.encoder(x)
        y = self.decoder(feats, None if self.attn is None else self.attn(feats[-1], feats[-1]))
        if self.stem_stride != 1:
            y = F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return y


def sincos_2d(channels: int, h: int, w: int) -> torch.Tensor:
    """2D sinusoidal positional encoding [h*w, channels]: half the channels encode y, half x."""
    assert channels % 4 == 0, "channels must be divisible by 4 for 2D sin/cos encoding"
    quarter = channels // 4
    freq = torch.exp(-math.log(10000.0) * torch.arange(quarter, dtype=torch.float32) / quarter)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    ay = ys.reshape(-1, 1) * freq
    ax = xs.reshape(-1, 1) * freq
    return torch.cat([ay.sin(), ay.cos(), ax.sin(), ax.cos()], dim=1)


class CrossAttention(nn.Module):
    """Multi-head cross-attention between two feature maps of the same size, with 2D sin/cos positions.

    Query comes from `x`, key/value from `context`; residual + pre-norm, then a small MLP. Written with plain
    matmuls so the exported graph is MatMul/Softmax only.
    """

    def __init__(self, channels: int, heads: int, h: int, w: int):
        super().__init__()
        self.heads = heads
        self.norm_q = nn.LayerNorm(channels)
        self.norm_kv = nn.LayerNorm(channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(channels, 2 * channels)
        self.proj = nn.Linear(channels, channels)
        self.mlp = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, 2 * channels), nn.GELU(),
                                 nn.Linear(2 * channels, channels))
        self.register_buffer("pos", sincos_2d(channels, h, w), persistent=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        d = c // self.heads
        xs = x.flatten(2).transpose(1, 2)                     # [B, N, C]
        cs = self.norm_kv(context.flatten(2).transpose(1, 2))
        q = self.q(self.norm_q(xs) + self.pos).reshape(b, h * w, self.heads, d).transpose(1, 2)
        k, v = self.kv(cs + self.pos).reshape(b, h * w, 2, self.heads, d).permute(2, 0, 3, 1, 4)
        attn = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b, h * w, c)
        xs = xs + self.proj(out)
        xs = xs + self.mlp(xs)
        return xs.transpose(1, 2).reshape(b, c, h, w)


def masked_moments(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel weighted mean and std [B,C,1,1] (ReduceMean only: exports to TensorRT-native ops)."""
    total = w.mean((2, 3), keepdim=True) + eps
    mu = (x * w).mean((2, 3), keepdim=True) / total
    var = ((x - mu) ** 2 * w).mean((2, 3), keepdim=True) / total
    return mu, torch.sqrt(var + eps)
