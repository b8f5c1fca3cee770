"""Training losses: pixel, VGG19 content, adversarial (three kinds), total variation.

SRGAN (Ledig et al. 2017) trains the generator on a weighted sum::

    total = pixel * l_pixel + content * l_VGG + adversarial * l_adv + tv * l_TV

with the paper's weights content=1, adversarial=1e-3, TV=2e-8 (:class:`LossWeights`).
Pre-training (SRResNet) uses the pixel loss alone. :func:`generator_loss` and
:func:`discriminator_loss_terms` return the total and every term separately for logging.

Adversarial kinds (``--gan-loss``):

- ``"bce"`` (the paper): D maximises ``log D(real) + log(1 - D(fake))``; G minimises the
  non-saturating ``-log D(fake)``; D outputs logits, losses use BCE-with-logits.
- ``"relativistic"`` (relativistic average GAN, ESRGAN): D estimates whether real is more
  realistic than the average fake: ``D_ra(a, b) = sigmoid(C(a) - mean C(b))``; both D and G
  losses use both real and fake logits (each loss is the mean of its two BCE terms).
- ``"wgan-gp"`` (Wasserstein with gradient penalty, Gulrajani et al. 2017): critic loss
  ``mean C(fake) - mean C(real)`` plus ``weights.gradient_penalty * gradient_penalty(...)``;
  G loss ``-mean C(fake)``.

Example:
    >>> sr, hr = torch.zeros(1, 3, 8, 8), torch.ones(1, 3, 8, 8)
    >>> float(pixel_loss(sr, hr, "l1")), float(tv_loss(hr))
    (1.0, 0.0)
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import kornia
import torch
import torch.nn as nn
import torch.nn.functional as F

from srgan.errors import ConfigError, ModelError, WeightsUnavailableError

GAN_LOSSES = ("bce", "relativistic", "wgan-gp")
PIXEL_LOSSES = ("mse", "l1")
# index of the ReLU after which torchvision's vgg19().features is cut (inclusive)
VGG_LAYERS = {"relu2_2": 8, "relu5_4": 35}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DOWNLOAD_TIMEOUT_S = 5.0


@dataclass
class LossWeights:
    """Weights of the generator's loss terms and of the WGAN gradient penalty."""

    pixel: float = 0.0  # pixel loss in the GAN phase (pre-training uses pixel loss alone)
    content: float = 1.0  # VGG content loss, or pixel MSE when no VGG is used (SRGAN-MSE)
    adversarial: float = 1e-3  # the paper's 1e-3
    tv: float = 2e-8  # the paper's 2e-8 on the summed TV of tv_loss
    gradient_penalty: float = 10.0  # lambda of WGAN-GP (Gulrajani et al. 2017); only for "wgan-gp"


# ---------------------------------------------------------------------------- simple terms

