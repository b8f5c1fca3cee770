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
    dq = np.where(rng.random((H, W)) < 0.05, rng.integers(0, 2**32, (H, W), dtype=np.uint64), 0).astype(np.uint32)
    dq[0, 0] = 2**31 + 5  # a few flagged pixels, every bit used somewhere
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
                 fits.ImageHDU(np.where(rng.random((H, W)) < 0.05, rng.integers(0, 2**15, (H, W)), 0).astype(np.int16),
                               name="DQ", ver=ver)]
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


# ---- what SCI takes from its planes: DQ do-not-use pixels, ERR for --consistency -------------

JUMP_DET = 4  # a JWST informational flag: the pixel is good


def jwst_cal(path, hot=5000.0, telescope="JWST", err=None):
    """JWST _cal style SCI/ERR/DQ: (5, 7) DO_NOT_USE with a hot value, (15, 12) JUMP_DET only."""
    rng = np.random.default_rng(4)
    y, x = np.mgrid[:H, :W]
    sci = (40 * np.exp(-((x - 10) ** 2 + (y - 11) ** 2) / 12) + rng.normal(5, 1, (H, W))).astype(np.float32)
    sci[5, 7] = hot
    dq = np.zeros((H, W), np.uint32)
    dq[5, 7] = 1 | 2048  # DO_NOT_USE + why
    dq[15, 12] = JUMP_DET
    err = np.ones((H, W), np.float32) if err is None else err
    primary = fits.PrimaryHDU()
    primary.header["TELESCOP"] = telescope
    sci_h = wcs_header()
    sci_h["BUNIT"] = "DN/s"
    fits.HDUList([primary, fits.ImageHDU(sci, sci_h, name="SCI"), fits.ImageHDU(err, name="ERR"),
                  fits.ImageHDU(dq, name="DQ")]).writeto(path, overwrite=True)
    return sci


def block(a, row, col):
    return a[row * S:(row + 1) * S, col * S:(col + 1) * S]


def outside(a, row, col):
    """Everything but the s x s output block of input pixel (row, col)."""
    keep = np.ones(a.shape, bool)
    keep[row * S:(row + 1) * S, col * S:(col + 1) * S] = False
    return a[keep]


def sci_of(path):
    with fits.open(path) as f:
        return f["SCI"].data.astype(np.float64), f["SCI"].header


@pytest.mark.parametrize("kw, args", [({}, []), ({"dq_bits": 1}, ["--dq-bits", "0x1"])])
def test_dq_do_not_use_pixels_are_flat_and_do_not_reach_their_neighbours(model, tmp_path, one_thread, kw, args):
    path, up = model
    src, hot2, dst, dst2 = (tmp_path / n for n in ("a.fits", "b.fits", "a_x4.fits", "b_x4.fits"))
    sci = jwst_cal(src)
    jwst_cal(hot2, hot=-300.0)
    if args:  # the CLI option
        for a, b in ((src, dst), (hot2, dst2)):
            result = CliRunner().invoke(main, ["upscale", str(a), str(b), "--model", str(path), *args])
            assert result.exit_code == 0, result.output
    else:
        sf.upscale_fits(up, src, dst, **kw)
        sf.upscale_fits(up, hot2, dst2, **kw)
    out, h = sci_of(dst)
    out2, _ = sci_of(dst2)
    # the DO_NOT_USE block is flat at the input value (per-pixel flux in conserve mode)
    np.testing.assert_allclose(block(out, 5, 7), sci[5, 7] / S**2, rtol=1e-6)
    # the network never saw it: the rest of the image is the same whatever its value was
    np.testing.assert_allclose(outside(out, 5, 7), outside(out2, 5, 7), rtol=1e-5, atol=1e-6)
    # JUMP_DET alone is a good pixel on JWST: super-resolved, not flat
    assert np.ptp(block(out, 15, 12)) > 0
    assert "DQ bits 0x1: 1 pixels not super-resolved" in str(h["HISTORY"])
    with fits.open(dst) as f:  # and the flag is still there, on the new grid
        assert block(f["DQ"].data, 5, 7).tolist() == [[1 | 2048] * S] * S


