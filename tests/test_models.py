import pytest
import torch

from srgan.errors import ConfigError
from srgan.models import Discriminator, Generator, GeneratorConfig, count_parameters, receptive_radius


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_shapes(scale, channels):
    g = Generator(GeneratorConfig(scale=scale, in_channels=channels, out_channels=channels, channels=8, blocks=2))
    y = g(torch.rand(2, channels, 7, 9))
    assert y.shape == (2, channels, 7 * scale, 9 * scale)


def test_default_generator_matches_paper_size():
    # SRResNet x4 (B=16, 64 channels) has 1.55 M parameters (Ledig et al. 2017).
    assert count_parameters(Generator(GeneratorConfig())) == 1_550_659
    assert count_parameters(Generator(GeneratorConfig(in_channels=1, out_channels=1))) == 1_529_921


def test_generator_without_batchnorm_has_no_bn():
    g = Generator(GeneratorConfig(batch_norm=False, blocks=2, channels=8))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())


@pytest.mark.parametrize("bad", [dict(scale=3), dict(blocks=0), dict(channels=0)])
def test_generator_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        GeneratorConfig(**bad)


@pytest.mark.parametrize("size", [16, 24, 96, 131])
def test_discriminator_any_patch_size(size):
    d = Discriminator(in_channels=3)
    assert d(torch.rand(2, 3, size, size + 5)).shape == (2,)


def test_discriminator_layers_as_in_paper():
    convs = [m for m in Discriminator().modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.stride[0]) for c in convs] == [
        (64, 1), (64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2)]


def test_discriminator_rejects_tiny_patch():
    with pytest.raises(ConfigError, match="16 px"):
        Discriminator()(torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_receptive_radius_bounds_true_influence(scale):
    """Perturbing one LR pixel changes outputs no further than receptive_radius LR pixels away."""
    cfg = GeneratorConfig(scale=scale, channels=4, blocks=2)
    g = Generator(cfg).eval()
    r = receptive_radius(cfg)
    n = 2 * r + 9
    x = torch.rand(1, 3, n, n)
    x2 = x.clone()
    c = n // 2
    x2[..., c, c] += 1.0
    with torch.no_grad():
        diff = (g(x2) - g(x)).abs().sum(1)[0] > 0
    ys, xs = torch.nonzero(diff, as_tuple=True)
    reach = max((ys // scale - c).abs().max(), (xs // scale - c).abs().max())
    assert reach <= r
    assert reach >= r - 2  # the bound is tight, not just large