def pixel_loss(sr: torch.Tensor, hr: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean squared ("mse") or mean absolute ("l1") error over all elements.

    Args:
        sr, hr: (B, C, H, W), same shape.
    Returns:
        0-d tensor.
    """
    if kind == "mse":
        return F.mse_loss(sr, hr)
    if kind == "l1":
        return F.l1_loss(sr, hr)
    raise ConfigError(f"pixel loss must be one of {PIXEL_LOSSES}, got {kind!r}")


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation: sum of |horizontal| + |vertical| neighbour differences
    over C, H, W of each image, averaged over the batch (kornia.losses.total_variation).

    Summed (not averaged) over pixels, so it grows with the patch size; the paper's weight
    2e-8 makes it a small regulariser next to a content loss of order 1e-2.

    Args:
        x: (B, C, H, W).
    Returns:
        0-d tensor; 0 for a constant image, ``C * H * (W - 1) * a`` for a horizontal ramp of slope a.
    """
    tv = kornia.losses.total_variation(x, reduction="sum")  # (B, C): one value per channel
    return tv.reshape(x.shape[0], -1).sum(dim=1).mean()


# ---------------------------------------------------------------------------- VGG content

def vgg_cache_path() -> Path:
    """Where torch.hub keeps (and looks for) torchvision's VGG19 ImageNet weights."""
    from torchvision.models import VGG19_Weights

    filename = os.path.basename(VGG19_Weights.IMAGENET1K_V1.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def _vgg_features(cut: int) -> nn.Sequential:
    """vgg19().features[:cut + 1], built without the 120M-parameter classifier."""
    from torchvision.models.vgg import cfgs, make_layers

    cfg, n = [], 0
    for v in cfgs["E"]:  # only the layers up to the cut: building all of conv5 costs seconds
        if n > cut:
            break
        cfg.append(v)
        n += 1 if v == "M" else 2  # "M" = max pool; a width = conv + ReLU
    features = make_layers(cfg, batch_norm=False)[: cut + 1]
    for m in features.modules():  # torchvision's VGG init (keeps random features from vanishing)
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return features


def _download_imagenet_vgg19() -> dict:
    from torchvision.models import VGG19_Weights

    url = VGG19_Weights.IMAGENET1K_V1.url
    cached = vgg_cache_path()
    if cached.is_file():
        return torch.load(cached, map_location="cpu", weights_only=True)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)  # urllib has no timeout of its own: bound the hang
    try:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False,
                                                  check_hash=True, weights_only=True)
    except (OSError, RuntimeError) as e:  # URLError, timeouts, a corrupt download (hash mismatch)
        raise WeightsUnavailableError(
            f"VGG19 ImageNet weights are not in the torch hub cache ({cached}) and could not be "
            f"downloaded from {url} ({e}). Either run once with internet access, or download "
            f"{os.path.basename(url)} elsewhere and pass --vgg-weights PATH (or copy it to {cached})."
        ) from e
    finally:
        socket.setdefaulttimeout(old)


def _load_state_dict_file(path: Path) -> dict:
    if not path.is_file():
        raise WeightsUnavailableError(f"VGG19 weights file {path} not found; check --vgg-weights")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)  # never unpickles code
    except Exception as e:  # noqa: BLE001 - any reader failure means the same thing to the user
        raise ModelError(f"cannot read VGG19 weights from {path} ({e}); --vgg-weights expects "
                         f"torchvision's vgg19-dcbb9e9d.pth or a .safetensors of the same state dict") from e