def test_dq_bits_zero_ignores_dq_and_other_telescopes_flag_any_bit(model, tmp_path, one_thread):
    _, up = model
    src, hot2 = tmp_path / "a.fits", tmp_path / "b.fits"
    jwst_cal(src)
    jwst_cal(hot2, hot=-300.0)
    for a in (src, hot2):
        sf.upscale_fits(up, a, a.with_suffix(".x4.fits"), dq_bits=0)
    out, h = sci_of(src.with_suffix(".x4.fits"))
    out2, _ = sci_of(hot2.with_suffix(".x4.fits"))
    assert np.ptp(block(out, 5, 7)) > 0  # the hot pixel went through the network ...
    assert np.abs(outside(out, 5, 7) - outside(out2, 5, 7)).max() > 1e-3  # ... and its neighbours saw it
    assert "DQ" not in str(h["HISTORY"])
    # HST and others: any nonzero DQ is do-not-use, JUMP_DET's bit 4 included
    hst = tmp_path / "hst_flt.fits"
    sci = jwst_cal(hst, telescope="HST")
    sf.upscale_fits(up, hst, tmp_path / "hst_x4.fits")
    out, h = sci_of(tmp_path / "hst_x4.fits")
    np.testing.assert_allclose(block(out, 15, 12), sci[15, 12] / S**2, rtol=1e-6)
    assert "DQ any flag: 2 pixels" in str(h["HISTORY"])


def history_of(path):
    with fits.open(path) as f:
        return " ".join(str(c) for c in f["SCI"].header["HISTORY"])


def iterations(history):
    import re

    return int(re.search(r"(\d+) iterations", history).group(1))


def test_consistency_takes_its_noise_from_err(model, tmp_path, one_thread):
    _, up = model
    runs = {}
    for name, err in (("large", np.full((H, W), 1e4, np.float32)), ("small", np.full((H, W), 1e-3, np.float32))):
        src = tmp_path / f"{name}.fits"
        jwst_cal(src, err=err)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 1e-3 is not reached in 100 iterations
            sf.upscale_fits(up, src, tmp_path / f"{name}_x4.fits", consistency=True, psf=1.5)
        runs[name] = history_of(tmp_path / f"{name}_x4.fits")
    assert "noise from ERR" in runs["large"] and "sigma per pixel from ERR" in runs["large"]
    # within an ERR of 1e4 everything already agrees; within 1e-3 it takes back-projection
    assert iterations(runs["large"]) == 0 < iterations(runs["small"])
    # ERR with holes (0, NaN where the pipeline masked pixels): the data's own noise fills them
    err = np.full((H, W), 1e-3, np.float32)
    err[:4] = 0
    err[10, :] = np.nan
    jwst_cal(tmp_path / "holes.fits", err=err)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sf.upscale_fits(up, tmp_path / "holes.fits", tmp_path / "holes_x4.fits", consistency=True, psf=1.5)
    assert "noise from ERR" in history_of(tmp_path / "holes_x4.fits")


def test_sigma_from_variance_planes_when_there_is_no_err(tmp_path):
    src = tmp_path / "v.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((4, 4), np.float32), name="SCI"),
                  fits.ImageHDU(np.full((4, 4), 3.0, np.float32), name="VAR_POISSON"),
                  fits.ImageHDU(np.full((4, 4), 1.0, np.float32), name="VAR_RNOISE"),
                  fits.ImageHDU(np.full((4, 5), 9.0, np.float32), name="VAR_FLAT")]).writeto(src)  # other shape
    with fits.open(src) as hdul:
        flagged, error, notes = products.sci_masks(hdul, 1, products.ANY_FLAG, want_error=True)
    assert flagged is None
    np.testing.assert_allclose(error, 2.0)
    assert notes == ["--consistency noise sigma per pixel from VAR_POISSON+VAR_RNOISE"]


def test_nddata_mask_is_do_not_use_and_its_uncertainty_drives_consistency(model, one_thread):
    _, up = model
    rng = np.random.default_rng(5)
    data = rng.normal(10, 1, (H, W)).astype(np.float32)
    mask = np.zeros((H, W), bool)
    mask[6, 9] = True
    outs = []
    for value in (1e4, -50.0):
        d = data.copy()
        d[6, 9] = value
        outs.append(sf.upscale_nddata(up, NDData(d, mask=mask, unit="electron")).data)
    np.testing.assert_allclose(block(outs[0], 6, 9), 1e4 / S**2, rtol=1e-6)
    np.testing.assert_allclose(outside(outs[0], 6, 9), outside(outs[1], 6, 9), rtol=1e-5, atol=1e-6)
    # with consistency: 0 iterations (the network's output, total flux corrected) within sigma 1e4, not 1e-3
    picture = sf.upscale_nddata(up, NDData(data, unit="electron"), correction="global").data
    for sigma, untouched in ((1e4, True), (1e-3, False)):
        nd = NDData(data, uncertainty=StdDevUncertainty(np.full((H, W), sigma, np.float32)), unit="electron")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # 1e-3 is not reached in 100 iterations
            sr = sf.upscale_nddata(up, nd, consistency=True, psf=1.5).data
        assert np.allclose(sr, picture, rtol=1e-5, atol=1e-7) == untouched, sigma


