import pytest
import torch

from srgan.errors import ConfigError
from srgan.models import Discriminator, Generator, GeneratorConfig, count_parameters, receptive_radius


@pytest.mark.parametrize("scale", [2, 4, 8])
@pytest.mark.parametrize("channels", [1, 3])
def test_generator_shapes(scale, channels, make_generator, device, dtype):
    g = make_generator(scale=scale, in_channels=channels, out_channels=channels, blocks=2).to(device, dtype)
    with torch.no_grad():
        y = g(torch.rand(2, channels, 7, 9, device=device, dtype=dtype))
    assert y.shape == (2, channels, 7 * scale, 9 * scale)
    assert y.dtype == dtype and y.device.type == device.type


def test_default_generator_matches_paper_size():
    # SRResNet x4 (B=16, 64 channels) has 1.55 M parameters (Ledig et al. 2017).
    assert count_parameters(Generator(GeneratorConfig())) == 1_550_659
    assert count_parameters(Generator(GeneratorConfig(in_channels=1, out_channels=1))) == 1_529_921


def test_generator_without_batchnorm_has_no_bn(make_generator):
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in make_generator(blocks=2).modules())
    g = make_generator(batch_norm=False, blocks=2)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in g.modules())


@pytest.mark.parametrize("bad", [dict(scale=3), dict(blocks=0), dict(channels=0)])
def test_generator_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError):
        GeneratorConfig(**bad)


@pytest.mark.parametrize("size", [16, 24, 96, 131])
def test_discriminator_any_patch_size(size, device, dtype):
    d = Discriminator(in_channels=3).to(device, dtype)
    with torch.no_grad():
        logits = d(torch.rand(2, 3, size, size + 5, device=device, dtype=dtype))
    assert logits.shape == (2,) and logits.dtype == dtype


def test_discriminator_layers_as_in_paper():
    convs = [m for m in Discriminator().modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.stride[0]) for c in convs] == [
        (64, 1), (64, 2), (128, 1), (128, 2), (256, 1), (256, 2), (512, 1), (512, 2)]


def test_discriminator_rejects_tiny_patch():
    with pytest.raises(ConfigError, match="16 px"):
        Discriminator()(torch.rand(1, 3, 8, 8))


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_receptive_radius_bounds_true_influence(scale, make_generator, device):
    """Perturbing one LR pixel changes outputs no further than receptive_radius LR pixels away."""
    g = make_generator(scale=scale, channels=4, blocks=2).to(device)
    r = receptive_radius(g.config)
    n = 2 * r + 9
    x = torch.rand(1, 3, n, n, device=device)
    x2 = x.clone()
    c = n // 2
    x2[..., c, c] += 1.0
    with torch.no_grad():
        diff = (g(x2) - g(x)).abs().sum(1)[0] > 0
    ys, xs = torch.nonzero(diff, as_tuple=True)
    reach = max((ys // scale - c).abs().max(), (xs // scale - c).abs().max())
    assert reach <= r
    assert reach >= r - 2  # the bound is tight, not just large