class VGGContentLoss(nn.Module):
    """MSE between VGG19 feature maps of SR and HR (the paper's VGG22 / VGG54 losses).

    Inputs in [0, 1] are normalised with the ImageNet mean/std (torchvision's convention);
    1-channel inputs are replicated to 3. Features are taken after the chosen ReLU
    ("relu2_2" = VGG22, "relu5_4" = VGG54). The loss is ``mean((rescale * (phi(sr) -
    phi(hr)))**2)``, i.e. feature maps multiplied by `rescale` (the paper's 1/12.75) before
    the MSE, so the value is ``rescale**2`` times the plain feature MSE. The paper's VGG was
    the Caffe model on 0-255 inputs; torchvision's takes standardised [0, 1] inputs, so its
    features (and this loss) are smaller in absolute terms: tune LossWeights.content if needed.

    The network is frozen and stays in eval mode; gradients flow to `sr` only.

    Args:
        layer: "relu5_4" or "relu2_2".
        weights: "imagenet" (torchvision's VGG19_Weights.IMAGENET1K_V1 from the torch hub
            cache, downloaded when online), a path to a .pth (torchvision state dict, loaded
            with weights_only=True) or .safetensors file, or None for random weights (tests only:
            a random VGG is not a perceptual loss).
        rescale: factor applied to the feature maps.
    Raises:
        WeightsUnavailableError: "imagenet" offline without a cached file, or a missing path.
        ModelError: the file is not a VGG19 state dict.
    """

    def __init__(self, layer: str = "relu5_4", weights: str | os.PathLike | None = "imagenet",
                 rescale: float = 1 / 12.75):
        super().__init__()
        if layer not in VGG_LAYERS:
            raise ConfigError(f"VGG layer must be one of {tuple(VGG_LAYERS)}, got {layer!r}")
        self.layer, self.rescale = layer, rescale
        cut = VGG_LAYERS[layer]
        self.features = _vgg_features(cut)
        if weights is not None:
            state = _download_imagenet_vgg19() if weights == "imagenet" else _load_state_dict_file(Path(weights))
            self._load(state, cut, weights)
        self.features.requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def _load(self, state: dict, cut: int, source) -> None:
        if any(k.startswith("features.") for k in state):
            state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        state = {k: v for k, v in state.items() if k.split(".")[0].isdigit() and int(k.split(".")[0]) <= cut}
        try:
            self.features.load_state_dict(state, strict=True)
        except (RuntimeError, ValueError) as e:
            raise ModelError(f"{source} is not a VGG19 (configuration E) state dict: {e}") from e

    def train(self, mode: bool = True):
        """Stay in eval mode: the loss network is frozen."""
        return super().train(False)

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}, rescale={self.rescale:.6g}"

    def _phi(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ConfigError(f"VGG content loss needs 1 or 3 channels, got {x.shape[1]}")
        return self.features((x - self.mean) / self.std) * self.rescale

    def forward(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """Args: sr, hr (B, C, H, W) in [0, 1], C = 1 or 3. Returns: 0-d tensor."""
        with torch.no_grad():
            target = self._phi(hr)
        return F.mse_loss(self._phi(sr), target)


# ---------------------------------------------------------------------------- adversarial

def _check_gan(kind: str) -> None:
    if kind not in GAN_LOSSES:
        raise ConfigError(f"GAN loss must be one of {GAN_LOSSES} (--gan-loss), got {kind!r}")


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "bce") -> torch.Tensor:
    """Discriminator (critic) loss to minimise, without the WGAN gradient penalty.

    Args:
        real_logits: (B,) or (B, 1) D(hr). fake_logits: same shape, D(sr) with sr detached.
        kind: "bce", "relativistic" or "wgan-gp" (see module doc).
    Returns:
        0-d tensor; lower when D scores real above fake.
    """
    _check_gan(kind)
    if kind == "bce":
        return _bce(real_logits, 1.0) + _bce(fake_logits, 0.0)
    if kind == "relativistic":
        return 0.5 * (_bce(real_logits - fake_logits.mean(), 1.0) + _bce(fake_logits - real_logits.mean(), 0.0))
    return fake_logits.mean() - real_logits.mean()


def generator_adversarial_loss(real_logits: torch.Tensor | None, fake_logits: torch.Tensor,
                               kind: str = "bce") -> torch.Tensor:
    """Generator's adversarial loss to minimise; lower when D scores the fakes higher.

    Args:
        real_logits: (B,) or (B, 1) D(hr), detached; only used (and required) by "relativistic".
        fake_logits: same shape, D(sr), with gradients to the generator.
        kind: "bce", "relativistic" or "wgan-gp".
    Returns:
        0-d tensor.
    """
    _check_gan(kind)
    if kind == "bce":
        return _bce(fake_logits, 1.0)
    if kind == "relativistic":
        if real_logits is None:
            raise ConfigError("the relativistic GAN loss needs the discriminator's logits on real images")
        real_logits = real_logits.detach()
        return 0.5 * (_bce(real_logits - fake_logits.mean(), 0.0) + _bce(fake_logits - real_logits.mean(), 1.0))
    return -fake_logits.mean()


def gradient_penalty(discriminator: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor,
                     fake: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP penalty ``mean((||grad_x D(x_hat)||_2 - 1)^2)`` on random interpolates, unweighted.

    ``x_hat = a * real + (1 - a) * fake`` with one ``a ~ U[0, 1)`` per sample (drawn from
    `generator`). Multiply by ``LossWeights.gradient_penalty`` (lambda, 10 in the paper).
    The graph is kept (create_graph=True) so the penalty trains D. Note the per-sample
    gradient assumes D treats samples independently: BatchNorm in D breaks that assumption.

    Args:
        discriminator: module mapping (B, C, H, W) to (B,) or (B, 1) logits.
        real, fake: (B, C, H, W); fake is detached here.
    Returns:
        0-d tensor.
    """
    b = real.shape[0]
    where = generator.device if generator is not None else real.device
    a = torch.rand(b, 1, 1, 1, generator=generator, device=where).to(device=real.device, dtype=real.dtype)
    x_hat = (a * real.detach() + (1 - a) * fake.detach()).requires_grad_(True)
    out = discriminator(x_hat)
    (grad,) = torch.autograd.grad(out.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1).square().mean()


# ---------------------------------------------------------------------------- totals

def generator_loss(sr: torch.Tensor, hr: torch.Tensor, *, weights: LossWeights = LossWeights(),
                   discriminator: nn.Module | None = None, content: nn.Module | None = None,
                   gan_loss: str = "bce", pixel_kind: str = "mse") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The generator's weighted total and its unweighted terms.

    Terms with weight 0 are skipped. ``content`` is the VGG loss module; None means the
    content term is pixel MSE (the paper's SRGAN-MSE variant). The adversarial term needs
    `discriminator` (it is skipped when None): D(sr) carries gradients to G (and fills D's
    .grad, so zero D's gradients before its own step); "relativistic" also runs D(hr).

    Args:
        sr: (B, C, H, W) generator output. hr: (B, C, H, W) target.
    Returns:
        (total 0-d tensor with grad, {"pixel", "content", "adversarial", "tv": detached 0-d
        tensors, unweighted, only the terms computed}).

    Example (pre-training)::

        total, terms = generator_loss(sr, hr, weights=LossWeights(pixel=1, content=0, adversarial=0, tv=0))
    """
    _check_gan(gan_loss)
    terms: dict[str, torch.Tensor] = {}
    total = sr.new_zeros(())
    if weights.pixel:
        terms["pixel"] = pixel_loss(sr, hr, pixel_kind)
        total = total + weights.pixel * terms["pixel"]
    if weights.content:
        terms["content"] = content(sr, hr) if content is not None else pixel_loss(sr, hr, "mse")
        total = total + weights.content * terms["content"]
    if weights.adversarial and discriminator is not None:
        fake_logits = discriminator(sr)
        real_logits = discriminator(hr).detach() if gan_loss == "relativistic" else None
        terms["adversarial"] = generator_adversarial_loss(real_logits, fake_logits, gan_loss)
        total = total + weights.adversarial * terms["adversarial"]
    if weights.tv:
        terms["tv"] = tv_loss(sr)
        total = total + weights.tv * terms["tv"]
    return total, {k: v.detach() for k, v in terms.items()}


def discriminator_loss_terms(discriminator: nn.Module, hr: torch.Tensor, sr: torch.Tensor, *,
                             gan_loss: str = "bce", weights: LossWeights = LossWeights(),
                             generator: torch.Generator | None = None
                             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The discriminator's total loss (plus weighted gradient penalty for "wgan-gp") and log terms.

    Args:
        hr: (B, C, H, W) real images. sr: (B, C, H, W) generator output (detached here).
        generator: RNG for the gradient-penalty interpolation.
    Returns:
        (total 0-d tensor, {"d_loss", "d_real", "d_fake" (mean logits), "gp" (wgan-gp only)}
        as detached 0-d tensors).
    """
    _check_gan(gan_loss)
    sr = sr.detach()
    real_logits, fake_logits = discriminator(hr), discriminator(sr)
    d = discriminator_loss(real_logits, fake_logits, gan_loss)
    terms = {"d_loss": d, "d_real": real_logits.mean(), "d_fake": fake_logits.mean()}
    total = d
    if gan_loss == "wgan-gp":
        terms["gp"] = gradient_penalty(discriminator, hr, sr, generator)
        total = total + weights.gradient_penalty * terms["gp"]
    return total, {k: v.detach() for k, v in terms.items()}
