import urllib.error

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

from srgan import losses as L
from srgan.errors import ConfigError, ModelError, WeightsUnavailableError
from srgan.models import Discriminator

# ---------------------------------------------------------------- pixel, TV


def test_pixel_loss_known_values():
    sr = torch.zeros(1, 1, 2, 2)
    hr = torch.tensor([[[[1.0, -1.0], [2.0, 0.0]]]])
    assert L.pixel_loss(sr, hr, "mse").item() == pytest.approx((1 + 1 + 4 + 0) / 4)
    assert L.pixel_loss(sr, hr, "l1").item() == pytest.approx((1 + 1 + 2 + 0) / 4)
    with pytest.raises(ConfigError):
        L.pixel_loss(sr, hr, "huber")


def test_tv_constant_is_zero_and_ramp_known():
    assert L.tv_loss(torch.full((2, 3, 8, 8), 0.7)).item() == 0.0
    b, c, h, w, a = 2, 3, 5, 7, 0.1
    ramp = (torch.arange(w, dtype=torch.float64) * a).expand(b, c, h, w)
    assert L.tv_loss(ramp).item() == pytest.approx(c * h * (w - 1) * a)
    assert L.tv_loss(ramp.transpose(-1, -2)).item() == pytest.approx(c * h * (w - 1) * a)


# ---------------------------------------------------------------- VGG


@pytest.fixture(scope="module")
def vgg22():
    return L.VGGContentLoss("relu2_2", weights=None)


@pytest.mark.parametrize("channels", [1, 3])
def test_vgg_loss_random_weights(vgg22, channels):
    hr = torch.rand(2, channels, 32, 32)
    sr = (hr + 0.1 * torch.randn_like(hr)).requires_grad_(True)
    loss = vgg22(sr, hr)
    assert loss.dim() == 0 and loss.item() > 0
    loss.backward()
    assert sr.grad is not None and torch.isfinite(sr.grad).all() and sr.grad.abs().sum() > 0
    assert vgg22(hr, hr).item() == 0.0
    assert all(p.grad is None and not p.requires_grad for p in vgg22.parameters())


def test_vgg_loss_stays_eval_and_rescales(vgg22):
    vgg22.train()
    assert not vgg22.training and not vgg22.features.training
    hr = torch.rand(1, 3, 32, 32)
    sr = torch.rand(1, 3, 32, 32)
    plain = L.VGGContentLoss("relu2_2", weights=None, rescale=1.0)
    plain.load_state_dict(vgg22.state_dict())
    torch.testing.assert_close(vgg22(sr, hr), plain(sr, hr) * (1 / 12.75) ** 2)


def test_vgg_relu5_4_small_input():
    vgg = L.VGGContentLoss("relu5_4", weights=None)
    assert len(vgg.features) == 36 and isinstance(vgg.features[-1], nn.ReLU)
    sr = torch.rand(1, 1, 32, 32, requires_grad=True)
    vgg(sr, torch.rand(1, 1, 32, 32)).backward()
    assert torch.isfinite(sr.grad).all()


def test_vgg_rejects_bad_layer_and_channels(vgg22):
    with pytest.raises(ConfigError):
        L.VGGContentLoss("relu3_3", weights=None)
    with pytest.raises(ConfigError):
        vgg22(torch.rand(1, 2, 32, 32), torch.rand(1, 2, 32, 32))


def _torchvision_style_state(cut=8):
    """A state dict with torchvision's vgg19 key names (features.N.*) plus a classifier key."""
    feats = L._vgg_features(cut)
    state = {f"features.{k}": v.clone() for k, v in feats.state_dict().items()}
    state["classifier.0.bias"] = torch.zeros(4)
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_vgg_weights_from_file(tmp_path, suffix):
    state = _torchvision_style_state()
    path = tmp_path / f"vgg19{suffix}"
    if suffix == ".pth":
        torch.save(state, path)
    else:
        save_file(state, str(path))
    vgg = L.VGGContentLoss("relu2_2", weights=path)
    torch.testing.assert_close(vgg.features[7].weight, state["features.7.weight"])


