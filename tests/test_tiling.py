"""The tiled engine: tiles reproduce whole-image inference exactly, at any size."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from srgan.errors import ConfigError
from srgan.models import Generator, GeneratorConfig, receptive_radius
from srgan.tiling import auto_tile, plan_tiles, window_size, read_window, reflect_index, reflect_pad, upscale_tiled
from srgan.upscale import Upscaler


def bn_model(g):
    """``g`` (a tiny generator) in eval mode, its BatchNorms given non-trivial running statistics."""
    gen = torch.Generator().manual_seed(1)
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=gen) * 0.4 - 0.2)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=gen) * 0.2 - 0.1)
    return g.eval()


def run(model, x, tile, overlap, batch_size=1, scale=None):
    scale = scale or model.config.scale
    out = np.zeros((model.config.out_channels, x.shape[1] * scale, x.shape[2] * scale), np.float32)
    return upscale_tiled(model, x, out, scale=scale, tile=tile, overlap=overlap, batch_size=batch_size)


@pytest.fixture(scope="module")
def model2(make_generator):
    return bn_model(make_generator(scale=2, channels=8, blocks=1))


def test_reflect_index_matches_numpy_reflect_and_handles_thin_axes():
    for size in (2, 3, 7):
        for pad in range(0, size):
            assert np.array_equal(reflect_index(-pad, size + pad, size),
                                  np.pad(np.arange(size), pad, mode="reflect"))
    assert reflect_index(-3, 4, 1).tolist() == [0] * 7  # 1-px strip: replicated
    assert reflect_index(-5, 7, 2).tolist() == [1, 0, 1, 0, 1, 0, 1, 0, 1, 0, 1, 0]  # margin > size


@pytest.mark.parametrize("h,w,tile", [(10, 4, 4), (9, 9, 3), (5, 17, 16), (3, 3, 8), (1, 1, 2), (6, 7, 0)])
def test_tile_cores_partition_the_image_with_equal_windows(h, w, tile):
    tiles = plan_tiles(h, w, tile)
    owner = np.zeros((h, w), int)
    for t in tiles:
        owner[t.y0:t.y1, t.x0:t.x1] += 1
        th, tw = window_size(h, tile), window_size(w, tile)
        assert t.y <= t.y0 < t.y1 <= t.y + th and t.x <= t.x0 < t.x1 <= t.x + tw  # core inside its window
        assert 0 <= t.y and t.y + th <= h and 0 <= t.x and t.x + tw <= w
    assert (owner == 1).all()


@pytest.mark.parametrize("size,tile", [(2048, 1216), (1000, 448), (4096, 1216), (17, 16), (100, 33), (512, 512)])
def test_windows_are_balanced_so_little_is_recomputed(size, tile):
    t = window_size(size, tile)
    n = len(plan_tiles(size, 1, tile))
    assert t <= max(tile, 0) or t == size  # never above the memory budget's tile
    assert n == -(-size // tile)  # the fewest windows that cover the axis
    assert n * t - size < n * 8  # spare coverage only from rounding up to a multiple of 8


def test_read_window_equals_slice_of_padded_image_for_numpy_memmap_and_torch(tmp_path):
    x = np.random.rand(2, 5, 7).astype(np.float32)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=np.float32, shape=x.shape)
    mm[:] = x
    for margin in (0, 2, 6):
        padded = reflect_pad(x, margin)
        for y, x0, h, w in [(0, 0, 5, 7), (1, 2, 3, 3), (4, 6, 1, 1), (0, 3, 2, 4)]:
            want = padded[:, y:y + h + 2 * margin, x0:x0 + w + 2 * margin]
            assert np.array_equal(read_window(x, y, x0, h, w, margin), want)
            assert np.array_equal(read_window(mm, y, x0, h, w, margin), want)
            assert np.array_equal(read_window(torch.from_numpy(x), y, x0, h, w, margin).numpy(), want)


@pytest.mark.parametrize("size", [(1, 1), (1, 13), (11, 1), (2, 3), (6, 6), (13, 17), (24, 19)])
def test_tiled_equals_whole_image(model2, size):
    """Including images smaller than a tile, non-multiples of the tile and 1-px strips."""
    r = receptive_radius(model2.config)
    x = np.random.rand(3, *size).astype(np.float32)
    whole = run(model2, x, tile=0, overlap=r)
    for tile, overlap, batch in [(4, r, 1), (5, r, 3), (8, r + 3, 2), (16, r, 4), (64, r, 1)]:
        tiled = run(model2, x, tile=tile, overlap=overlap, batch_size=batch)
        assert np.abs(tiled - whole).max() <= 1e-5, (size, tile, overlap, batch)


def test_tiled_equals_whole_image_x4_and_x8(make_generator):
    for cfg in (dict(scale=4, channels=4, blocks=2), dict(scale=8, channels=4, blocks=1)):
        g = bn_model(make_generator(**cfg))
        r = receptive_radius(g.config)
        x = np.random.rand(3, 9, 14).astype(np.float32)
        whole = run(g, x, tile=0, overlap=r)
        assert np.abs(run(g, x, tile=4, overlap=r, batch_size=3) - whole).max() <= 1e-5


def test_whole_image_pass_is_the_model_on_the_reflect_padded_image(model2):
    r = receptive_radius(model2.config)
    x = torch.rand(1, 3, 14, 12)
    with torch.no_grad():
        ref = model2(F.pad(x, (r, r, r, r), mode="reflect"))[0, :, 2 * r:2 * (r + 14), 2 * r:2 * (r + 12)]
    assert np.abs(run(model2, x[0].numpy(), tile=0, overlap=r) - ref.numpy()).max() <= 1e-6


def test_small_overlap_leaves_a_nonzero_but_bounded_seam(model2):
    r = receptive_radius(model2.config)
    x = np.random.rand(3, 24, 24).astype(np.float32)
    whole = run(model2, x, tile=0, overlap=r)
    errors = [np.abs(run(model2, x, tile=8, overlap=o) - whole).max() for o in (0, r // 2, r - 1)]
    assert errors[0] > errors[1] > errors[2] > 1e-6  # shrinking with overlap, never exact below r
    assert errors[0] < 1.0  # outputs are O(1): a seam is a perturbation, not garbage


def test_torch_source_and_output_and_memmap_output(model2, tmp_path):
    r = receptive_radius(model2.config)
    x = np.random.rand(3, 10, 9).astype(np.float32)
    whole = run(model2, x, tile=0, overlap=r)
    out_t = torch.zeros(3, 20, 18)
    upscale_tiled(model2, torch.from_numpy(x), out_t, scale=2, tile=4, overlap=r, batch_size=2)
    assert (out_t.numpy() - whole).__abs__().max() <= 1e-5
    mm = np.lib.format.open_memmap(tmp_path / "o.npy", mode="w+", dtype=np.float32, shape=(3, 20, 18))
    upscale_tiled(model2, x, mm, scale=2, tile=3, overlap=r)
    assert np.abs(np.asarray(mm) - whole).max() <= 1e-5


def test_pre_and_post_map_integer_pixels(model2):
    r = receptive_radius(model2.config)
    x8 = np.random.randint(0, 256, (3, 7, 9), dtype=np.uint8)
    out = np.zeros((3, 14, 18), np.uint8)
    upscale_tiled(model2, x8, out, scale=2, tile=4, overlap=r, pre=lambda t: t.float() / 255,
                  post=lambda y: (y.clamp(0, 1) * 255).round().to(torch.uint8))
    ref = run(model2, x8.astype(np.float32) / 255, tile=0, overlap=r)
    assert np.abs(out.astype(int) - np.round(np.clip(ref, 0, 1) * 255)).max() <= 1


def test_bad_arguments_are_config_errors(model2):
    x = np.zeros((3, 4, 4), np.float32)
    with pytest.raises(ConfigError, match="out must be"):
        upscale_tiled(model2, x, np.zeros((3, 4, 4)), scale=2)
    with pytest.raises(ConfigError, match="tile >= 0"):
        upscale_tiled(model2, x, np.zeros((3, 8, 8)), scale=2, tile=-1)
    with pytest.raises(ConfigError, match=r"\(C, H, W\)"):
        upscale_tiled(model2, x[0], np.zeros((3, 8, 8)), scale=2)


def test_auto_tile_fits_the_budget():
    # the default x4 photo model (C=64) on the 1 GiB CPU budget: 256 LR px tiles with its 16 px overlap
    assert Upscaler(Generator(GeneratorConfig()), device="cpu").tile == 256
    tile = auto_tile(1e9, 1000, overlap=10, batch_size=2)
    assert tile % 32 == 0 and 2 * (tile + 20) ** 2 * 1000 <= 1e9 < 2 * (tile + 52) ** 2 * 1000


class OOMBelow(torch.nn.Module):
    """Raises CUDA out-of-memory for windows above ``limit`` pixels, like a full GPU."""

    def __init__(self, model, limit):
        super().__init__()
        self.model, self.config, self.limit, self.sizes = model, model.config, limit, []

    def forward(self, x):
        self.sizes.append(x.shape[-1] * x.shape[-2])
        if x.shape[-1] * x.shape[-2] > self.limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.model(x)


def test_out_of_memory_halves_the_tile_and_retries(model2):
    r = receptive_radius(model2.config)
    x = np.random.rand(3, 40, 36).astype(np.float32)
    whole = run(model2, x, tile=0, overlap=r)
    up = Upscaler(OOMBelow(model2, limit=(20 + 2 * r) ** 2), device="cpu", tile=0)
    with pytest.warns(RuntimeWarning, match="retrying with tile 20"):
        out = up.upscale(x.transpose(1, 2, 0).copy())
    assert up.tile == 20  # remembered for the next images
    assert np.abs(out.transpose(2, 0, 1) - np.clip(whole, 0, 1)).max() <= 1e-5
