"""Benchmark a model against the classic baselines on a folder of HR images (`srgan eval`).

Photos (any photo preset; the published protocol is ``bicubic``), per image:

1. The HR image, 8-bit RGB, is cropped to a multiple of the scale (top-left "modcrop").
2. LR = the preset's degradation of the HR in [0, 1] (``bicubic``: antialiased bicubic, the
   same filter as Pillow's BICUBIC), rounded to 8 bits as the published protocol's LR is.
3. The model upscales the 8-bit LR; the baseline is Pillow BICUBIC upsampling of the same LR.
4. PSNR and SSIM on Y (studio-range BT.601), ``scale`` border pixels shaved, with the
   published-table settings of :mod:`srgan.metrics`.

Grayscale (mode L) images are given to the model as RGB (gray replicated) and its output is
converted back with Pillow's ``convert("L")`` (for R = G = B this returns the gray value);
they are scored on the gray values themselves (0-255), as the published tables are: Set14's
bicubic row (26.00 dB) needs this (scoring Y of the replicated RGB gives 26.09 dB).

FITS (``astro`` preset), per image (first 2-D image HDU; NaNs filled with the sky):

1. HR in noise units, as training sees it (:func:`srgan.data.load_fits_planes`): sky
   subtracted, divided by the robust background noise; modcropped.
2. LR = the astro forward model with fixed, documented settings (:class:`AstroSetup`: the
   preset's middle FWHM, Moffat PSF, block-mean binning, sky + read noise with a seed fixed
   per file name), so every method sees the same input and the scores are reproducible.
3. Methods: the model, through the very pixel pipeline ``srgan upscale`` runs on FITS
   (:func:`srgan.fits.upscale_array`: robust sky/noise, asinh normalisation, the exact
   total-flux correction :func:`srgan.consistency.conserve_flux`), with
   ``flux="surface-brightness"`` since block-mean binning keeps per-HR-pixel units; bicubic
   upsampling (torch, no flux rescaling needed: a bicubic upsample of the LR already sums to
   the HR's flux); and Richardson-Lucy deconvolution
   (``skimage.restoration.richardson_lucy``, ``rl_iterations`` iterations, the known PSF on
   the output grid) of that bicubic upsample. RL needs non-negative data: the image is
   shifted by its minimum before and shifted back after.
4. Metrics: ``psnr_asinh``: PSNR of ``asinh(x / 3)`` (x in noise units; linear within
   ~3 sigma, logarithmic on bright cores, so faint structure counts), data range = the
   stretched HR's peak-to-peak, ``scale`` border pixels shaved; ``flux_error``: relative
   total-flux error ``|sum(SR) - sum(HR)| / sum(|HR|)`` over the whole image (the HR is
   sky-subtracted, so its plain sum can be near zero; the sum of absolute values is not).
   It is dominated by the LR's noise (which adds or removes flux: ~2% on the shared galaxy
   FITS, 0.03% without noise), which no method can know, so also ``flux_error_lr``:
   ``|sum(SR) - scale^2 sum(LR)| / sum(|HR|)``, the flux the method adds to its input;
   ``psnr_linear``: PSNR of the linear data, data range = HR's peak-to-peak (dominated by the
   bright cores; asinh also weighs the faint outskirts and the sky, where deconvolution
   amplifies noise).

Results are plain dataclasses; :meth:`EvalReport.to_dict` is the JSON of ``--json`` and
:func:`markdown` the README tables of ``--markdown``.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from srgan.errors import ConfigError, InputError, ModelError

PHOTO_METRICS = ("psnr_y", "ssim_y")
ASTRO_METRICS = ("psnr_asinh", "psnr_linear", "flux_error", "flux_error_lr")
ASINH_SOFTENING = 3.0  # noise sigmas, for psnr_asinh
METHOD_LABELS = {"bicubic": "Bicubic", "richardson-lucy": "Richardson-Lucy"}


@dataclass(frozen=True)
class AstroSetup:
    """The fixed degradation used to score FITS: one PSF, one noise draw per file.

    Units as in :func:`srgan.degrade.sky_read_noise` (noise units); FWHM in HR pixels.
    """

    fwhm: float
    kind: str  # "moffat" or "gaussian"
    beta: float  # Moffat beta
    sky: float
    gain: float
    read_noise: float
    seed: int = 0  # noise seed of a file = crc32(file name) + seed

    @classmethod
    def from_preset(cls, config, seed: int = 0) -> "AstroSetup":
        """The middle of each range of an astro :class:`srgan.degrade.DegradeConfig`
        (geometric middle for the log-uniform gain), with a Moffat PSF when the preset has one."""
        def mid(r):
            return (r[0] + r[1]) / 2

        kind = "moffat" if "moffat" in config.psf_kinds else config.psf_kinds[0]
        return cls(fwhm=mid(config.psf_fwhm), kind=kind, beta=round(mid(config.moffat_beta), 3),
                   sky=mid(config.sky), gain=math.sqrt(config.gain[0] * config.gain[1]),
                   read_noise=mid(config.read_noise), seed=seed)


@dataclass
class ImageResult:
    image: str  # path relative to the dataset folder
    height: int  # after modcrop
    width: int
    scores: dict[str, dict[str, float]]  # method -> metric -> value


@dataclass
class DatasetResult:
    name: str  # folder name, e.g. "Set5"
    hr_dir: str
    preset: str
    scale: int
    metrics: tuple[str, ...]
    methods: tuple[str, ...]  # "model" first, then the baselines
    images: list[ImageResult] = field(default_factory=list)
    astro: AstroSetup | None = None

    def mean(self) -> dict[str, dict[str, float]]:
        """Mean of each metric over images, per method (what papers report)."""
        return {m: {k: float(np.mean([r.scores[m][k] for r in self.images])) for k in self.metrics}
                for m in self.methods}

    def to_dict(self) -> dict:
        d = {"name": self.name, "hr_dir": self.hr_dir, "preset": self.preset, "scale": self.scale,
             "metrics": list(self.metrics), "methods": list(self.methods), "n_images": len(self.images),
             "mean": self.mean(),
             "images": [{"image": r.image, "height": r.height, "width": r.width, **r.scores} for r in self.images]}
        if self.astro is not None:
            d["astro_setup"] = asdict(self.astro)
        return d


@dataclass
class EvalReport:
    model: str  # embedded name or file stem
    model_sha256: str
    model_preset: str
    scale: int
    datasets: list[DatasetResult]

    def to_dict(self) -> dict:
        import srgan

        return {"srgan_version": srgan.__version__, "model": self.model, "model_sha256": self.model_sha256,
                "model_preset": self.model_preset, "scale": self.scale, "protocol": protocol_notes(),
                "datasets": [d.to_dict() for d in self.datasets]}


def protocol_notes() -> dict:
    return {
        "photo": "HR modcropped to a multiple of the scale; LR = preset degradation rounded to uint8; "
                 "bicubic = Pillow BICUBIC upsampling of the LR; PSNR/SSIM on BT.601 studio-range Y "
                 "(gray images: on the gray values) after shaving `scale` pixels; SSIM Gaussian window "
                 "sigma 1.5, population covariance, data range 255",
        "astro": "HR in noise units (sky-subtracted / robust noise); LR = Moffat PSF + block-mean binning + "
                 "sky/read noise (astro_setup); psnr_asinh = PSNR of asinh(x/3), data range = HR's, "
                 "shave `scale`; psnr_linear = same on the linear data; "
                 "flux_error = |sum(SR)-sum(HR)|/sum(|HR|) over the whole image; "
                 "flux_error_lr = |sum(SR)-scale^2 sum(LR)|/sum(|HR|); richardson-lucy = skimage richardson_lucy of the bicubic upsample with the known PSF",
    }


# ---------------------------------------------------------------------------- helpers

def modcrop(image: np.ndarray, scale: int) -> np.ndarray:
    """Top-left crop of (H, W, ...) to multiples of ``scale``.

    >>> modcrop(np.zeros((37, 45, 3)), 4).shape
    (36, 44, 3)
    """
    h, w = image.shape[:2]
    return image[: h - h % scale, : w - w % scale]


def _file_seed(name: str, seed: int) -> int:
    return (zlib.crc32(name.encode()) + seed) % (2**63)


def _load_photo(path: Path) -> tuple[np.ndarray, bool]:
    """(H, W, 3) uint8 RGB (upright, alpha dropped) and whether the file is grayscale (+alpha)."""
    from srgan.imageio import read_photo, to_channels

    pixels = read_photo(path, max_pixels=None).pixels
    if pixels.dtype != np.uint8:
        raise InputError(f"{path}: {8 * pixels.dtype.itemsize}-bit images are not part of the 8-bit benchmark protocol")
    return to_channels(pixels, 3), pixels.ndim == 2 or pixels.shape[2] == 2


def _to_gray(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).convert("L"))


def photo_lr(hr: np.ndarray, scale: int, preset: str = "bicubic", seed: int = 0) -> np.ndarray:
    """8-bit LR of an (H, W, 3) uint8 HR (H, W multiples of ``scale``) with a photo preset."""
    from srgan.degrade import degrade
    from srgan.metrics import to_uint8

    x = torch.from_numpy(np.array(hr, dtype=np.float32)).permute(2, 0, 1)[None] / 255.0  # (1, 3, H, W)
    g = torch.Generator().manual_seed(seed)
    lr = degrade(x, preset, scale, generator=g)[0].permute(1, 2, 0).numpy()  # (h, w, 3) in [0, 1]
    return to_uint8(lr)


def bicubic_upsample(lr: np.ndarray, scale: int) -> np.ndarray:
    """Pillow BICUBIC upsampling of an 8-bit (h, w[, 3]) image by ``scale``."""
    from PIL import Image

    im = Image.fromarray(lr)
    return np.asarray(im.resize((im.width * scale, im.height * scale), Image.BICUBIC))


def _psnr_asinh(sr: np.ndarray, hr: np.ndarray, border: int) -> float:
    from srgan.metrics import psnr_data

    return psnr_data(np.arcsinh(sr / ASINH_SOFTENING), np.arcsinh(hr / ASINH_SOFTENING), border=border)


def flux_error_vs_hr(sr: np.ndarray, hr: np.ndarray) -> float:
    """|sum(SR) - sum(HR)| / sum(|HR|): total-flux error of an output against the ground-truth HR.

    The ``flux_error`` metric (sky-subtracted images: the denominator is the absolute flux);
    :func:`srgan.consistency.flux_error_vs_input` measures an output against its own input instead.
    """
    sr, hr = np.asarray(sr, np.float64), np.asarray(hr, np.float64)
    return float(abs(sr.sum() - hr.sum()) / np.abs(hr).sum())


def richardson_lucy_baseline(image: np.ndarray, psf: np.ndarray, iterations: int = 30) -> np.ndarray:
    """RL deconvolution of any-sign data: shift to non-negative, deconvolve, shift back.

    Args:
        image: (H, W) float, e.g. a bicubic upsample in noise units.
        psf: (k, k) PSF on the same grid, summing to 1.
    Returns:
        (H, W) float64.
    """
    from skimage.restoration import richardson_lucy

    image = np.asarray(image, np.float64)
    shift = float(image.min())
    out = richardson_lucy(image - shift, np.asarray(psf, np.float64), num_iter=iterations, clip=False)
    return out + shift


def _upscaler(model, device="auto", tile=None, precision="fp32", self_ensemble=False):
    from srgan.upscale import Upscaler

    if isinstance(model, (str, Path)):
        return Upscaler.from_pretrained(model, device=device, tile=tile, precision=precision,
                                        self_ensemble=self_ensemble)
    if self_ensemble:
        raise ConfigError("self_ensemble applies to a model name or file; build the Upscaler with "
                          "self_ensemble=True instead")
    return model


# ---------------------------------------------------------------------------- per image

def score_photo(upscaler, path: Path, scale: int, preset: str, seed: int = 0) -> tuple[int, int, dict]:
    """(H, W, {method: {metric: value}}) for one photo; see the module doc."""
    from srgan.metrics import psnr_y, ssim_y

    hr, gray = _load_photo(path)
    hr = modcrop(hr, scale)
    if min(hr.shape[:2]) < 2 * scale + 8:
        raise InputError(f"{path}: {hr.shape[1]}x{hr.shape[0]} px is too small to score at x{scale}")
    lr = photo_lr(hr, scale, preset, _file_seed(path.name, seed))
    if upscaler.info.config.in_channels == 1:
        gray = True
        sr = upscaler.upscale(_to_gray(lr))
    else:
        sr = upscaler.upscale(lr)
    bic = bicubic_upsample(lr, scale)
    if gray:  # score on the gray values, like the published tables
        hr, bic = hr[..., 0], _to_gray(bic)
        sr = sr if sr.ndim == 2 else _to_gray(sr)
    if sr.shape[:2] != hr.shape[:2]:
        raise ModelError(f"model output {sr.shape[:2]} does not match the HR {hr.shape[:2]} at x{scale}")
    scores = {m: {"psnr_y": psnr_y(out, hr, scale), "ssim_y": ssim_y(out, hr, scale)}
              for m, out in (("model", sr), ("bicubic", bic))}
    return hr.shape[0], hr.shape[1], scores


def astro_lr(hr: np.ndarray, scale: int, setup: AstroSetup, name: str) -> np.ndarray:
    """The LR every method sees: the fixed astro forward model of an (H, W) float32 HR in noise units.

    PSF (``setup``), block-mean binning, then sky + read noise seeded by the file ``name``.
    Returns (H/scale, W/scale) float32.
    """
    from srgan.degrade import astro_forward, sky_read_noise

    x = torch.from_numpy(hr)[None, None]
    g = torch.Generator().manual_seed(_file_seed(name, setup.seed))
    lr = sky_read_noise(astro_forward(x, setup.fwhm, scale, setup.kind, setup.beta),
                        setup.sky, setup.gain, setup.read_noise, generator=g)  # (1, 1, h, w)
    return lr[0, 0].numpy()


def astro_outputs(upscaler, lr: np.ndarray, scale: int, setup: AstroSetup, rl_iterations: int = 30) -> dict:
    """{method: (sH, sW) output} of every method for one (h, w) float32 LR; see the module doc.

    The model runs through :func:`srgan.fits.upscale_array`, the pixel pipeline of
    ``srgan upscale``, with ``--flux-correction global``: the truth is the HR before the PSF,
    and the default block correction keeps each input pixel's (PSF-blurred) flux, i.e. gives
    up deconvolution across pixels for photometry (its PSNR: benchmarks/photometry.py --psnr).
    """
    import torch.nn.functional as F

    from srgan.degrade import psf_kernel
    from srgan.fits import FitsOptions, upscale_array

    sr, _, _ = upscale_array(upscaler, lr, FitsOptions(flux="surface-brightness", correction="global"))
    bic = F.interpolate(torch.from_numpy(lr)[None, None].double(), scale_factor=scale, mode="bicubic",
                        align_corners=False)[0, 0].numpy()
    psf = psf_kernel(setup.kind, setup.fwhm, beta=setup.beta).double().numpy()
    rl = richardson_lucy_baseline(bic, psf, rl_iterations)
    return {"model": sr, "bicubic": bic, "richardson-lucy": rl}


def score_fits(upscaler, path: Path, scale: int, setup: AstroSetup, rl_iterations: int = 30) -> tuple[int, int, dict]:
    """(H, W, {method: {metric: value}}) for one FITS image (first plane); see the module doc."""
    from srgan.data import load_fits_planes
    from srgan.metrics import psnr_data

    hr = modcrop(load_fits_planes(path)[0], scale).astype(np.float32)
    if min(hr.shape) < 2 * scale + 8:
        raise InputError(f"{path}: {hr.shape[1]}x{hr.shape[0]} px is too small to score at x{scale}")
    lr = astro_lr(hr, scale, setup, path.name)
    outputs = astro_outputs(upscaler, lr, scale, setup, rl_iterations)
    if outputs["model"].shape != hr.shape:
        raise ModelError(f"model output {outputs['model'].shape} does not match the HR {hr.shape} at x{scale}")
    lr_flux = float(lr.astype(np.float64).sum()) * scale**2  # block means: x scale^2 = flux
    norm = float(np.abs(hr.astype(np.float64)).sum())
    scores = {m: {"psnr_asinh": _psnr_asinh(out, hr, scale), "psnr_linear": psnr_data(out, hr, scale),
                  "flux_error": flux_error_vs_hr(out, hr),
                  "flux_error_lr": abs(float(np.asarray(out, np.float64).sum()) - lr_flux) / norm}
              for m, out in outputs.items()}
    return hr.shape[0], hr.shape[1], scores


# ---------------------------------------------------------------------------- folders

def _dataset_files(hr_dir: Path, astro: bool) -> list[Path]:
    from srgan.data import find_images, is_fits

    files = find_images(hr_dir)
    chosen = [p for p in files if is_fits(p) == astro]
    if not chosen:
        kind, hint = (("FITS", "photo folders need a photo preset, e.g. --preset bicubic") if astro
                      else ("photo (PNG, JPEG, ...)", "FITS folders need --preset astro"))
        raise InputError(f"no {kind} images in {hr_dir}; {hint}")
    return chosen


def evaluate(model, hr_dir, *, scale: int | None = None, preset: str | None = None, device: str = "auto",
             tile: int | None = None, precision: str = "fp32", self_ensemble: bool = False, seed: int = 0,
             rl_iterations: int = 30, progress: bool = False) -> DatasetResult:
    """Score a model and the baselines on every image of one folder.

    Args:
        model: embedded model name, model file path, or an :class:`srgan.upscale.Upscaler`.
        hr_dir: folder of HR photos (photo presets) or FITS files (``astro``).
        scale: must equal the model's scale when given (default: the model's).
        preset: degradation preset name (default: the one the model was trained for).
        device, tile, precision, self_ensemble: passed to ``Upscaler.from_pretrained`` when
            ``model`` is a name or path; fp32 by default so that scores do not depend on a GPU's
            autocast.
        seed: seed of the random degradations (photo presets other than bicubic, astro noise).
        rl_iterations: Richardson-Lucy iterations (astro).
        progress: show a tqdm bar.
    Returns:
        a :class:`DatasetResult` with per-image scores for "model" and each baseline.
    Raises:
        ConfigError (scale or preset), InputError (folder, unreadable or tiny images), ModelError.
    """
    from tqdm.auto import tqdm

    from srgan.degrade import PRESETS

    up = _upscaler(model, device, tile, precision, self_ensemble)
    scale = _check_scale(up, scale)
    preset = preset or up.info.preset
    if preset == "unknown":  # community model files do not say what they were trained on
        raise ConfigError(f"{up.info.name} does not say which degradation it was trained for: pass --preset "
                          "(bicubic: the benchmark protocol; photo: blur, noise and JPEG)")
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r} for --preset: use one of {tuple(PRESETS)}")
    astro = PRESETS[preset].pipeline == "astro"
    hr_dir = Path(hr_dir)
    files = _dataset_files(hr_dir, astro)
    setup = AstroSetup.from_preset(PRESETS[preset], seed) if astro else None
    result = DatasetResult(
        name=hr_dir.name or str(hr_dir), hr_dir=str(hr_dir), preset=preset, scale=scale,
        metrics=ASTRO_METRICS if astro else PHOTO_METRICS,
        methods=("model", "bicubic", "richardson-lucy") if astro else ("model", "bicubic"), astro=setup)
    for path in tqdm(files, desc=result.name, unit="img", disable=not progress):
        if astro:
            h, w, scores = score_fits(up, path, scale, setup, rl_iterations)
        else:
            h, w, scores = score_photo(up, path, scale, preset, seed)
        name = path.name if path == hr_dir else str(path.relative_to(hr_dir))
        result.images.append(ImageResult(name, h, w, scores))
    return result


def _check_scale(up, scale: int | None) -> int:
    if scale is not None and scale != up.scale:
        raise ConfigError(f"model {up.info.name!r} upscales x{up.scale}, not x{scale}: "
                          f"leave out --scale or pick a x{scale} model with --model")
    return up.scale


def evaluate_folders(model, hr_dirs, *, scale: int | None = None, preset: str | None = None, device: str = "auto",
                     tile: int | None = None, precision: str = "fp32", seed: int = 0, rl_iterations: int = 30,
                     progress: bool = False, self_ensemble: bool = False) -> EvalReport:
    """:func:`evaluate` on several folders with one loaded model; returns an :class:`EvalReport`.

    The arguments are :func:`evaluate`'s; ``device``, ``tile`` and ``precision`` load the model once.
    """
    up = _upscaler(model, device, tile, precision, self_ensemble)
    results = [evaluate(up, d, scale=scale, preset=preset, seed=seed, rl_iterations=rl_iterations, progress=progress)
               for d in hr_dirs]
    return EvalReport(model=up.info.name, model_sha256=up.info.sha256, model_preset=up.info.preset,
                      scale=up.scale, datasets=results)


# ---------------------------------------------------------------------------- markdown

def _fmt(metric: str, value: float) -> str:
    if metric.startswith("psnr"):
        return f"{value:.2f}"
    if metric.startswith("flux_error"):
        return f"{100 * value:.2f}%"
    return f"{value:.4f}"


def markdown(report: EvalReport | dict, command: str | None = None) -> str:
    """README-ready tables: one row per dataset, model next to the baselines (means over images).

    Accepts an :class:`EvalReport` or its ``to_dict()`` (e.g. read back from ``--json``).
    """
    d = report.to_dict() if isinstance(report, EvalReport) else report
    groups: dict[tuple, list[dict]] = {}
    for ds in d["datasets"]:
        groups.setdefault((tuple(ds["metrics"]), tuple(ds["methods"])), []).append(ds)
    blocks = []
    for (metrics, methods), datasets in groups.items():
        names = {"psnr_y": "PSNR-Y (dB)", "ssim_y": "SSIM-Y", "psnr_asinh": "PSNR asinh (dB)",
                 "psnr_linear": "PSNR linear (dB)", "flux_error": "flux err vs HR",
                 "flux_error_lr": "vs LR"}
        unit = " / ".join(names[m] for m in metrics)
        order = [m for m in methods if m != "model"] + ["model"]
        label = {**METHOD_LABELS, "model": f"**{d['model']}**"}
        head = ["Dataset", "Images"] + [f"{label[m]} {unit}" for m in order]
        lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(order)]
        for ds in datasets:
            cells = [ds["name"], str(ds["n_images"])]
            for m in order:
                cells.append(" / ".join(_fmt(k, ds["mean"][m][k]) for k in metrics))
            lines.append("| " + " | ".join(cells) + " |")
        ds0 = datasets[0]
        if "psnr_y" in metrics:
            note = (f"x{d['scale']}, `{ds0['preset']}` LR rounded to 8 bits; PSNR/SSIM on Y (BT.601), "
                    f"{d['scale']} border pixels shaved; mean over images.")
        else:
            a = ds0.get("astro_setup", {})
            note = (f"x{d['scale']}, `{ds0['preset']}` forward model ({a.get('kind')} PSF FWHM "
                    f"{a.get('fwhm')} HR px, block-mean binning, sky + read noise); PSNR of asinh(x/3) "
                    f"and of the linear data in noise units, {d['scale']} px shaved; "
                    f"flux error |ΣSR-ΣHR|/Σ|HR| and |ΣSR-{d['scale']}²ΣLR|/Σ|HR|; mean over images.")
        lines += ["", note]
        blocks.append("\n".join(lines))
    text = "\n\n".join(blocks)
    if command:
        text += f"\n\nGenerated with `{command}` (model sha256 {d['model_sha256'][:12]}).\n"
    return text