@pytest.mark.parametrize("value, message", [("-1", "negative"), ("abc", "not an integer bit mask")])
def test_dq_bits_option_refuses_bad_masks(model, tmp_path, value, message):
    path, _ = model
    src = tmp_path / "a.fits"
    jwst_cal(src)
    result = CliRunner().invoke(main, ["upscale", str(src), str(tmp_path / "o.fits"), "--model", str(path),
                                       "--dq-bits", value])
    assert result.exit_code == 2 and message in result.output
    with pytest.raises(Exception, match="dq_bits must be a bit mask"):
        sf.FitsOptions(dq_bits=-3)


def test_sky_and_noise_ignore_flagged_pixels(model, one_thread):
    """A detector area flagged bad (60% of the frame at 1e4) must not become the sky."""
    _, up = model
    data = np.random.default_rng(6).normal(5, 1, (H, W)).astype(np.float32)
    flagged = np.zeros((H, W), bool)
    flagged[: int(0.6 * H)] = True
    data[flagged] = 1e4
    out, _, (result,) = sf.upscale_array(up, data, sf.FitsOptions(), flagged=flagged)
    assert result.sky == pytest.approx(5, abs=0.3) and result.noise == pytest.approx(1, rel=0.3)
    assert result.saturated == flagged.sum()
    np.testing.assert_allclose(out[: int(0.6 * H) * S], 1e4 / S**2, rtol=1e-6)


@pytest.mark.parametrize("gz", [False, True])
def test_planes_of_every_dtype_keep_their_values_streamed_or_not(model, tmp_path, one_thread, gz):
    """Streamed planes (plain output) and in-memory ones (.gz output) store every FITS integer
    type, offset ones (uint16/32/64, int8 via BZERO) included, with extreme values exactly."""
    _, up = model
    rng = np.random.default_rng(8)
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(rng.normal(5, 1, (H, W)).astype(np.float32), name="SCI")]
    planes = {}
    for code in ("u1", "i1", "i2", "u2", "i4", "u4", "i8", "u8", "f4", "f8"):
        dt = np.dtype(code)
        if dt.kind == "f":
            a = rng.normal(0, 1e30, (H, W)).astype(dt)
        else:
            info = np.iinfo(dt)
            a = rng.integers(info.min, info.max, (H, W), dtype=dt, endpoint=True)
            a[0, 0], a[0, 1] = info.min, info.max
        planes[f"P{code.upper()}"] = a
        hdus.append(fits.ImageHDU(a, name=f"P{code.upper()}"))
    src, dst = tmp_path / "p.fits", tmp_path / ("o.fits.gz" if gz else "o.fits")
    fits.HDUList(hdus).writeto(src)
    sf.upscale_fits(up, src, dst)
    with fits.open(dst) as f:
        for name, a in planes.items():
            got = f[name].data
            assert dtype_of(got) == dtype_of(a), name
            np.testing.assert_array_equal(got, nearest(a), err_msg=name)


def test_uncompressed_outputs_stream_the_propagated_planes(model, tmp_path, one_thread, monkeypatch):
    """The planes are written through a memory map strip by strip, never built whole in memory
    (benchmarks/fits_memory.py --product: 3000^2 x4 product peaks like its SCI alone)."""
    _, up = model
    src, dst = tmp_path / "jw_i2d.fits", tmp_path / "out.fits"
    planes = product(src)

    def whole(*args, **kwargs):
        raise AssertionError("a propagated plane was built whole in memory")

    monkeypatch.setattr(products, "propagated_hdu", whole)
    monkeypatch.setattr(products, "propagate", lambda a, kind, s, flux, _p=products.propagate: (
        _p(a, kind, s, flux) if a.shape[-2] <= 8 else whole()))  # strips of at most 8 rows here
    from srgan.fits import stream

    monkeypatch.setattr(stream, "STRIP_BYTES", 2 * (W * S * S) * 8)
    sf.upscale_fits(up, src, dst)
    monkeypatch.undo()
    check_product(src, dst, planes, "conserve")
