import numpy as np
import pytest
import torch
from torch import nn

from srgan.checkpoint import load_model, save_model
from srgan.errors import ModelError
from srgan.fold import conv_bn_pairs, fold_batchnorm
from srgan.models import Generator
from srgan.upscale import Upscaler


def _trained_like(g: Generator) -> Generator:
    """``g`` with non-trivial BN statistics and affine parameters, in eval mode."""
    with torch.no_grad():
        for m in g.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.2, 3.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return g.eval()


def _bn_count(module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in module.modules())


# Folding rounds once per conv: the tolerance follows the dtype's resolution.
ATOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 1e-1}


@pytest.mark.parametrize("config", [dict(scale=2, blocks=2), dict(scale=4, blocks=1, in_channels=1, out_channels=1)])
def test_folded_equals_original(config, make_generator, device, dtype):
    g = _trained_like(make_generator(**config)).to(device, dtype)
    f = fold_batchnorm(g)
    assert _bn_count(g) == 2 * g.config.blocks + 1
    assert _bn_count(f) == 0
    assert f.config.batch_norm is False and not f.training
    x = torch.rand(2, g.config.in_channels, 13, 17, device=device, dtype=dtype)
    with torch.no_grad():
        ref, out = g(x), f(x)
    assert out.dtype == dtype and out.device.type == device.type
    assert ref.abs().max() > 0.01  # the comparison is not between two zero images
    torch.testing.assert_close(out, ref, atol=ATOL[dtype], rtol=0)


def test_original_untouched_and_train_mode_folds_running_stats(make_generator):
    g = _trained_like(make_generator(blocks=1)).train()
    before = {k: v.clone() for k, v in g.state_dict().items()}
    f = fold_batchnorm(g)
    assert g.training and _bn_count(g) == 3
    for k, v in g.state_dict().items():
        assert torch.equal(v, before[k]), k
    x = torch.rand(1, 3, 9, 9)
    with torch.no_grad():
        torch.testing.assert_close(f(x), g.eval()(x), atol=1e-5, rtol=0)


def test_pairs_found_and_stray_bn_refused(make_generator):
    g = make_generator(channels=8, blocks=2)
    assert conv_bn_pairs(g) == [("body.0.conv1", "body.0.bn1"), ("body.0.conv2", "body.0.bn2"),
                                ("body.1.conv1", "body.1.bn1"), ("body.1.conv2", "body.1.bn2"),
                                ("body_tail.0", "body_tail.1")]
    g.head = nn.Sequential(g.head[0], g.head[1], nn.BatchNorm2d(8))  # BN after PReLU: not foldable
    with pytest.raises(ModelError, match="head.2"):
        fold_batchnorm(g)


def test_no_batchnorm_model_is_copied(make_generator):
    g = make_generator(batch_norm=False)
    f = fold_batchnorm(g)
    assert f is not g
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(f(x), g(x))


def test_folded_model_saves_and_loads(tmp_path, make_generator):
    g = _trained_like(make_generator())
    path = tmp_path / "folded.safetensors"
    save_model(path, fold_batchnorm(g))
    loaded = load_model(path)
    assert loaded.config.batch_norm is False
    x = torch.rand(1, 3, 10, 10)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), g(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("size,tile,overlap", [((37, 29), 12, None), ((20, 48), 16, None), ((1, 23), 8, None)])
def test_tiled_equals_whole_with_folded_model(size, tile, overlap, make_generator):
    g = _trained_like(make_generator(scale=2, blocks=2))
    f = fold_batchnorm(g)
    image = np.random.default_rng(0).random((*size, 3), dtype=np.float32)
    whole = Upscaler(f, device="cpu", tile=0).upscale(image)
    tiled = Upscaler(f, device="cpu", tile=tile, overlap=overlap, batch_size=3).upscale(image)
    assert tiled.shape == (size[0] * 2, size[1] * 2, 3)
    assert np.abs(tiled - whole).max() <= 1e-5
    unfolded = Upscaler(g, device="cpu", tile=0).upscale(image)  # and it is the original model's output
    assert np.abs(unfolded - whole).max() <= 1e-5
    assert 0 < whole.mean() < 1  # clipped output is not all-black/all-white (a real comparison)
