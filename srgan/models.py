"""SRGAN networks, as in Ledig et al. 2017, "Photo-Realistic Single Image Super-Resolution
Using a Generative Adversarial Network" (arXiv:1609.04802), Figure 4.

Generator (SRResNet): 9x9 conv + PReLU, B residual blocks, conv3x3-BN + long skip,
log2(scale) upsampling stages (conv3x3 -> PixelShuffle(2) -> PReLU), 9x9 conv out.
Discriminator: eight 3x3 conv layers (64..512 filters, stride 1/2 alternating), LeakyReLU 0.2,
dense 1024, LeakyReLU, dense 1 (a logit; the sigmoid lives in the loss).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from srgan.errors import ConfigError


@dataclass(frozen=True)
class GeneratorConfig:
    scale: int = 4  # upscaling factor: 2, 4 or 8
    in_channels: int = 3  # 3 for RGB photos, 1 for FITS / grayscale
    out_channels: int = 3
    channels: int = 64  # feature maps in the residual trunk
    blocks: int = 16  # number of residual blocks (B in the paper)
    batch_norm: bool = True  # the paper's BN; False drops it (helps PSNR models and tiling)

    def __post_init__(self):
        if self.scale not in (2, 4, 8):
            raise ConfigError(f"scale must be 2, 4 or 8, got {self.scale}")
        for name in ("in_channels", "out_channels", "channels", "blocks"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GeneratorConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown generator config keys: {sorted(unknown)}")
        return cls(**d)


def _norm(channels: int, batch_norm: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()


class ResidualBlock(nn.Module):
    """conv3x3 - BN - PReLU - conv3x3 - BN, plus the identity skip."""

    def __init__(self, channels: int, batch_norm: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn1 = _norm(channels, batch_norm)
        self.act = nn.PReLU(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn2 = _norm(channels, batch_norm)

    def forward(self, x):
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class UpsampleBlock(nn.Module):
    """conv3x3 to 4C channels -> PixelShuffle(2) -> PReLU: doubles H and W."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.act = nn.PReLU(channels)

    def forward(self, x):
        return self.act(self.shuffle(self.conv(x)))


class Generator(nn.Module):
    """SRResNet generator: (B, in_channels, H, W) -> (B, out_channels, H*scale, W*scale).

    Inputs are in the model's normalised space (photos: RGB in [0, 1]); outputs are in the
    same space and are not clamped, so the caller decides how to quantise.

    >>> g = Generator(GeneratorConfig(scale=2, channels=8, blocks=1))
    >>> g(torch.zeros(1, 3, 5, 7)).shape
    torch.Size([1, 3, 10, 14])
    """

    def __init__(self, config: GeneratorConfig = GeneratorConfig()):
        super().__init__()
        self.config = config
        c = config.channels
        self.head = nn.Sequential(nn.Conv2d(config.in_channels, c, 9, padding=4), nn.PReLU(c))
        self.body = nn.Sequential(*[ResidualBlock(c, config.batch_norm) for _ in range(config.blocks)])
        self.body_tail = nn.Sequential(nn.Conv2d(c, c, 3, padding=1), _norm(c, config.batch_norm))
        self.upsample = nn.Sequential(*[UpsampleBlock(c) for _ in range(int(math.log2(config.scale)))])
        self.tail = nn.Conv2d(c, config.out_channels, 9, padding=4)

    def forward(self, x):
        h = self.head(x)  # (B, C, H, W)
        h = h + self.body_tail(self.body(h))  # long skip over the residual trunk
        return self.tail(self.upsample(h))  # (B, out, sH, sW)


def receptive_radius(config: GeneratorConfig) -> int:
    """How many LR pixels beyond a pixel can influence its output (the generator's halo).

    Each 3x3 conv adds 1 LR pixel, each 9x9 conv adds 4; convolutions after an upsampling
    stage act on a finer grid, so their reach is divided by the scale reached so far
    (rounded up). Tiles whose overlap is at least this radius reproduce whole-image inference
    exactly (up to float rounding), when BatchNorm is in eval mode.
    """
    radius = 4 + 2 * config.blocks + 1  # head 9x9, two 3x3 per block, body tail 3x3
    stages = int(math.log2(config.scale))
    for i in range(stages):
        radius += math.ceil(1 / 2**i)  # conv3x3 at scale 2**i before its PixelShuffle
    radius += math.ceil(4 / config.scale)  # tail 9x9 on the output grid
    return radius


class Discriminator(nn.Module):
    """The paper's discriminator: (B, in_channels, H, W) -> (B,) real/fake logits.

    Eight conv layers k3n64s1, k3n64s2, k3n128s1, k3n128s2, k3n256s1, k3n256s2, k3n512s1,
    k3n512s2 with LeakyReLU(0.2) and BN after every layer but the first, then dense 1024,
    LeakyReLU, dense 1. An adaptive average pool before the dense layers lets it take any
    patch of at least 16 px (the paper's 96 px patches give a 6x6 map that it flattens).

    >>> Discriminator(in_channels=1)(torch.zeros(2, 1, 16, 24)).shape
    torch.Size([2])
    """

    def __init__(self, in_channels: int = 3, base_channels: int = 64):
        super().__init__()
        layers = []
        widths = [base_channels * m for m in (1, 1, 2, 2, 4, 4, 8, 8)]
        prev = in_channels
        for i, width in enumerate(widths):
            stride = 1 if i % 2 == 0 else 2
            layers.append(nn.Conv2d(prev, width, 3, stride=stride, padding=1))
            if i > 0:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            prev = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(prev, 1024), nn.LeakyReLU(0.2, inplace=True), nn.Linear(1024, 1)
        )

    def forward(self, x):
        if x.shape[-1] < 16 or x.shape[-2] < 16:
            raise ConfigError(f"discriminator needs patches of at least 16 px, got {tuple(x.shape[-2:])}")
        h = self.pool(self.features(x)).flatten(1)  # (B, 512)
        return self.classifier(h).squeeze(1)  # (B,)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
