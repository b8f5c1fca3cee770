"""Pipeline products (JWST i2d / HST drz-flt layouts): SCI through the network, the other planes
propagated onto the same grid, the flux mode from BUNIT (srgan.fits.products)."""

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, InverseVariance, NDData, StdDevUncertainty, VarianceUncertainty
from astropy.wcs import WCS
from click.testing import CliRunner
from helpers import tiny_upscaler

from srgan import fits as sf
from srgan.cli import main
from srgan.fits import products

S = 4
H, W = 24, 20


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny-x4.safetensors"
    return path, tiny_upscaler(path, scale=S)


def wcs_header():
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 53.1, -27.8
    h["CRPIX1"], h["CRPIX2"] = 10.3, 12.6
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -1.7e-5, 2e-6, 1.5e-6, 1.8e-5
    return h


def quiet_wcs(header):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return WCS(header).celestial


def product(path, bunit="electron/s", compressed=False, primary_cards=()):
    """PRIMARY + SCI, ERR, DQ (uint32, bit 31 set), WHT, VAR_POISSON, CON (int32 cube), HDRTAB.

    SCI, DQ and WHT carry the WCS (HST style); ERR, VAR_POISSON and CON have none (JWST style).
    """
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:H, :W]
    sci = (50 * np.exp(-((x - 9) ** 2 + (y - 12) ** 2) / 10) + rng.normal(0, 1, (H, W))).astype(np.float32)
    err = rng.uniform(0.5, 2.0, (H, W)).astype(np.float32)
    dq = rng.integers(0, 2**32, (H, W), dtype=np.uint64).astype(np.uint32)
    dq[0, 0] = 2**31 + 5
    wht = (1 / err**2).astype(np.float32)
    var = (err**2 * 0.7).astype(np.float32)
    con = rng.integers(0, 2**31, (2, H, W)).astype(np.int32)
    sci_h = wcs_header()
    sci_h["BUNIT"] = bunit
    image = fits.CompImageHDU if compressed else fits.ImageHDU
    kw = {"compression_type": "RICE_1"} if compressed else {}
    float_kw = {"compression_type": "GZIP_2", "quantize_level": 0.0} if compressed else {}
    table = fits.BinTableHDU.from_columns([fits.Column(name="FILENAME", format="20A", array=["a.fits", "b.fits"]),
                                           fits.Column(name="EXPTIME", format="D", array=[100.0, 200.0])],
                                          name="HDRTAB")
    table.header["TABCARD"] = "kept"
    primary = fits.PrimaryHDU()
    for k, v in primary_cards:
        primary.header[k] = v
    hdus = [primary, image(sci, sci_h, name="SCI", **float_kw), image(err, fits.Header({"BUNIT": bunit}), name="ERR",
                                                                     **float_kw),
            image(dq, wcs_header(), name="DQ", **kw), image(wht, wcs_header(), name="WHT", **float_kw),
            image(var, name="VAR_POISSON", **float_kw), image(con, name="CON", **kw), table]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fits.HDUList(hdus).writeto(path)
    return {"SCI": sci, "ERR": err, "DQ": dq, "WHT": wht, "VAR_POISSON": var, "CON": con}


def dtype_of(a):
    """(kind, bytes) of an array's dtype: FITS data are big-endian, numpy's native."""
    return a.dtype.kind, a.dtype.itemsize


def nearest(a):
    return np.repeat(np.repeat(a, S, -2), S, -1)


def check_product(src, dst, planes, flux):
    k = S * S if flux == "conserve" else 1
    with fits.open(src) as fin, fits.open(dst) as fout:
        assert [h.name for h in fout] == [h.name for h in fin]
        assert [type(h) for h in fout] == [type(h) for h in fin]
        for name in ("SCI", "ERR", "DQ", "WHT", "VAR_POISSON", "CON"):
            assert fout[name].data.shape[-2:] == (H * S, W * S), name
            assert fout[name].header["SRSCALE"] == S and fout[name].header["SRFLUX"] == flux, name
        assert dtype_of(fout["SCI"].data) == ("f", 4) and fout["CON"].data.shape == (2, H * S, W * S)
        # flags: dtype and every bit exactly kept
        for name in ("DQ", "CON"):
            assert dtype_of(fout[name].data) == dtype_of(planes[name]), name
            np.testing.assert_array_equal(fout[name].data, nearest(planes[name]), err_msg=name)
        assert fout["DQ"].data[0, 0] == 2**31 + 5
        # uncertainties: nearest neighbour, scaled for the flux mode
        np.testing.assert_allclose(fout["ERR"].data, nearest(planes["ERR"]) / k, rtol=1e-6)
        np.testing.assert_allclose(fout["VAR_POISSON"].data, nearest(planes["VAR_POISSON"]) / k**2, rtol=1e-6)
        np.testing.assert_allclose(fout["WHT"].data, nearest(planes["WHT"]) * k**2, rtol=1e-6)
        for name in ("ERR", "WHT", "VAR_POISSON"):
            assert dtype_of(fout[name].data) == ("f", 4), name
        # one WCS on every image plane: the rescaled SCI WCS, the same sky at the same point
        ref = quiet_wcs(fout["SCI"].header)
        sci_in = quiet_wcs(fin["SCI"].header)
        px = np.array([0.0, 7.3, 19.0]), np.array([0.0, 11.1, 23.0])
        expected = sci_in.pixel_to_world_values(*px)
        got = ref.pixel_to_world_values((px[0] + 0.5) * S - 0.5, (px[1] + 0.5) * S - 0.5)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-9)
        for name in ("ERR", "DQ", "WHT", "VAR_POISSON", "CON"):
            w = quiet_wcs(fout[name].header)
            assert w.has_celestial, name
            np.testing.assert_allclose(w.wcs.crpix, ref.wcs.crpix, err_msg=name)
            np.testing.assert_allclose(w.pixel_scale_matrix, ref.pixel_scale_matrix, err_msg=name)
            np.testing.assert_allclose(w.wcs.crval, ref.wcs.crval, err_msg=name)
        # tables unchanged, byte for byte
        assert fout["HDRTAB"].header.tostring() == fin["HDRTAB"].header.tostring()
        np.testing.assert_array_equal(fout["HDRTAB"].data, fin["HDRTAB"].data)