def test_vgg_weights_bad_files(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="--vgg-weights"):
        L.VGGContentLoss("relu2_2", weights=tmp_path / "missing.pth")
    bad = tmp_path / "bad.safetensors"
    save_file({"features.0.weight": torch.zeros(1)}, str(bad))
    with pytest.raises(ModelError, match="VGG19"):
        L.VGGContentLoss("relu2_2", weights=bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="--vgg-weights"):
        L.VGGContentLoss("relu2_2", weights=junk)


def test_vgg_imagenet_offline_fails_fast_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # empty hub cache

    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        L.VGGContentLoss("relu2_2", weights="imagenet")
    message = str(info.value)
    assert "vgg19-dcbb9e9d.pth" in message
    assert "--vgg-weights PATH" in message
    assert str(tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth") in message
    assert "internet" in message


def test_vgg_imagenet_uses_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert L.vgg_cache_path() == tmp_path / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    L.vgg_cache_path().parent.mkdir(parents=True)
    state = _torchvision_style_state()
    torch.save(state, L.vgg_cache_path())

    def no_network(*args, **kwargs):
        raise AssertionError("must not download when the file is cached")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    vgg = L.VGGContentLoss("relu2_2", weights="imagenet")
    torch.testing.assert_close(vgg.features[0].weight, state["features.0.weight"])


# ---------------------------------------------------------------- adversarial

KINDS = list(L.GAN_LOSSES)


@pytest.mark.parametrize("kind", KINDS)
def test_discriminator_loss_sign(kind):
    real_hi, fake_lo = torch.full((4, 1), 2.0), torch.full((4, 1), -2.0)
    good = L.discriminator_loss(real_hi, fake_lo, kind)
    bad = L.discriminator_loss(fake_lo, real_hi, kind)  # D scores fakes higher
    assert good < bad


@pytest.mark.parametrize("kind", KINDS)
def test_generator_loss_decreases_when_fake_logits_rise(kind):
    real = torch.tensor([[1.0], [0.5], [1.5], [0.0]])
    fake = torch.tensor([[-1.0], [0.0], [-0.5], [0.2]])
    low = L.generator_adversarial_loss(real, fake, kind)
    high = L.generator_adversarial_loss(real, fake + 1.0, kind)
    assert high < low
    fake = fake.clone().requires_grad_(True)
    L.generator_adversarial_loss(real, fake, kind).backward()
    assert (fake.grad < 0).all()  # gradient descent raises every fake logit


def test_bce_known_values():
    zero = torch.zeros(3, 1)
    log2 = torch.log(torch.tensor(2.0)).item()
    assert L.discriminator_loss(zero, zero, "bce").item() == pytest.approx(2 * log2)
    assert L.generator_adversarial_loss(None, zero, "bce").item() == pytest.approx(log2)
    assert L.discriminator_loss(torch.ones(2, 1), torch.zeros(2, 1), "wgan-gp").item() == pytest.approx(-1.0)


def test_relativistic_needs_real_logits():
    with pytest.raises(ConfigError):
        L.generator_adversarial_loss(None, torch.zeros(2, 1), "relativistic")
    with pytest.raises(ConfigError, match="--gan-loss"):
        L.discriminator_loss(torch.zeros(2, 1), torch.zeros(2, 1), "hinge")


class LinearCritic(nn.Module):
    def __init__(self, shape, norm):
        super().__init__()
        w = torch.randn(shape)
        self.w = nn.Parameter(w / w.norm() * norm)

    def forward(self, x):
        return (x * self.w).flatten(1).sum(1, keepdim=True)


@pytest.mark.parametrize("norm, expected", [(1.0, 0.0), (2.0, 1.0), (0.5, 0.25)])
def test_gradient_penalty_linear_critic(norm, expected):
    critic = LinearCritic((3, 8, 8), norm)
    real, fake = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    gp = L.gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(0))
    assert gp.item() == pytest.approx(expected, abs=1e-5)


