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
decoder's residual is added after it for what is local (edges, shading). Its error is almost all in that global
function (`python -m drape_train.recolor_bound`), so the head also reads colour correspondences: `ColourMatch`
pairs each on-model cell with the still colour it attends to at 1/8 resolution and hands over the affine
least-squares statistics of those pairs.

The photo is the still times a shading (folds, the body's curvature) and the still is flat, so RGB statistics of
the two garments differ even where the colour is right. With `shading_stats` (configs/recolor.yaml) the head also
reads statistics that shading does not move: the moments of colour per unit luminance and a soft maximum of
luminance (the least-shaded pixels) of both garments (`shading_free_stats`); with `shading_pairs` also
`ColourMatch`'s statistics of the same pairs per unit luminance.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .blocks import CrossAttention, Decoder, Encoder, masked_moments
from .representation import ParsingGroups, garment_prob


class RecolorNet(nn.Module):
    input_names = ("on_model", "still", "parsing_logits", "still_mask_logits")
    output_names = ("recolored", "garment_mask")

    def __init__(self, widths: list[int], height: int, width: int, heads: int = 4, shading_stats: bool = False,
                 shading_pairs: bool = False):
        super().__init__()
        self.shading_stats = shading_stats
        self.groups = ParsingGroups()
        self.enc_on = Encoder(7, widths)      # photo, garment mask, moment-matched base
        self.enc_still = Encoder(4, widths)
        f = 2 ** (len(widths) - 1)
        self.attn = CrossAttention(widths[-1], heads, height // f, width // f)
        self.decoder = Decoder(widths, 3)
        self.match = ColourMatch(widths[-2], 2 ** (len(widths) - 2), shading_free=shading_pairs)
        self.colour = ColourHead(2 * widths[-1] + 12 + ColourMatch.FEATURES * (1 + shading_pairs)
                                 + 2 * SHADING_FREE * shading_stats)

    def forward(self, on_model, still, parsing_logits, still_mask_logits):
        m = garment_prob(self.groups(parsing_logits))
        sm = torch.sigmoid(still_mask_logits)
        (mu_on, sd_on), (mu_st, sd_st) = masked_moments(on_model, m), masked_moments(still, sm)
        base = transfer(on_model, mu_on, sd_on, mu_st, sd_st)                 # moment_match, moments kept
        fo = self.enc_on(torch.cat([on_model * 2 - 1, m, base * 2 - 1], 1))
        fs = self.enc_still(torch.cat([(still * 2 - 1) * sm, sm], 1))
        bottleneck = self.attn(fo[-1], fs[-1])
        pairs = self.match(fo[-2], base, m, fs[-2], still, sm)
        stats = [bottleneck.mean((2, 3)), fs[-1].mean((2, 3)), *(t.flatten(1) for t in (mu_on, sd_on, mu_st, sd_st)),
                 pairs]
        if self.shading_stats:
            stats += [shading_free_stats(on_model, m), shading_free_stats(still, sm)]
        stats = torch.cat(stats, 1)
        graded = self.colour(base, stats)                                     # a global colour correction
        pred = torch.clamp(graded + self.decoder(fo, bottleneck), 0.0, 1.0)  # plus a local residual
        return m * pred + (1 - m) * on_model, m


class ColourHead(nn.Module):
    """Pooled features -> a quadratic RGB polynomial per image, applied to every pixel of ``x``; identity at init."""

    TERMS = 10   # 1, r, g, b, r^2, g^2, b^2, rg, rb, gb

    def __init__(self, in_features: int, hidden: int = 128):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, 3 * self.TERMS))
        nn.init.zeros_(self.mlp[-1].weight)
        identity = torch.zeros(3, self.TERMS)
        identity[0, 1] = identity[1, 2] = identity[2, 3] = 1.0
        with torch.no_grad():
            self.mlp[-1].bias.copy_(identity.flatten())

    def forward(self, x: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        coef = self.mlp(stats).reshape(b, 3, self.TERMS)
        r, g, bl = x[:, 0:1], x[:, 1:2], x[:, 2:3]
        terms = torch.cat([torch.ones_like(r), r, g, bl, r * r, g * g, bl * bl, r * g, r * bl, g * bl], 1)
        return (coef @ terms.flatten(2)).reshape(b, 3, h, w)                 # MatMul: [B,3,10] x [B,10,HW]


class ColourMatch(nn.Module):
    """Colour correspondences between the garments, summarised as least-squares statistics for the colour head.

    At 1/``factor`` resolution every on-model garment cell attends over the still's garment cells by appearance
    (no positions: the garment sits elsewhere in the still) and reads the still's mean colour there. The pairs
    (base colour x, matched still colour c) are reduced to the normal equations of an affine fit x -> c,
    E[phi phi^T] and E[phi c^T] with phi = (1, r, g, b), weighted by the garment mask: 28 numbers from which the
    head can read which base colour belongs to which still colour (a gradient's top and bottom, a print's two
    inks), what pooled moments cannot tell apart. MatMul/Softmax/AveragePool only.
    """

    FEATURES = 28

    def __init__(self, channels: int, factor: int, dim: int = 32, shading_free: bool = False):
        super().__init__()
        self.factor = factor
        self.shading_free = shading_free
        self.q = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, dim))
        self.k = nn.Sequential(nn.LayerNorm(channels), nn.Linear(channels, dim))
        self.scale = dim ** -0.5

    def _cells(self, img, mask):
        """Mask-weighted mean colour [B,N,3] and mask share [B,N,1] per cell."""
        w = nn.functional.avg_pool2d(mask, self.factor)
        c = nn.functional.avg_pool2d(img * mask, self.factor) / (w + 1e-4)
        return c.flatten(2).transpose(1, 2), w.flatten(2).transpose(1, 2)

    def forward(self, f_on, base, m, f_still, still, sm):
        x, w_on = self._cells(base, m)
        c, w_st = self._cells(still, sm)
        q = self.q(f_on.flatten(2).transpose(1, 2))
        k = self.k(f_still.flatten(2).transpose(1, 2))
        attn = torch.softmax(q @ k.transpose(1, 2) * self.scale, -1) * (w_st + 1e-4).transpose(1, 2)
        read = attn @ torch.cat([c, torch.ones_like(c[..., :1])], -1)       # [B,N,4]: sum a*c, sum a
        matched = read[..., :3] / read[..., 3:]                               # background cells weigh ~0
        out = self._normal_equations(x, matched, w_on)
        if self.shading_free:   # the same pairs, each colour per unit luminance: shading cancels
            out = torch.cat([out, self._normal_equations(per_luminance(x), per_luminance(matched), w_on)], 1)
        return out

    @staticmethod
    def _normal_equations(x, c, w):
        phi = torch.cat([torch.ones_like(x[..., :1]), x], -1)                 # [B,N,4]
        raw = (phi * w).transpose(1, 2) @ torch.cat([phi, c], -1)             # [B,4,7]; [0,0] = sum of weights
        raw = raw / (raw[:, :1, :1] + 1e-4)
        gram, cross = raw[..., :4], raw[..., 4:]                              # E_w[phi phi^T], E_w[phi c^T]
        return torch.cat([gram.flatten(1), cross.flatten(1)], 1)