def test_product_through_the_cli_with_no_options(model, tmp_path, one_thread):
    path, _ = model
    src, dst = tmp_path / "jw_i2d.fits", tmp_path / "out.fits"
    planes = product(src)
    result = CliRunner().invoke(main, ["upscale", str(src), str(dst), "--model", str(path)])
    assert result.exit_code == 0, result.output
    check_product(src, dst, planes, "conserve")
    with fits.open(dst) as f:  # SCI went through the network: not a repeated image
        assert not np.allclose(f["SCI"].data, nearest(planes["SCI"]) / S**2)
        assert np.nansum(f["SCI"].data, dtype=np.float64) == pytest.approx(planes["SCI"].sum(dtype=np.float64),
                                                                         rel=1e-4)
        assert any("ERR / s^2" in str(c) for c in f["ERR"].header["HISTORY"])


def test_compressed_product_with_the_python_api(model, tmp_path, one_thread):
    _, up = model
    src, dst = tmp_path / "hst_drz.fits.fz", tmp_path / "out.fits"
    planes = product(src, compressed=True)
    sf.upscale_fits(up, src, dst)
    check_product(src, dst, planes, "conserve")


def test_surface_brightness_bunit_selects_the_mode(model, tmp_path, one_thread):
    _, up = model
    src, dst = tmp_path / "jw_i2d.fits", tmp_path / "out.fits"
    planes = product(src, bunit="MJy/sr")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'BUNIT is a surface brightness' warning either
        sf.upscale_fits(up, src, dst)
    check_product(src, dst, planes, "surface-brightness")
    with fits.open(dst) as f:
        assert "chosen from BUNIT 'MJy/sr'" in str(f["SCI"].header["HISTORY"])
        # values on the input's scale: the mean is kept, not divided by s^2
        assert np.mean(f["SCI"].data) == pytest.approx(np.mean(planes["SCI"]), rel=1e-3)
    # an explicit --flux wins over BUNIT
    with pytest.warns(UserWarning, match="surface brightness"):
        sf.upscale_fits(up, src, dst, flux="conserve")
    check_product(src, dst, planes, "conserve")


@pytest.mark.parametrize("bunit, mode", [("MJy/sr", "surface-brightness"), ("erg/s/cm2/Angstrom/arcsec2",
                                                                             "surface-brightness"),
                                         ("Jy/beam", "conserve"), ("electron/s", "conserve"),
                                         ("count", "conserve"), ("Jy", "conserve"), (None, "conserve")])
def test_flux_mode_from_bunit(bunit, mode):
    assert products.flux_mode(None, bunit)[0] == mode
    assert products.flux_mode("conserve", "MJy/sr") == ("conserve", None)


def test_hdu_sci_keeps_its_planes_on_the_same_grid(model, tmp_path, one_thread):
    _, up = model
    src, dst = tmp_path / "jw_i2d.fits", tmp_path / "out.fits"
    planes = product(src)
    sf.upscale_fits(up, src, dst, hdu="SCI")
    check_product(src, dst, planes, "conserve")


def test_exposure_time_weights_are_kept():
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((4, 4), np.float32), name="SCI"),
                         fits.ImageHDU(np.ones((4, 4), np.float32), name="WHT"),
                         fits.ImageHDU(np.ones((4, 4), np.float32), name="AREA"),
                         fits.ImageHDU(np.ones((4, 4), np.int16), name="SAMPLES")])
    assert products.plan_hdus(hdul) == {1: "network", 2: "weight", 3: "nearest", 4: "flags"}
    hdul[0].header["FINALWHT"] = "EXP"
    assert products.plan_hdus(hdul)[2] == "nearest"
    # without SCI, an image is science, whatever its dtype (e.g. a 16-bit camera frame)
    plain = fits.HDUList([fits.PrimaryHDU(np.ones((4, 4), np.int16)), fits.ImageHDU(np.ones((4, 4)), name="ERR")])
    assert products.plan_hdus(plain) == {0: "network", 1: "stddev"}