def test_gradient_penalty_trains_critic_and_is_seeded():
    critic = LinearCritic((3, 8, 8), 2.0)
    real, fake = torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)
    gp = L.gradient_penalty(critic, real, fake)
    gp.backward()
    assert critic.w.grad is not None and critic.w.grad.abs().sum() > 0
    conv = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LeakyReLU(0.2), nn.Flatten(), nn.LazyLinear(1))
    conv(real)
    a = L.gradient_penalty(conv, real, fake, generator=torch.Generator().manual_seed(1))
    b = L.gradient_penalty(conv, real, fake, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


# ---------------------------------------------------------------- totals on a tiny GAN


@pytest.fixture
def tiny_gan(tiny_generator):
    return tiny_generator.train(), Discriminator(in_channels=3, base_channels=8).train()


@pytest.mark.parametrize("kind", KINDS)
def test_gan_step_gradients_flow_and_are_finite(tiny_gan, kind):
    g, d = tiny_gan
    lr, hr = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 32, 32)
    sr = g(lr)
    d_total, d_terms = L.discriminator_loss_terms(d, hr, sr, gan_loss=kind,
                                                  generator=torch.Generator().manual_seed(0))
    d_total.backward()
    assert all(p.grad is None for p in g.parameters())  # sr detached for the D step
    d_grads = [p.grad for p in d.parameters() if p.requires_grad]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in d_grads)
    assert set(d_terms) >= {"d_loss", "d_real", "d_fake"} and ("gp" in d_terms) == (kind == "wgan-gp")
    d.zero_grad()
    total, terms = L.generator_loss(sr, hr, discriminator=d, gan_loss=kind)
    total.backward()
    g_grads = [p.grad for p in g.parameters()]
    assert all(gr is not None and torch.isfinite(gr).all() for gr in g_grads)
    assert sum(gr.abs().sum() for gr in g_grads) > 0
    assert set(terms) == {"content", "adversarial", "tv"}
    assert all(not t.requires_grad for t in terms.values())


def test_generator_loss_weighted_sum(tiny_gan):
    _, d = tiny_gan
    sr, hr = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    w = L.LossWeights(pixel=0.5, content=2.0, adversarial=1e-2, tv=1e-4)
    total, terms = L.generator_loss(sr, hr, weights=w, discriminator=d.eval(), pixel_kind="l1")
    expected = 0.5 * terms["pixel"] + 2.0 * terms["content"] + 1e-2 * terms["adversarial"] + 1e-4 * terms["tv"]
    torch.testing.assert_close(total, expected)
    torch.testing.assert_close(terms["pixel"], L.pixel_loss(sr, hr, "l1"))
    torch.testing.assert_close(terms["content"], L.pixel_loss(sr, hr, "mse"))  # no VGG: SRGAN-MSE


def test_generator_loss_pretraining_and_vgg(vgg22):
    sr, hr = torch.rand(1, 3, 32, 32, requires_grad=True), torch.rand(1, 3, 32, 32)
    total, terms = L.generator_loss(sr, hr, weights=L.LossWeights(pixel=1.0, content=0, adversarial=0, tv=0))
    assert set(terms) == {"pixel"}
    torch.testing.assert_close(total, L.pixel_loss(sr, hr))
    total, terms = L.generator_loss(sr, hr, content=vgg22, weights=L.LossWeights(adversarial=0, tv=0))
    torch.testing.assert_close(terms["content"], vgg22(sr, hr).detach())


def test_loss_weights_defaults_are_the_papers():
    w = L.LossWeights()
    assert (w.content, w.adversarial, w.tv, w.pixel, w.gradient_penalty) == (1.0, 1e-3, 2e-8, 0.0, 10.0)