SHADING_FREE = 8
LUMA = (0.2126, 0.7152, 0.0722)


def luminance(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Rec. 709 luma of the RGB channels along ``dim`` (kept, size 1)."""
    return sum(c * x.narrow(dim, i, 1) for i, c in enumerate(LUMA))


def per_luminance(x: torch.Tensor, dim: int = -1, lum: torch.Tensor | None = None) -> torch.Tensor:
    """Colour divided by its luminance (+0.05, so black stays finite): unchanged by a multiplicative shading.
    ``lum``: luminance(x, dim) where the caller has it already."""
    return x / ((luminance(x, dim) if lum is None else lum) + 0.05)


def shading_free_stats(x: torch.Tensor, w: torch.Tensor, sharpness: float = 8.0) -> torch.Tensor:
    """[B,8]: weighted mean and std of colour per unit luminance, and a soft maximum and mean of luminance.

    The photo is the still times a shading <= 1 (folds, the body's curvature); the still is flat. Colour divided
    by luminance does not change with shading, so its moments compare the two garments' inks where RGB moments
    compare inks times shading; and the brightest photo pixels are the least shaded, so the soft maximum of
    luminance is the one brightness statistic the still and the undegraded photo share.
    """
    lum = luminance(x, 1)
    mu, sd = masked_moments(per_luminance(x, 1, lum), w)
    e = torch.exp(sharpness * (lum - 1.0)) * w                     # <= 1: no FP16 overflow in the engine
    soft_max = (lum * e).mean((2, 3)) / (e.mean((2, 3)) + 1e-7)
    mean = (lum * w).mean((2, 3)) / (w.mean((2, 3)) + 1e-4)
    return torch.cat([mu.flatten(1), sd.flatten(1), soft_max, mean], 1)


def moment_match(src: torch.Tensor, src_w: torch.Tensor, ref: torch.Tensor, ref_w: torch.Tensor) -> torch.Tensor:
    """``src`` with its weighted per-channel moments replaced by ``ref``'s, clamped to [0, 1]."""
    return transfer(src, *masked_moments(src, src_w), *masked_moments(ref, ref_w))


def transfer(src: torch.Tensor, mu_s: torch.Tensor, sd_s: torch.Tensor, mu_r: torch.Tensor,
             sd_r: torch.Tensor) -> torch.Tensor:
    """``src`` moved from moments (mu_s, sd_s) to (mu_r, sd_r) channel by channel, clamped to [0, 1]."""
    return torch.clamp((src - mu_s) / sd_s * sd_r + mu_r, 0.0, 1.0)