def test_parse_input_picks_the_sci_of_a_product(tmp_path):
    src = tmp_path / "p.fits"
    planes = product(src)
    np.testing.assert_array_equal(sf.parse_input(src)[0], planes["SCI"])


@pytest.mark.parametrize("flux", [None, "surface-brightness"])
def test_nddata_uncertainty_and_mask(model, flux, one_thread):
    _, up = model
    rng = np.random.default_rng(1)
    data = rng.normal(10, 1, (H, W)).astype(np.float32)
    sigma = rng.uniform(0.5, 2, (H, W)).astype(np.float32)
    mask = rng.random((H, W)) < 0.1
    unit = "electron/s" if flux else "MJy/sr"  # None: MJy/sr selects surface brightness
    k = 1 if flux or unit == "MJy/sr" else S * S
    for unc, expected in ((StdDevUncertainty(sigma), sigma / k), (VarianceUncertainty(sigma**2), sigma**2 / k**2),
                          (InverseVariance(1 / sigma**2), k**2 / sigma**2)):
        nd = CCDData(data, unit=unit, uncertainty=unc, mask=mask, wcs=quiet_wcs(wcs_header()))
        out = sf.upscale_nddata(up, nd, flux=flux)
        assert type(out.uncertainty) is type(unc) and out.uncertainty.array.shape == (H * S, W * S)
        np.testing.assert_allclose(out.uncertainty.array, nearest(expected), rtol=1e-5)
        np.testing.assert_array_equal(out.mask, nearest(mask))
        assert np.mean(out.data) == pytest.approx(np.mean(data), rel=1e-4)  # not divided by s^2


def test_nddata_conserve_divides_the_uncertainty(model, one_thread):
    _, up = model
    sigma = np.full((H, W), 2.0, np.float32)
    data = np.random.default_rng(2).normal(10, 1, (H, W)).astype(np.float32)
    out = sf.upscale_nddata(up, NDData(data, uncertainty=StdDevUncertainty(sigma), unit="electron"))
    np.testing.assert_allclose(out.uncertainty.array, 2.0 / S**2)
    assert np.mean(out.data) == pytest.approx(np.mean(data) / S**2, rel=1e-4)


def flt(path):
    """HST _flt style: two chips (SCI, ERR, DQ) x EXTVER 1, 2; the chips' WCSs differ, ERR has none."""
    rng = np.random.default_rng(3)
    hdus = [fits.PrimaryHDU()]
    for ver in (1, 2):
        h = wcs_header()
        h["CRVAL2"] += 0.05 * ver
        h["BUNIT"] = "ELECTRONS"
        hdus += [fits.ImageHDU(rng.normal(100, 5, (H, W)).astype(np.float32), h, name="SCI", ver=ver),
                 fits.ImageHDU(np.full((H, W), float(ver), np.float32), name="ERR", ver=ver),
                 fits.ImageHDU(rng.integers(0, 2**15, (H, W)).astype(np.int16), name="DQ", ver=ver)]
    fits.HDUList(hdus).writeto(path)


def test_flt_chips_take_the_wcs_of_their_own_sci(model, tmp_path, one_thread):
    _, up = model
    src, dst = tmp_path / "x_flt.fits", tmp_path / "out.fits"
    flt(src)
    sf.upscale_fits(up, src, dst)
    with fits.open(src) as fin, fits.open(dst) as fout:
        for ver in (1, 2):
            ref = quiet_wcs(fout["SCI", ver].header)
            err = quiet_wcs(fout["ERR", ver].header)
            np.testing.assert_allclose(err.wcs.crval, ref.wcs.crval)
            np.testing.assert_allclose(fout["ERR", ver].data, ver / S**2)
            np.testing.assert_array_equal(fout["DQ", ver].data, nearest(fin["DQ", ver].data))
            assert fout["DQ", ver].data.dtype.kind == "i" and fout["DQ", ver].data.dtype.itemsize == 2
        # the second chip only: its planes go with it, the first chip is copied unchanged
        sf.upscale_fits(up, src, tmp_path / "chip2.fits", hdu=("SCI", 2))
    with fits.open(src) as fin, fits.open(tmp_path / "chip2.fits") as f:
        assert f["SCI", 2].data.shape == f["ERR", 2].data.shape == f["DQ", 2].data.shape == (H * S, W * S)
        for name in ("SCI", "ERR", "DQ"):
            np.testing.assert_array_equal(f[name, 1].data, fin[name, 1].data)
