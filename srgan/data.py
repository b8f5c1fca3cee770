"""Training data: a folder of HR images -> random HR patches, reproducible from a seed.

Photos (PNG, JPEG, TIFF, WebP, BMP, GIF; decoded by :func:`srgan.imageio.read_photo`, so
upright and at their bit depth) become float RGB in [0, 1] (16-bit files scaled by 65535, gray
replicated to RGB, palette expanded, alpha dropped). FITS files (first image HDU
with data; every plane of a cube is its own image) become single-channel float data in units
of their own noise: NaNs are filled with the sky level, then ``(x - sky) / noise`` with the
robust estimates of :func:`srgan.normalize.sky_and_noise`. Files from different instruments
(e-/s, MJy/sr, DN, ...) thus share one scale, which the astro degradation's noise model
and the training loop's asinh normalisation (:class:`srgan.normalize.Normalization`) expect.

Degradation (HR -> LR) is not done here: the training loop does it batched on the training
device (:func:`srgan.degrade.degrade`).

Patches are drawn by :meth:`PatchDataset.batch` from an explicit seed, so the batch of a
training step is a pure function of ``(seed, rank, step)`` (:func:`step_seed`): resuming a run
or changing the number of DataLoader workers never changes what the model sees.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from srgan.errors import InputError
from srgan.filekinds import is_fits, is_image
from srgan.imageio import read_photo, to_channels


def find_images(root) -> list[Path]:
    """All image files under ``root`` (searched recursively; hidden files skipped), sorted.

    ``root`` may also be a single image file. Raises InputError when it does not exist.
    """
    root = Path(root)
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise InputError(f"image folder not found: {root} (give an existing folder with --hr / --val)")
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and is_image(p) and not any(part.startswith(".") for part in p.relative_to(root).parts))


def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 -> /255, uint16 -> /65535, float unchanged; returns float32."""
    if image.dtype == torch.uint8:
        return image.float() / 255.0
    if image.dtype == torch.uint16:
        return image.to(torch.int32).float() / 65535.0
    return image.float()


def load_fits_planes(path) -> list[np.ndarray]:
    """The 2-D planes of a FITS file's first image HDU with data, in noise units, float32.

    NaN/inf pixels are filled with the sky level; each plane is then ``(x - sky) / noise``.
    Raises InputError when the file has no 2-D image data or a plane has no finite pixel.
    """
    from astropy.io import fits

    from srgan.normalize import sky_and_noise

    try:
        with fits.open(path, memmap=False) as hdul:
            for hdu in hdul:
                if hdu.is_image and hdu.data is not None and hdu.data.ndim >= 2:
                    data = np.asarray(hdu.data, dtype=np.float32)
                    break
            else:
                raise InputError(f"{path}: no image HDU with 2-D data")
    except InputError:
        raise
    except Exception as e:  # astropy raises OSError, ValueError, TypeError on bad files
        raise InputError(f"{path}: not a readable FITS file ({e})") from e
    planes = []
    for plane in data.reshape(-1, *data.shape[-2:]):
        sky, noise = sky_and_noise(plane)  # InputError when all NaN or constant
        plane = np.where(np.isfinite(plane), plane, sky)
        planes.append(((plane - sky) / noise).astype(np.float32))
    return planes


def load_image(path, channels: int = 3) -> torch.Tensor:
    """One image file as a float32 tensor (C, H, W).

    Photos: C = ``channels`` (3: RGB, 1: luma), values in [0, 1]. FITS: C = number of planes
    (1 for a 2-D image), values in noise units (see the module doc); ``channels`` is ignored.
    Raises InputError for unreadable files.
    """
    path = Path(path)
    if is_fits(path):
        return torch.from_numpy(np.stack(load_fits_planes(path)))
    return to_float(_load_photo(path, channels))


def _load_photo(path: Path, channels: int) -> torch.Tensor:
    """A photo as stored: (channels, H, W) uint8 or uint16, upright (EXIF orientation applied).

    Decoded by :func:`srgan.imageio.read_photo` (16-bit PNG/TIFF keep 16 bits) without its
    pixel limit (training images are the user's own); channels by :func:`srgan.imageio.to_channels`.
    """
    pixels = read_photo(path, max_pixels=None).pixels
    if pixels.dtype.kind == "f":
        raise InputError(f"{path}: 32-bit float images are not supported; save as 8/16-bit or FITS")
    return torch.from_numpy(np.array(to_channels(pixels, channels).transpose(2, 0, 1), order="C"))  # own, writable


def load_images(paths, channels: int, min_size: int = 1, what: str = "--hr") -> list[tuple[Path, torch.Tensor]]:
    """Load every usable image, warning once per skipped file; returns (path, (C, H, W)) pairs.

    Photos are kept in their stored integer dtype (uint8/uint16: 4x less memory than float;
    :func:`to_float` converts crops); FITS planes as float32 noise units, one entry per plane.
    Skipped with a warning: unreadable files, FITS in a 3-channel run (and photos in a FITS
    run are converted to luma), images with a side shorter than ``min_size``.
    Raises InputError when nothing usable is left.
    """
    paths = list(paths)
    images, too_small = [], 0
    for path in paths:
        try:
            if is_fits(path):
                if channels != 1:
                    raise InputError("FITS images need a 1-channel model (use --preset astro)")
                planes = [torch.from_numpy(p)[None] for p in load_fits_planes(path)]
            else:
                planes = [_load_photo(path, channels)]
        except (InputError, OSError) as e:  # OSError: e.g. a FITS file without read permission
            reason = str(e).removeprefix(f"{path}: ")
            warnings.warn(f"skipping {path}: {reason}", stacklevel=2)
            continue
        for plane in planes:
            h, w = plane.shape[-2:]
            if min(h, w) < min_size:
                too_small += 1
                warnings.warn(f"skipping {path}: {w}x{h} px is smaller than the {min_size} px patch", stacklevel=2)
                continue
            images.append((path, plane))
    if not images:
        if not paths:
            raise InputError(f"no image files found for {what} (expected PNG, JPEG, TIFF, WebP, BMP, GIF or FITS files)")
        if too_small:
            raise InputError(f"every image for {what} is smaller than the {min_size} px patch: "
                             f"lower --patch-size or give larger images")
        raise InputError(f"none of the {len(paths)} files for {what} could be read as an image (see the warnings)")
    return images


