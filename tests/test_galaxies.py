import hashlib
from dataclasses import replace

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from click.testing import CliRunner

from srgan.cli import main
from srgan.errors import ConfigError
from srgan.galaxies import GalaxyConfig, draw_params, galaxy_hdu, make_galaxies, render, sersic_amplitude

SMALL = GalaxyConfig(size=48)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path):
    a = make_galaxies(tmp_path / "a", 3, seed=5, config=SMALL)
    b = make_galaxies(tmp_path / "b", 3, seed=5, config=SMALL)
    c = make_galaxies(tmp_path / "c", 3, seed=6, config=SMALL)
    assert [p.name for p in a] == ["galaxy_00000.fits", "galaxy_00001.fits", "galaxy_00002.fits"]
    assert [_digest(p) for p in a] == [_digest(p) for p in b]
    assert all(_digest(x) != _digest(y) for x, y in zip(a, c))
    # galaxy i does not depend on how many were asked for
    assert _digest(make_galaxies(tmp_path / "d", 1, seed=5, config=SMALL)[0]) == _digest(a[0])


def test_header_has_tan_wcs_units_and_generation_cards():
    hdu = galaxy_hdu(3, 0, replace(SMALL, pixel_scale=0.2))
    h = hdu.header
    w = WCS(h)
    assert w.wcs.ctype[0] == "RA---TAN" and w.wcs.ctype[1] == "DEC--TAN"
    assert np.allclose(np.abs(w.proj_plane_pixel_scales()[0].to_value("arcsec")), 0.2)
    centre = w.pixel_to_world((48 - 1) / 2, (48 - 1) / 2)
    assert centre.ra.deg == pytest.approx(h["CRVAL1"]) and centre.dec.deg == pytest.approx(h["CRVAL2"])
    assert h["BUNIT"] == "electron/s"
    for key in ("SEED", "ENGINE", "EXPTIME", "MAGZERO", "SKYLEVEL", "SKYNOISE", "RDNOISE", "GALMAG",
                "GALFLUX", "BT", "BULGE_N", "DISK_RE", "PSFFWHM", "PSFBETA", "NKNOTS", "NSTARS"):
        assert key in h, key
    assert h["SEED"] == 3 and h["ENGINE"] == "astropy" and h["PIXSCALE"] == 0.2
    assert hdu.data.dtype == np.float32 and hdu.data.shape == (48, 48)


def test_galaxy_brighter_than_sky_and_flux_adds_up():
    cfg = replace(GalaxyConfig(size=96), stars_mean=0.0, mag_range=(19.0, 19.0))
    hdu = galaxy_hdu(1, 0, cfg)
    d, h = hdu.data.astype(np.float64), hdu.header
    cy, cx = int(round(h["GAL_Y"] - 1)), int(round(h["GAL_X"] - 1))
    corner = d[:12, :12]
    assert d[cy, cx] > np.median(corner) + 20 * h["SKYNOISE"]
    assert h["GALMAG"] == pytest.approx(19.0)
    # total of the sky-subtracted image = galaxy flux (minus what falls off the stamp), within noise
    total = (d - h["SKYLEVEL"]).sum()
    assert total == pytest.approx(h["GALFLUX"], rel=0.05)


def test_noise_level_is_as_configured():
    cfg = replace(GalaxyConfig(size=64), stars_mean=0.0, mag_range=(40.0, 40.0), read_noise=8.0)
    d = galaxy_hdu(2, 0, cfg).data.astype(np.float64)
    assert d.mean() == pytest.approx(cfg.sky_rate, abs=3 * cfg.sky_noise / 64)
    assert d.std() == pytest.approx(cfg.sky_noise, rel=0.03)
    sub = galaxy_hdu(2, 0, replace(cfg, subtract_sky=True)).data
    assert abs(float(sub.mean())) < 3 * cfg.sky_noise / 64


def test_sersic_amplitude_gives_requested_total_flux():
    from astropy.modeling.models import Sersic1D
    from scipy.integrate import quad

    ellip = 0.4
    a = sersic_amplitude(100.0, 6.0, 2.5, ellip)
    profile = Sersic1D(a, 6.0, 2.5)
    # elliptical isophotes: area factor b/a = 1 - ellip times the circular integral
    total = (1 - ellip) * quad(lambda r: 2 * np.pi * r * profile(r), 0, np.inf, limit=200)[0]
    assert total == pytest.approx(100.0, rel=1e-4)


def test_steep_core_is_integrated_not_aliased():
    """A tiny n=5 bulge (r_eff 0.5 px): default sampling is within 1% of a 4x finer render."""
    p = draw_params(np.random.default_rng(0), SMALL)
    p = replace(p, knots=(), stars=(), bulge_fraction=0.8, bulge_r_eff=0.5, bulge_n=5.0)
    a = render(p, SMALL)
    b = render(p, replace(SMALL, oversample=12, core_refine=16))
    assert a.sum() == pytest.approx(b.sum(), rel=0.01)
    assert np.abs(a - b).max() < 0.02 * b.max()
    # plain centre sampling (no core integration) would be far off at the peak
    c = render(p, replace(SMALL, oversample=1, core_refine=1))
    assert np.abs(c - b).max() > 0.1 * b.max()


def test_galsim_engine_agrees_with_astropy_when_installed():
    pytest.importorskip("galsim", reason="GalSim not installed (pip install srgan[galaxies])")
    p = draw_params(np.random.default_rng([1, 2]), SMALL)
    a = render(p, SMALL)
    g = render(p, replace(SMALL, engine="galsim"))
    assert a.sum() == pytest.approx(g.sum(), rel=0.01)
    assert np.abs(a - g).max() < 0.03 * g.max()


def test_galsim_missing_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "galsim", None)  # makes `import galsim` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install srgan\[galaxies\]"):
        make_galaxies(tmp_path, 1, config=replace(SMALL, engine="galsim"))
    assert not list(tmp_path.iterdir())


def test_existing_files_are_not_overwritten_without_flag(tmp_path):
    make_galaxies(tmp_path, 1, config=SMALL)
    before = _digest(tmp_path / "galaxy_00000.fits")
    with pytest.raises(ConfigError, match="--overwrite"):
        make_galaxies(tmp_path, 1, seed=9, config=SMALL)
    assert _digest(tmp_path / "galaxy_00000.fits") == before
    make_galaxies(tmp_path, 1, seed=9, config=SMALL, overwrite=True)
    assert _digest(tmp_path / "galaxy_00000.fits") != before


def test_cli_writes_files_and_reports_errors(tmp_path):
    runner = CliRunner()
    out = tmp_path / "gal"
    r = runner.invoke(main, ["make-galaxies", str(out), "--n", "2", "--size", "32", "--seed", "4",
                             "--pixel-scale", "0.1"])
    assert r.exit_code == 0, r.output
    assert "wrote 2 galaxies" in r.output
    files = sorted(out.glob("*.fits"))
    assert len(files) == 2 and fits.getheader(files[0])["PIXSCALE"] == 0.1
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temporaries
    r = runner.invoke(main, ["make-galaxies", str(out), "--n", "1", "--size", "8"])
    assert r.exit_code == 1
    assert r.output.startswith("Error: galaxy stamps must be at least 16 px")
