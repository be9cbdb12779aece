"""Recolor U-Net: dual encoders, cross-attention bottleneck (query on-model, key/value still), mask-aware output.

The decoder only sees skips from the on-model encoder: geometry and texture come from the photo, colour from
the still through attention. Outside the garment the input passes through untouched.

The network starts from a classical answer and learns what it gets wrong: the on-model garment's per-channel
mean/std matched to the still garment's (Reinhard's transfer, in RGB, with the soft masks as weights). That base
is an input of the on-model encoder and the decoder predicts a residual on top of it, so early training already
sits at the classical baseline and the learned part is the non-linear rest (hue rotations, shading).

A degradation is one colour function applied to every garment pixel, so most of what the base gets wrong is
global too: a small head (`ColourHead`) reads the pooled features of both encoders and the garments' colour
moments and predicts a quadratic colour polynomial (per output channel: 1, r, g, b, r², g², b², rg, rb, gb)
applied to the base pixel by pixel. It starts as the identity, so training still starts at the base; the
decoder's residual is added after it for what is local (edges, shading).

Options (model config): ``colour_bins`` gives the head soft RGB histograms of both garments (which colours
there are, not just their mean and spread: a striped or gradient garment has several), ``colour_mlp`` adds a
per-image pixel MLP (3 -> hidden -> 3, its weights predicted by the head, a residual starting at zero) after the
polynomial, for colour functions a quadratic cannot follow. Both 0 by default.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .blocks import CrossAttention, Decoder, Encoder
from .representation import ParsingGroups, garment_prob


class RecolorNet(nn.Module):
    input_names = ("on_model", "still", "parsing_logits", "still_mask_logits")
    output_names = ("recolored", "garment_mask")

    def __init__(self, widths: list[int], height: int, width: int, heads: int = 4, colour_bins: int = 0,
                 colour_mlp: int = 0):
        super().__init__()
        self.groups = ParsingGroups()
        self.enc_on = Encoder(7, widths)      # photo, garment mask, moment-matched base
        self.enc_still = Encoder(4, widths)
        f = 2 ** (len(widths) - 1)
        self.attn = CrossAttention(widths[-1], heads, height // f, width // f)
        self.decoder = Decoder(widths, 3)
        self.hist = SoftHistogram(colour_bins) if colour_bins else None
        n_hist = 2 * colour_bins ** 3 if colour_bins else 0
        self.colour = ColourHead(2 * widths[-1] + 12 + n_hist, mlp=colour_mlp)

    def forward(self, on_model, still, parsing_logits, still_mask_logits):
        m = garment_prob(self.groups(parsing_logits))
        sm = torch.sigmoid(still_mask_logits)
        (mu_on, sd_on), (mu_st, sd_st) = masked_moments(on_model, m), masked_moments(still, sm)
        base = transfer(on_model, mu_on, sd_on, mu_st, sd_st)                 # moment_match, moments kept
        fo = self.enc_on(torch.cat([on_model * 2 - 1, m, base * 2 - 1], 1))
        fs = self.enc_still(torch.cat([(still * 2 - 1) * sm, sm], 1))
        bottleneck = self.attn(fo[-1], fs[-1])
        stats = torch.cat([bottleneck.mean((2, 3)), fs[-1].mean((2, 3)),
                           *(t.flatten(1) for t in (mu_on, sd_on, mu_st, sd_st))], 1)
        if self.hist is not None:
            stats = torch.cat([stats, self.hist(on_model, m), self.hist(still, sm)], 1)
        graded = self.colour(base, stats)                                     # a global colour correction
        pred = torch.clamp(graded + self.decoder(fo, bottleneck), 0.0, 1.0)  # plus a local residual
        return m * pred + (1 - m) * on_model, m


class ColourHead(nn.Module):
    """Pooled features -> a quadratic RGB polynomial per image, applied to every pixel of ``x``; identity at init."""

    TERMS = 10   # 1, r, g, b, r^2, g^2, b^2, rg, rb, gb

    def __init__(self, in_features: int, hidden: int = 128, mlp: int = 0):
        super().__init__()
        self.hidden = mlp     # pixel MLP 3 -> mlp -> 3: W1 [mlp,3], b1 [mlp], W2 [3,mlp], b2 [3]
        n_mlp = 7 * mlp + 3 if mlp else 0
        self.mlp = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, 3 * self.TERMS + n_mlp))
        nn.init.zeros_(self.mlp[-1].weight)
        bias = torch.zeros(3 * self.TERMS + n_mlp)
        bias[[1, self.TERMS + 2, 2 * self.TERMS + 3]] = 1.0                   # the polynomial: identity
        if mlp:   # W1, b1 fixed random at init (hidden units that vary with the colour); W2 = b2 = 0: no change yet
            bias[3 * self.TERMS:3 * self.TERMS + 4 * mlp] = torch.randn(4 * mlp, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            self.mlp[-1].bias.copy_(bias)

    def forward(self, x: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        params = self.mlp(stats)
        coef = params[:, :3 * self.TERMS].reshape(b, 3, self.TERMS)
        r, g, bl = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        terms = torch.cat([torch.ones_like(r), r, g, bl, r * r, g * g, bl * bl, r * g, r * bl, g * bl], 1)
        y = coef @ terms.flatten(2)                                           # MatMul: [B,3,10] x [B,10,HW]
        if self.hidden:
            k, o = self.hidden, 3 * self.TERMS
            w1 = params[:, o:o + 3 * k].reshape(b, k, 3)
            b1 = params[:, o + 3 * k:o + 4 * k].reshape(b, k, 1)
            w2 = params[:, o + 4 * k:o + 7 * k].reshape(b, 3, k)
            b2 = params[:, o + 7 * k:o + 7 * k + 3].reshape(b, 3, 1)
            y = y + w2 @ F.gelu(w1 @ (y * 2 - 1) + b1) + b2
        return y.reshape(b, 3, h, w)


class SoftHistogram(nn.Module):
    """Mask-weighted soft RGB histogram [B, bins^3] of an image at 1/4 resolution (MatMul + Softmax: exportable)."""

    def __init__(self, bins: int):
        super().__init__()
        axis = torch.linspace(0.0, 1.0, bins)
        centres = torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"), -1).reshape(-1, 3)
        self.register_buffer("centres", centres, persistent=False)
        self.inv_two_var = 1.0 / (2 * (0.6 / max(bins - 1, 1)) ** 2)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        xs, ws = F.avg_pool2d(x, 4), F.avg_pool2d(w, 4)
        px = xs.flatten(2).transpose(1, 2)                                    # [B, N, 3]
        ww = ws.flatten(2).transpose(1, 2)                                    # [B, N, 1]
        c2 = (self.centres ** 2).mean(-1) * 3                                # sums written as means: ReduceMean
        d2 = (px * px).mean(-1, keepdim=True) * 3 - 2 * px @ self.centres.t() + c2
        p = torch.softmax(d2 * (-self.inv_two_var), -1)                      # [B, N, K] (Mul, not Neg)
        return (p * ww).mean(1) / (ww.mean(1) + 1e-4)


def masked_moments(x: torch.Tensor, w: torch.Tensor, eps: float = 1e-4) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel weighted mean and std [B,C,1,1] (ReduceMean only: exports to TensorRT-native ops)."""
    total = w.mean((2, 3), keepdim=True) + eps
    mu = (x * w).mean((2, 3), keepdim=True) / total
    var = ((x - mu) ** 2 * w).mean((2, 3), keepdim=True) / total
    return mu, torch.sqrt(var + eps)


def moment_match(src: torch.Tensor, src_w: torch.Tensor, ref: torch.Tensor, ref_w: torch.Tensor) -> torch.Tensor:
    """``src`` with its weighted per-channel moments replaced by ``ref``'s, clamped to [0, 1]."""
    return transfer(src, *masked_moments(src, src_w), *masked_moments(ref, ref_w))


def transfer(src: torch.Tensor, mu_s: torch.Tensor, sd_s: torch.Tensor, mu_r: torch.Tensor,
             sd_r: torch.Tensor) -> torch.Tensor:
    """``src`` moved from moments (mu_s, sd_s) to (mu_r, sd_r) channel by channel, clamped to [0, 1]."""
    return torch.clamp((src - mu_s) / sd_s * sd_r + mu_r, 0.0, 1.0)