def step_seed(*keys: int) -> int:
    """A 63-bit seed from integers (e.g. seed, rank, step, stream), well mixed by SeedSequence."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32).astype(np.uint64)
               .dot(np.array([1 << 32, 1], np.uint64)) >> np.uint64(1))


def augment(patch: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips/90-degree rotations of a (..., H, W) tensor; ``k`` in 0..7, 0 = identity."""
    if k & 4:
        patch = patch.flip(-1)
    return torch.rot90(patch, k & 3, dims=(-2, -1))


class PatchDataset:
    """Random HR training patches from a list of images.

    Args:
        paths: image files (see :func:`find_images`).
        patch_size: side of the HR patches in pixels (a multiple of the model scale).
        channels: 3 for RGB photos, 1 for FITS / gray.
        augment: random flips and 90-degree rotations (the 8 symmetries of the square).
        cache: keep decoded images in memory (default: training sets are small); otherwise
            each patch re-reads its file.

    ``batch(n, seed)`` -> (n, channels, patch_size, patch_size) float32: images drawn
    uniformly, then a uniform crop position and symmetry, all from ``seed``.

    >>> ds = PatchDataset.from_tensors([torch.rand(3, 40, 50)], patch_size=16)
    >>> ds.batch(2, seed=0).shape
    torch.Size([2, 3, 16, 16])
    """

    def __init__(self, paths, patch_size: int, channels: int = 3, augment: bool = True, cache: bool = True):
        self.patch_size, self.channels, self.augment, self.cache = patch_size, channels, augment, cache
        loaded = load_images(paths, channels, min_size=patch_size)
        # one entry per usable plane: (path, plane index within the file, image or None)
        self.entries, counts = [], {}
        for path, image in loaded:
            index = counts.get(path, 0)
            counts[path] = index + 1
            self.entries.append((path, index, image if cache else None))
        self.sizes = [tuple(image.shape[-2:]) for _, image in loaded]
        self.files = len(counts)

    @classmethod
    def from_tensors(cls, images, patch_size: int, augment: bool = True) -> "PatchDataset":
        """A dataset over in-memory (C, H, W) tensors (tests, notebooks)."""
        ds = cls.__new__(cls)
        ds.patch_size, ds.augment, ds.cache = patch_size, augment, True
        ds.channels = images[0].shape[0]
        ds.entries = [(Path(f"<tensor {i}>"), 0, im) for i, im in enumerate(images)]
        ds.sizes = [tuple(im.shape[-2:]) for im in images]
        ds.files = len(images)
        if min(min(s) for s in ds.sizes) < patch_size:
            raise InputError(f"every image must be at least {patch_size} px (the patch size)")
        return ds

    def __len__(self) -> int:
        return len(self.entries)

    def image(self, i: int) -> torch.Tensor:
        """Image i as stored (uint8/uint16 photo or float32 FITS plane), (C, H, W)."""
        path, plane, image = self.entries[i]
        if image is not None:
            return image
        if is_fits(path):
            return torch.from_numpy(load_fits_planes(path)[plane])[None]
        return _load_photo(path, self.channels)

    def crop(self, generator: torch.Generator) -> torch.Tensor:
        """One random patch (C, P, P) float32."""
        p = self.patch_size
        i = int(torch.randint(len(self.entries), (1,), generator=generator))
        h, w = self.sizes[i]
        y = int(torch.randint(h - p + 1, (1,), generator=generator))
        x = int(torch.randint(w - p + 1, (1,), generator=generator))
        k = int(torch.randint(8, (1,), generator=generator))
        patch = to_float(self.image(i)[:, y:y + p, x:x + p])
        return augment(patch, k) if self.augment else patch

    def batch(self, n: int, seed: int) -> torch.Tensor:
        """``n`` random patches (n, C, P, P) float32, a pure function of ``seed``."""
        g = torch.Generator().manual_seed(seed)
        return torch.stack([self.crop(g) for _ in range(n)]).contiguous()


class StepBatches(torch.utils.data.Dataset):
    """Map-style view for a DataLoader: item ``step`` is the batch of that training step.

    Because each batch depends only on ``step_seed(seed, rank, step)``, any number of
    workers (and any resume point) gives the same stream of batches.
    """

    def __init__(self, patches: PatchDataset, batch_size: int, seed: int, rank: int = 0):
        self.patches, self.batch_size, self.seed, self.rank = patches, batch_size, seed, rank

    def __len__(self) -> int:
        return 1 << 40

    def __getitem__(self, step: int) -> torch.Tensor:
        return self.patches.batch(self.batch_size, step_seed(self.seed, self.rank, step, 0))
