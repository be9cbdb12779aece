"""Losses beyond plain L1/CE: perceptual + style (VGG19), optional PatchGAN, and segmentation options.

VGG19 weights are never downloaded (no network at run time): the user supplies a state dict by path, with
torchvision's key names (`features.0.weight`, ...), e.g. the published ImageNet `vgg19-dcbb9e9d.pth`. Without
it the perceptual and style terms are disabled with one log line, and training goes on without them.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger("drape_train")

# VGG19 ("configuration E"): channels per conv, "M" = max-pool.
VGG19_CFG = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
# indices in `features` of relu1_2, relu2_2, relu3_4, relu4_4, relu5_4 (torchvision numbering)
VGG19_TAPS = (3, 8, 17, 26, 35)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg19_features() -> nn.Sequential:
    layers, cin = [], 3
    for v in VGG19_CFG:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=False)]
            cin = v
    return nn.Sequential(*layers)


class VGGFeatures(nn.Module):
    """Frozen VGG19 feature taps for perceptual and style losses. Inputs are RGB in [0,1]."""

    def __init__(self, weights: str | Path):
        super().__init__()
        self.features = vgg19_features()[: VGG19_TAPS[-1] + 1]
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
        missing, _ = self.features.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"{weights}: not a VGG19 state dict (missing {missing[:3]}...)")
        self.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):
        return super().train(False)   # always frozen

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = (x - self.mean) / self.std
        taps = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG19_TAPS:
                taps.append(x)
        return taps


def load_vgg(weights: str | None) -> VGGFeatures | None:
    if not weights:
        log.warning("perceptual/style losses disabled: no VGG19 weights given (set loss.vgg19_weights to a path)")
        return None
    if not Path(weights).exists():
        log.warning("perceptual/style losses disabled: VGG19 weights %s not found", weights)
        return None
    return VGGFeatures(weights)


def gram(f: torch.Tensor) -> torch.Tensor:
    b, c, h, w = f.shape
    f = f.flatten(2)
    return f @ f.transpose(1, 2) / (c * h * w)


def perceptual_and_style(vgg: VGGFeatures, pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    fp, ft = vgg(pred), vgg(target)
    perceptual = sum(F.l1_loss(a, b) for a, b in zip(fp, ft)) / len(fp)
    style = sum(F.l1_loss(gram(a), gram(b)) for a, b in zip(fp, ft)) / len(fp)
    return perceptual, style


class PatchDiscriminator(nn.Module):
    """PatchGAN (70x70-style, smaller): conditioned on the network input, judges local realism."""

    def __init__(self, cin: int, width: int = 32, layers: int = 3):
        super().__init__()
        mods, c = [nn.Conv2d(cin, width, 4, 2, 1), nn.LeakyReLU(0.2, True)], width
        for _ in range(layers - 1):
            mods += [nn.Conv2d(c, c * 2, 4, 2, 1), nn.InstanceNorm2d(c * 2), nn.LeakyReLU(0.2, True)]
            c *= 2
        mods += [nn.Conv2d(c, 1, 4, 1, 1)]
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Binary focal loss (Lin et al. 2017): down-weights easy pixels so thin garment parts count."""
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = torch.exp(-bce)
    return ((1 - p_t) ** gamma * bce).mean()


def tversky_loss(prob: torch.Tensor, target: torch.Tensor, alpha: float = 0.3, beta: float = 0.7,
                 eps: float = 1.0) -> torch.Tensor:
    """Tversky index loss: beta > alpha penalises missed garment more than spill-over."""
    tp = (prob * target).sum((-2, -1))
    fp = (prob * (1 - target)).sum((-2, -1))
    fn = ((1 - prob) * target).sum((-2, -1))
    return (1 - (tp + eps) / (tp + alpha * fp + beta * fn + eps)).mean()


def boundary_loss(prob: torch.Tensor, target: torch.Tensor, width: int = 3) -> torch.Tensor:
    """L1 between predicted and true mask restricted to a band around the true boundary (morphological gradient)."""
    k = 2 * width + 1
    dil = F.max_pool2d(target, k, 1, width)
    ero = -F.max_pool2d(-target, k, 1, width)
    band = dil - ero
    return ((prob - target).abs() * band).sum() / band.sum().clamp_min(1.0)
