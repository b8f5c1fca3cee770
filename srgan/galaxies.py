"""Synthetic high-resolution galaxy images in FITS, for training and testing the astro path.

Each image is one galaxy near the centre of a square stamp, seen through a telescope:

* a bulge (Sersic, n in [3, 5]) plus an exponential disk (Sersic n = 1) with their own
  half-light radius, ellipticity and position angle, and a total magnitude;
* star-forming knots: small Gaussians scattered over the disk like its light (radius drawn
  from the disk's exponential profile, projected with its inclination and angle), taking a
  share of the disk's flux;
* everything convolved with a Moffat PSF (random FWHM and beta); field stars are the same
  PSF at random positions and magnitudes;
* a flat sky (mag/arcsec^2 -> electrons per pixel), Poisson noise on sky + sources and
  Gaussian read noise, then divided by the exposure time: values are electron/s (BUNIT).

Sizes are drawn relative to the stamp (cutouts are centred on and sized to their galaxy),
so ``pixel_scale`` sets the WCS and the sky per pixel, not how many pixels a galaxy spans.

Rendering engines:

* ``"astropy"`` (default, no extra dependency): ``astropy.modeling`` Sersic2D, Gaussian2D
  and Moffat2D sampled on a grid ``oversample`` times finer than the pixels, the galaxy's
  core integrated ``core_refine`` (central pixel: 4 ``core_refine``) times finer still
  (an n = 4 core is too steep for plain sampling), convolved with the pixel-integrated
  PSF on the fine grid (scipy FFT) and block-averaged to pixels; stars are the PSF
  integrated over each pixel.
* ``"galsim"`` (``pip install srgan[galaxies]``): GalSim's exact profiles, its
  k-space convolution with the PSF and the pixel. Same parameter draws, same noise.

Randomness: galaxy ``i`` of seed ``K`` uses ``numpy.random.default_rng([K, i])``, so it is
the same image whatever ``n`` is, and a run is reproducible byte for byte.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from srgan.errors import ConfigError

ENGINES = ("astropy", "galsim")


@dataclass(frozen=True)
class GalaxyConfig:
    size: int = 128  # stamp side, pixels
    pixel_scale: float = 0.03  # arcsec / pixel (0.03: HST ACS and JWST NIRCam short-wave)
    engine: str = "astropy"  # "astropy" or "galsim" (see module doc)
    zeropoint: float = 26.0  # AB magnitude giving 1 electron/s
    exptime: float = 1000.0  # seconds
    sky_mag: float = 22.5  # sky surface brightness, mag / arcsec^2
    read_noise: float = 5.0  # electrons per pixel
    mag_range: tuple[float, float] = (17.5, 22.5)  # galaxy total magnitude
    star_mag_range: tuple[float, float] = (18.0, 25.0)
    stars_mean: float = 0.5  # mean number of field stars per stamp (Poisson)
    knots_mean: float = 8.0  # mean number of knots for a pure disk (scaled by 1 - B/T)
    disk_size_range: tuple[float, float] = (0.05, 0.22)  # disk half-light radius / size
    psf_fwhm_range: tuple[float, float] = (1.5, 3.0)  # pixels
    psf_beta_range: tuple[float, float] = (2.5, 4.5)  # Moffat beta
    subtract_sky: bool = False  # True: write sky-subtracted images (as many survey stamps are)
    oversample: int = 3  # astropy engine: fine-grid factor
    core_refine: int = 8  # astropy engine: extra factor near the centre (x4 in the central pixel)

    def __post_init__(self):
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {ENGINES}, got {self.engine!r}; use --engine")
        if self.size < 16:
            raise ConfigError(f"galaxy stamps must be at least 16 px, got --size {self.size}")
        if self.pixel_scale <= 0:
            raise ConfigError(f"pixel scale must be > 0 arcsec, got --pixel-scale {self.pixel_scale}")
        if self.exptime <= 0 or self.read_noise < 0 or self.oversample < 1 or self.core_refine < 1:
            raise ConfigError("exptime must be > 0, read_noise >= 0, oversample and core_refine >= 1")

    @property
    def sky_rate(self) -> float:
        """Sky level in electron/s per pixel."""
        return 10 ** (-0.4 * (self.sky_mag - self.zeropoint)) * self.pixel_scale**2

    @property
    def sky_noise(self) -> float:
        """Expected noise of an empty sky pixel, electron/s (Poisson sky + read noise)."""
        return math.sqrt(self.sky_rate * self.exptime + self.read_noise**2) / self.exptime


@dataclass(frozen=True)
class Knot:
    x: float
    y: float
    sigma: float  # pixels
    flux: float  # electron/s


@dataclass(frozen=True)
class Star:
    x: float
    y: float
    flux: float  # electron/s


@dataclass(frozen=True)
class GalaxyParams:
    """One random draw: everything needed to render one image (positions in 0-based pixels)."""

    x0: float
    y0: float
    flux: float  # galaxy total, electron/s (bulge + disk + knots)
    bulge_fraction: float  # B/T
    bulge_n: float
    bulge_r_eff: float  # pixels, along the major axis (astropy's r_eff)
    bulge_ellip: float  # 1 - b/a
    bulge_theta: float  # radians, counter-clockwise from +x
    disk_r_eff: float
    disk_ellip: float
    disk_theta: float
    psf_fwhm: float  # pixels
    psf_beta: float
    ra: float  # degrees, of the stamp centre
    dec: float
    knots: tuple[Knot, ...] = field(default_factory=tuple)
    stars: tuple[Star, ...] = field(default_factory=tuple)

    @property
    def knot_flux(self) -> float:
        return sum(k.flux for k in self.knots)

    @property
    def disk_flux(self) -> float:
        """Smooth disk flux (the knots' share excluded)."""
        return self.flux * (1 - self.bulge_fraction) - self.knot_flux


def _mag_to_rate(mag: float, zeropoint: float) -> float:
    return 10 ** (-0.4 * (mag - zeropoint))


def draw_params(rng: np.random.Generator, config: GalaxyConfig = GalaxyConfig()) -> GalaxyParams:
    """Draw the parameters of one galaxy image from ``rng``."""
    c = config
    s = c.size
    x0, y0 = (s - 1) / 2 + rng.uniform(-2, 2, size=2)
    mag = rng.uniform(*c.mag_range)
    flux = _mag_to_rate(mag, c.zeropoint)
    bt = rng.uniform(0.0, 0.8)
    disk_r = rng.uniform(*c.disk_size_range) * s
    disk_ellip = rng.uniform(0.0, 0.75)
    disk_theta = rng.uniform(0, np.pi)
    bulge_n = rng.uniform(3.0, 5.0)
    bulge_r = max(disk_r * rng.uniform(0.1, 0.5), 0.5)
    bulge_ellip = rng.uniform(0.0, 0.3)
    bulge_theta = disk_theta + rng.normal(0, 0.2)

    # Knots follow the disk light: radius from the exponential profile (Gamma(2, h) for the
    # radial distribution of an exponential disk), projected like the disk.
    n_knots = rng.poisson(c.knots_mean * (1 - bt))
    knots = []
    if n_knots:
        share = rng.uniform(0.03, 0.2) * flux * (1 - bt)
        weights = rng.dirichlet(np.ones(n_knots))
        h = disk_r / 1.678  # exponential scale length from the half-light radius
        for w in weights:
            r = min(rng.gamma(2.0, h), 2.5 * disk_r)
            phi = rng.uniform(0, 2 * np.pi)
            u, v = r * np.cos(phi), r * np.sin(phi) * (1 - disk_ellip)
            ct, st = np.cos(disk_theta), np.sin(disk_theta)
            knots.append(Knot(float(x0 + u * ct - v * st), float(y0 + u * st + v * ct),
                              float(rng.uniform(0.7, 2.5)), float(w * share)))

    stars = []
    for _ in range(rng.poisson(c.stars_mean)):
        sx, sy = rng.uniform(0, s - 1, size=2)
        stars.append(Star(float(sx), float(sy), _mag_to_rate(rng.uniform(*c.star_mag_range), c.zeropoint)))

    ra = rng.uniform(0, 360)
    dec = float(np.degrees(np.arcsin(rng.uniform(-1, 1))))
    return GalaxyParams(
        x0=float(x0), y0=float(y0), flux=float(flux), bulge_fraction=float(bt), bulge_n=float(bulge_n),
        bulge_r_eff=float(bulge_r), bulge_ellip=float(bulge_ellip), bulge_theta=float(bulge_theta),
        disk_r_eff=float(disk_r), disk_ellip=float(disk_ellip), disk_theta=float(disk_theta),
        psf_fwhm=float(rng.uniform(*c.psf_fwhm_range)), psf_beta=float(rng.uniform(*c.psf_beta_range)),
        ra=float(ra), dec=dec, knots=tuple(knots), stars=tuple(stars),
    )


def sersic_amplitude(flux: float, r_eff: float, n: float, ellip: float) -> float:
    """Surface brightness at r_eff (astropy Sersic2D's ``amplitude``) giving total ``flux``.

    Total = I_e r_e^2 (1 - ellip) 2 pi n e^b_n Gamma(2n) / b_n^(2n), b_n = gammaincinv(2n, 1/2).
    """
    from scipy.special import gamma, gammaincinv

    bn = gammaincinv(2 * n, 0.5)
    total_per_ie = r_eff**2 * (1 - ellip) * 2 * np.pi * n * np.exp(bn) * gamma(2 * n) / bn ** (2 * n)
    return flux / total_per_ie


def _moffat(fwhm: float, beta: float, flux: float, x0: float, y0: float):
    from astropy.modeling.models import Moffat2D

    gamma = fwhm / (2 * math.sqrt(2 ** (1 / beta) - 1))
    amplitude = flux * (beta - 1) / (np.pi * gamma**2)  # Moffat total = A pi gamma^2 / (beta - 1)
    return Moffat2D(amplitude, x0, y0, gamma, beta)


def _cell_mean(fn, xc: np.ndarray, yc: np.ndarray, d: float, factor: int) -> np.ndarray:
    """Mean of ``fn(x, y)`` over square cells of side ``d`` centred on the grid ``xc`` x ``yc``,
    from ``factor``^2 samples per cell: (len(yc), len(xc)). factor=1 samples the centres."""
    off = ((np.arange(factor) + 0.5) / factor - 0.5) * d
    xx, yy = (xc[:, None] + off).ravel(), (yc[:, None] + off).ravel()
    return fn(*np.meshgrid(xx, yy)).reshape(len(yc), factor, len(xc), factor).mean((1, 3))


def _window(coords: np.ndarray, centre: float, half: float) -> slice:
    """Indices of the sorted ``coords`` within ``half`` of ``centre``."""
    lo, hi = np.searchsorted(coords, [centre - half, centre + half])
    return slice(int(lo), int(hi))


def _render_astropy(p: GalaxyParams, c: GalaxyConfig) -> np.ndarray:
    from astropy.modeling.models import Gaussian2D, Sersic2D
    from scipy.signal import fftconvolve

    s, os_, r = c.size, c.oversample, c.core_refine
    d = 1 / os_  # fine cell side, pixels
    fine = (np.arange(s * os_) + 0.5) * d - 0.5  # fine cell centres, pixel coordinates
    models = []
    if p.bulge_fraction > 0:
        a = sersic_amplitude(p.flux * p.bulge_fraction, p.bulge_r_eff, p.bulge_n, p.bulge_ellip)
        models.append(Sersic2D(a, p.bulge_r_eff, p.bulge_n, p.x0, p.y0, p.bulge_ellip, p.bulge_theta))
    a = sersic_amplitude(p.disk_flux, p.disk_r_eff, 1.0, p.disk_ellip)
    models.append(Sersic2D(a, p.disk_r_eff, 1.0, p.x0, p.y0, p.disk_ellip, p.disk_theta))

    def profile(x, y):  # surface brightness, electron/s per pixel^2
        return sum(m.evaluate(x, y, *m.parameters) for m in models)

    img = _cell_mean(profile, fine, fine, d, 1)  # (sO, sO)
    # The core of an n ~ 4 profile is too steep for plain sampling: integrate the cells
    # within 2.5 pixels of the centre r times finer, those within 0.75 pixel 4r times.
    for half, factor in ((2.5, r), (0.75, 4 * r)):
        wy, wx = _window(fine, p.y0, half), _window(fine, p.x0, half)
        img[wy, wx] = _cell_mean(profile, fine[wx], fine[wy], d, factor)
    for k in p.knots:  # each within 5 sigma of its centre
        g = Gaussian2D(k.flux / (2 * np.pi * k.sigma**2), k.x, k.y, k.sigma, k.sigma)
        wy, wx = _window(fine, k.y, 5 * k.sigma), _window(fine, k.x, 5 * k.sigma)
        img[wy, wx] += _cell_mean(lambda x, y, g=g: g.evaluate(x, y, *g.parameters), fine[wx], fine[wy], d, 2)

    # PSF integrated over the fine cells, out to 4 FWHM (at least 6 px), normalised to 1.
    psf = _moffat(p.psf_fwhm, p.psf_beta, 1.0, 0.0, 0.0)
    half = int(math.ceil(max(4 * p.psf_fwhm, 6) * os_))
    kx = np.arange(-half, half + 1) * d
    kernel = _cell_mean(lambda x, y: psf.evaluate(x, y, *psf.parameters), kx, kx, d, 4)
    img = fftconvolve(img, kernel / kernel.sum(), mode="same")
    img = img.reshape(s, os_, s, os_).mean((1, 3))  # mean surface brightness = flux per pixel

    # Stars: the PSF sampled at pixel centres, integrated (os r)^2 times per pixel within 3 FWHM.
    centres = np.arange(s, dtype=np.float64)
    for st in p.stars:
        m = _moffat(p.psf_fwhm, p.psf_beta, st.flux, st.x, st.y)

        def star(x, y, m=m):
            return m.evaluate(x, y, *m.parameters)

        light = _cell_mean(star, centres, centres, 1.0, 1)
        wy, wx = _window(centres, st.y, 3 * p.psf_fwhm), _window(centres, st.x, 3 * p.psf_fwhm)
        light[wy, wx] = _cell_mean(star, centres[wx], centres[wy], 1.0, os_ * r)
        img += light
    return img


def _render_galsim(p: GalaxyParams, c: GalaxyConfig) -> np.ndarray:
    try:
        import galsim
    except ImportError as e:
        raise ConfigError("the galsim engine needs GalSim: pip install srgan[galaxies] "
                  "(or use --engine astropy)") from e
    s = c.size
    centre = (s - 1) / 2  # GalSim draws profiles centred on the image's true centre

    def placed(obj, x, y):
        return obj.shift(x - centre, y - centre)

    # astropy r_eff is along the major axis; GalSim's half_light_radius is circularised
    # (a shear keeps the area), so hlr = r_eff * sqrt(b/a).
    parts = []
    if p.bulge_fraction > 0:
        q = 1 - p.bulge_ellip
        b = galsim.Sersic(n=p.bulge_n, half_light_radius=p.bulge_r_eff * math.sqrt(q),
                          flux=p.flux * p.bulge_fraction)
        parts.append(placed(b.shear(q=q, beta=p.bulge_theta * galsim.radians), p.x0, p.y0))
    q = 1 - p.disk_ellip
    d = galsim.Exponential(half_light_radius=p.disk_r_eff * math.sqrt(q), flux=p.disk_flux)
    parts.append(placed(d.shear(q=q, beta=p.disk_theta * galsim.radians), p.x0, p.y0))
    for k in p.knots:
        parts.append(placed(galsim.Gaussian(sigma=k.sigma, flux=k.flux), k.x, k.y))
    psf = galsim.Moffat(beta=p.psf_beta, fwhm=p.psf_fwhm)
    image = galsim.ImageD(s, s, scale=1.0)
    galsim.Convolve([galsim.Add(parts), psf]).drawImage(image=image)
    for st in p.stars:
        placed(psf.withFlux(st.flux), st.x, st.y).drawImage(image=image, add_to_image=True)
    return image.array.copy()


def render(params: GalaxyParams, config: GalaxyConfig = GalaxyConfig()) -> np.ndarray:
    """Noiseless image (size, size) float64 in electron/s per pixel, without sky."""
    if config.engine == "galsim":
        return _render_galsim(params, config)
    return _render_astropy(params, config)


def add_sky_and_noise(image: np.ndarray, rng: np.random.Generator, config: GalaxyConfig = GalaxyConfig()) -> np.ndarray:
    """Add the sky, draw Poisson electrons and Gaussian read noise; electron/s, float32."""
    t = config.exptime
    electrons = np.clip(image + config.sky_rate, 0, None) * t
    counts = rng.poisson(electrons).astype(np.float64) + rng.normal(0.0, config.read_noise, image.shape)
    out = counts / t
    if config.subtract_sky:
        out -= config.sky_rate
    return out.astype(np.float32)


def galaxy_header(p: GalaxyParams, config: GalaxyConfig, seed: int, index: int):
    """FITS header: TAN WCS centred on the stamp, units, and every generation parameter."""
    from astropy.io import fits
    from astropy.wcs import WCS

    import srgan

    c = config
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [p.ra, p.dec]
    w.wcs.crpix = [(c.size + 1) / 2, (c.size + 1) / 2]  # FITS pixels are 1-based
    w.wcs.cdelt = [-c.pixel_scale / 3600, c.pixel_scale / 3600]  # RA grows to the left
    w.wcs.cunit = ["deg", "deg"]
    w.wcs.radesys = "ICRS"
    h = fits.Header()
    h["BUNIT"] = ("electron/s", "pixel values: electrons per second")
    wcs_cards = w.to_header()
    for key in ("MJDREF", "DATEREF"):
        wcs_cards.remove(key, ignore_missing=True)
    h.extend(wcs_cards, update=True)
    cards = [
        ("ORIGIN", "srgan make-galaxies", "synthetic galaxy, not an observation"),
        ("SRGANVER", srgan.__version__, "srgan version that made this image"),
        ("ENGINE", c.engine, "rendering engine: astropy.modeling or galsim"),
        ("SEED", seed, "make-galaxies --seed"),
        ("GALINDEX", index, "rng = numpy default_rng([SEED, GALINDEX])"),
        ("PIXSCALE", c.pixel_scale, "[arcsec/pixel]"),
        ("EXPTIME", c.exptime, "[s] exposure time for the Poisson noise"),
        ("GAIN", 1.0, "[electron/count] counts are electrons"),
        ("MAGZERO", c.zeropoint, "AB magnitude of 1 electron/s"),
        ("SKYMAG", c.sky_mag, "[mag/arcsec2] sky surface brightness"),
        ("SKYLEVEL", c.sky_rate, "[electron/s] sky per pixel added before noise"),
        ("SKYSUB", c.subtract_sky, "SKYLEVEL subtracted after the noise"),
        ("RDNOISE", c.read_noise, "[electron] Gaussian read noise per pixel"),
        ("SKYNOISE", c.sky_noise, "[electron/s] noise of an empty sky pixel"),
        ("GALMAG", -2.5 * math.log10(p.flux) + c.zeropoint, "galaxy total AB magnitude"),
        ("GALFLUX", p.flux, "[electron/s] galaxy total flux"),
        ("GAL_X", p.x0 + 1, "[pixel] galaxy centre x, FITS 1-based"),
        ("GAL_Y", p.y0 + 1, "[pixel] galaxy centre y, FITS 1-based"),
        ("BT", p.bulge_fraction, "bulge-to-total flux ratio"),
        ("BULGE_N", p.bulge_n, "bulge Sersic index"),
        ("BULGE_RE", p.bulge_r_eff, "[pixel] bulge half-light radius, major axis"),
        ("BULGE_E", p.bulge_ellip, "bulge ellipticity 1 - b/a"),
        ("BULGE_PA", math.degrees(p.bulge_theta), "[deg] bulge major axis, CCW from +x"),
        ("DISK_RE", p.disk_r_eff, "[pixel] disk half-light radius, major axis"),
        ("DISK_E", p.disk_ellip, "disk ellipticity 1 - b/a"),
        ("DISK_PA", math.degrees(p.disk_theta), "[deg] disk major axis, CCW from +x"),
        ("NKNOTS", len(p.knots), "star-forming knots (Gaussians)"),
        ("KNOTFLUX", p.knot_flux, "[electron/s] knots flux, part of GALFLUX"),
        ("NSTARS", len(p.stars), "field stars (PSF point sources)"),
        ("STARFLUX", sum(st.flux for st in p.stars), "[electron/s] field stars total flux"),
        ("PSF", "moffat", "PSF of the galaxy and stars"),
        ("PSFFWHM", p.psf_fwhm, "[pixel] PSF full width at half maximum"),
        ("PSFBETA", p.psf_beta, "Moffat beta of the PSF"),
    ]
    for key, value, comment in cards:
        h[key] = (float(value) if isinstance(value, (float, np.floating)) else value, comment)
    return h


def galaxy_hdu(seed: int, index: int, config: GalaxyConfig = GalaxyConfig()):
    """Galaxy ``index`` of run ``seed`` as a float32 ``PrimaryHDU`` with WCS and parameter cards."""
    from astropy.io import fits

    rng = np.random.default_rng([seed, index])
    params = draw_params(rng, config)
    data = add_sky_and_noise(render(params, config), rng, config)
    return fits.PrimaryHDU(data=data, header=galaxy_header(params, config, seed, index))


def make_galaxies(out_dir, n: int, *, seed: int = 0, config: GalaxyConfig = GalaxyConfig(),
                  overwrite: bool = False, progress: bool = False) -> list[Path]:
    """Write ``n`` galaxies as ``out_dir/galaxy_00000.fits``... atomically; returns the paths.

    Raises ConfigError when a target file exists and ``overwrite`` is False, before writing.
    """
    from tqdm.auto import tqdm

    from srgan.atomic import atomic_write

    if n < 1:
        raise ConfigError(f"--n must be >= 1, got {n}")
    if config.engine == "galsim":
        try:
            import galsim  # noqa: F401
        except ImportError as e:
            raise ConfigError("--engine galsim needs GalSim: pip install srgan[galaxies] "
                              "(or use --engine astropy)") from e
    out_dir = Path(out_dir)
    width = max(5, len(str(n - 1)))
    paths = [out_dir / f"galaxy_{i:0{width}d}.fits" for i in range(n)]
    existing = [p for p in paths if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{existing[0]} already exists ({len(existing)} of the {n} files); "
                          "choose an empty OUT_DIR or pass --overwrite")
    for i, path in enumerate(tqdm(paths, desc="galaxies", unit="img", disable=not progress)):
        hdu = galaxy_hdu(seed, i, config)
        atomic_write(path, lambda tmp: hdu.writeto(tmp, overwrite=True))
    return paths
