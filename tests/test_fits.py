"""srgan.fits: input parsing, WCS rescaling, flux, NaNs, every FITS flavour in and out, bad input."""

import dataclasses
import gzip
import re
import warnings

import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.nddata import CCDData, NDData, StdDevUncertainty, UnknownUncertainty
from astropy.wcs import WCS
from helpers import tiny_upscaler

import srgan
from srgan import fits as sf
from srgan.degrade import astro_forward, psf_kernel
from srgan.errors import ConfigError, InputError, ModelError, SrganError
from srgan.normalize import Normalization

SCALE = 2


# ---------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def up(tmp_path_factory):
    return tiny_upscaler(tmp_path_factory.mktemp("model") / "tiny-astro.safetensors")


class Oracle:
    """An 'upscaler' whose output is a known HR image: isolates srgan.fits' own maths."""

    def __init__(self, hr, info, scale=SCALE):
        self.hr, self.info, self.scale, self.tile, self.overlap = hr, info, scale, None, None

    def upscale_planes(self, planes, *, sky=None, noise=None, out=None, progress=False):
        out[...] = self.hr[None]
        return out


class Interpolating(Oracle):
    """A well-behaved stand-in network: bicubic interpolation in the asinh-stretched space."""

    def __init__(self, info, scale=SCALE):
        super().__init__(None, info, scale)

    def upscale_planes(self, planes, *, sky=None, noise=None, out=None, progress=False):
        norm = self.info.normalization
        x = norm.forward(torch.from_numpy(np.ascontiguousarray(planes, np.float32))[None], sky, noise)
        y = torch.nn.functional.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        out[...] = norm.inverse(y, sky, noise)[0].numpy()
        return out


def galaxy(h=32, w=40, seed=0, sky=0.0, noise=1.0):
    """A bright galaxy on a noisy sky, float32 (h, w)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:h, :w]
    img = 200 * np.exp(-((x - w / 2) ** 2 / 18 + (y - h / 2) ** 2 / 8))
    return (img + sky + noise * rng.standard_normal((h, w))).astype(np.float32)


def tan_header(kind="pc"):
    """Celestial headers built in code: 'pc' (CDELT+PC), 'cd', 'sip' (TAN-SIP with AP/BP), 'tpv'."""
    h = fits.Header()
    h["CTYPE1"], h["CTYPE2"] = "RA---TAN", "DEC--TAN"
    h["CRVAL1"], h["CRVAL2"] = 150.1, 2.2
    h["CRPIX1"], h["CRPIX2"] = 17.3, 12.8
    h["CUNIT1"], h["CUNIT2"] = "deg", "deg"
    if kind == "pc":
        t = np.deg2rad(30)
        h["CDELT1"], h["CDELT2"] = -2e-4, 2e-4
        h["PC1_1"], h["PC1_2"], h["PC2_1"], h["PC2_2"] = np.cos(t), -np.sin(t), np.sin(t), np.cos(t)
        return h
    h["CD1_1"], h["CD1_2"], h["CD2_1"], h["CD2_2"] = -1.9e-4, 3e-5, 2.5e-5, 2.1e-4
    if kind == "sip":
        h["CTYPE1"], h["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
        h["A_ORDER"] = h["B_ORDER"] = 3
        h["A_2_0"], h["A_1_1"], h["A_0_2"], h["A_3_0"], h["A_1_2"] = 2e-3, -1e-3, 5e-4, 3e-5, -2e-5
        h["B_2_0"], h["B_1_1"], h["B_0_2"], h["B_0_3"], h["B_2_1"] = -1e-3, 8e-4, 2e-3, 4e-5, 1e-5
        h["AP_ORDER"] = h["BP_ORDER"] = 2
        h["AP_1_0"], h["AP_2_0"], h["AP_0_2"] = 1e-4, -2e-3, -5e-4
        h["BP_0_1"], h["BP_1_1"], h["BP_0_2"] = -1e-4, -8e-4, -2e-3
    elif kind == "tpv":
        h["CTYPE1"], h["CTYPE2"] = "RA---TPV", "DEC--TPV"
        h["PV1_0"], h["PV1_1"], h["PV1_2"], h["PV1_4"], h["PV1_5"] = 1e-5, 1.0, 0.0, 40.0, -25.0
        h["PV2_0"], h["PV2_1"], h["PV2_2"], h["PV2_4"], h["PV2_6"] = -1e-5, 1.0, 0.0, 30.0, 35.0
    return h


def quiet_wcs(header):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return WCS(header)


# ---------------------------------------------------------------------------- parse_input

class TestParseInput:
    def forms(self, tmp_path):
        data = galaxy()
        h = tan_header("cd")
        path = tmp_path / "in.fits"
        fits.PrimaryHDU(data, h).writeto(path)
        comp = fits.CompImageHDU(data, h, compression_type="GZIP_2", quantize_level=0.0)
        return data, {
            "path": str(path), "Path": path, "hdulist": fits.HDUList([fits.PrimaryHDU(data, h)]),
            "primary": fits.PrimaryHDU(data, h), "image": fits.ImageHDU(data, h), "compressed": comp,
            "array+header": (data, h), "array+wcs": (data, quiet_wcs(h)),
            "nddata": NDData(data, wcs=quiet_wcs(h)), "ccddata": CCDData(data, unit="adu", wcs=quiet_wcs(h)),
        }

    def test_every_form(self, tmp_path):
        data, forms = self.forms(tmp_path)
        for name, form in forms.items():
            array, header, wcs = sf.parse_input(form)
            np.testing.assert_array_equal(array, data, err_msg=name)
            assert wcs is not None and wcs.has_celestial, name
            expected = quiet_wcs(tan_header("cd")).pixel_to_world_values(3, 4)
            assert np.allclose(wcs.pixel_to_world_values(3, 4), expected), name

    def test_unknown_type_lists_the_accepted_forms(self):
        with pytest.raises(TypeError, match="HDUList.*NDData"):
            sf.parse_input(42)

    def test_several_image_hdus_need_hdu(self):
        hdul = fits.HDUList([fits.PrimaryHDU(galaxy()), fits.ImageHDU(galaxy(seed=1), name="ERR")])
        with pytest.raises(InputError, match=r"2 image HDUs: 0 \(PRIMARY.*1 \(ERR.*--hdu"):
            sf.parse_input(hdul)
        for hdu in (1, "1", "err", ("ERR", 1)):
            np.testing.assert_array_equal(sf.parse_input(hdul, hdu=hdu)[0], galaxy(seed=1))
        with pytest.raises(InputError, match="no HDU 'SCI'"):
            sf.parse_input(hdul, hdu="SCI")

    def test_one_dimensional_data_is_refused(self):
        with pytest.raises(InputError, match="at least 2 axes"):
            sf.parse_input(fits.ImageHDU(np.zeros(10, np.float32)))


# ---------------------------------------------------------------------------- WCS

@pytest.mark.parametrize("kind", ["pc", "cd", "sip", "tpv"])
@pytest.mark.parametrize("scale", [2, 4])
def test_wcs_round_trip(kind, scale):
    """Random output pixels map to the sky where the same physical point was, to 0.01 output px."""
    old = quiet_wcs(tan_header(kind))
    new = quiet_wcs(sf.rescale_header(tan_header(kind), scale))
    rng = np.random.default_rng(0)
    p_new = rng.uniform(-0.5, 40 * scale - 0.5, size=(200, 2))  # 0-based output pixels
    p_old = (p_new + 0.5) / scale - 0.5
    sky_new = new.all_pix2world(p_new, 0)
    sky_old = old.all_pix2world(p_old, 0)
    back = new.all_world2pix(sky_old, 0, tolerance=1e-10)  # the old sky position on the new grid
    assert np.abs(back - p_new).max() < 0.01
    pix_deg = np.sqrt(abs(np.linalg.det(new.pixel_scale_matrix)))
    sep = np.hypot((sky_new[:, 0] - sky_old[:, 0]) * np.cos(np.deg2rad(sky_old[:, 1])), sky_new[:, 1] - sky_old[:, 1])
    assert (sep / pix_deg).max() < 0.01
    # the half-pixel offset matters: scaling CRPIX naively is off by (s - 1) / 2 output pixels
    naive = tan_header(kind)
    rescaled = sf.rescale_header(naive, scale)
    naive["CRPIX1"], naive["CRPIX2"] = naive["CRPIX1"] * scale, naive["CRPIX2"] * scale
    for k in rescaled:
        if k.startswith(("CD", "CDELT", "A_", "B_", "AP_", "BP_")):
            naive[k] = rescaled[k]
    wrong = quiet_wcs(naive).all_world2pix(sky_old, 0)
    assert np.abs(wrong - p_new).max() > 0.4


def test_sip_inverse_rescaled():
    old = quiet_wcs(tan_header("sip"))
    new = quiet_wcs(sf.rescale_header(tan_header("sip"), 4))
    foc_old = np.array([[3.0, 7.0], [-15.0, 2.0], [20.0, -10.0]])  # focal-plane offsets from CRPIX
    pix_old = old.sip.foc2pix(foc_old, 1)  # absolute 1-based pixels
    pix_new = new.sip.foc2pix(foc_old * 4, 1)
    np.testing.assert_allclose(pix_new, (pix_old - 0.5) * 4 + 0.5, atol=1e-9)


def test_rescale_header_other_cards():
    h = tan_header("cd")
    for k, v in [("CRPIX1A", 10.0), ("CRPIX2A", 5.0), ("CDELT1A", 0.5), ("CDELT2A", 0.5), ("CTYPE1A", "X"),
                 ("CTYPE2A", "Y"), ("LTV1", -10.0), ("LTM1_1", 1.0), ("LTM2_2", 1.0), ("DATASEC", "[3:20,1:16]"),
                 ("PIXSCALE", 0.06), ("NAXIS1", 40), ("NAXIS2", 32), ("CRPIX3", 1.0), ("OBSERVER", "me")]:
        h[k] = v
    r = sf.rescale_header(h, 2)
    assert (r["CRPIX1"], r["CRPIX2"]) == ((17.3 - 0.5) * 2 + 0.5, (12.8 - 0.5) * 2 + 0.5)
    assert (r["CRPIX1A"], r["CDELT1A"]) == (19.5, 0.25)
    assert (r["LTV1"], r["LTV2"], r["LTM1_1"]) == (-20.5, -0.5, 2.0)  # image = LTM * physical + LTV
    assert (r["DATASEC"], r["PIXSCALE"], r["NAXIS1"]) == ("[5:40,1:32]", 0.03, 80)
    assert r["CRPIX3"] == 1.0 and r["OBSERVER"] == "me" and r["CD1_1"] == -0.95e-4


def test_cube_wcs_keeps_the_third_axis():
    h = tan_header("pc")
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"], h["CUNIT3"] = "FREQ", 1.4e9, 1e6, 1.0, "Hz"
    r = sf.rescale_header(h, 2)
    assert (r["CDELT3"], r["CRPIX3"], r["CDELT1"]) == (1e6, 1.0, -1e-4)
    new, old = quiet_wcs(r), quiet_wcs(h)
    np.testing.assert_allclose(new.pixel_to_world_values(3.5, 5.5, 2), old.pixel_to_world_values(1.5, 2.5, 2))


def test_lookup_table_distortion_is_removed_with_a_warning():
    h = tan_header("cd")
    h["CPDIS1"] = "Lookup"
    h["DP1"] = "EXTVER: 1"
    h["D2IMDIS1"] = "Lookup"
    with pytest.warns(UserWarning, match="lookup-table distortion.*CPDIS1"):
        r = sf.rescale_header(h, 2)
    assert not any(k.startswith(("CPDIS", "DP1", "D2IM")) for k in r)


# ---------------------------------------------------------------------------- pixels: flux, NaNs, header

def flux_error(out, data, flux):
    s2 = SCALE**2
    total = np.nansum(out, dtype=np.float64) / (1 if flux == "conserve" else s2)
    return abs(total - np.nansum(data, dtype=np.float64)) / np.nansum(np.abs(data), dtype=np.float64)


@pytest.mark.parametrize("flux", ["conserve", "surface-brightness"])
def test_upscale_hdu_flux_header_and_dtype(up, flux):
    data = galaxy(sky=-0.3)  # sky-subtracted look: negative sky
    h = tan_header("sip")
    h["BUNIT"], h["OBSERVER"] = "electron/s", "Hubble"
    h.add_comment("a comment card")
    hdu = fits.ImageHDU(data, h, name="SCI")
    out = up.upscale_hdu(hdu, flux=flux)  # Upscaler delegates to srgan.fits.upscale_hdu
    assert isinstance(out, fits.ImageHDU) and out.data.dtype == np.float32 and out.header["BITPIX"] == -32
    assert out.data.shape == (64, 80) and (out.header["NAXIS1"], out.header["NAXIS2"]) == (80, 64)
    assert flux_error(out.data, data, flux) < 0.005
    level = out.data.mean() * (SCALE**2 if flux == "conserve" else 1)
    assert level == pytest.approx(data.mean(), rel=1e-3)  # per-pixel scale follows the mode
    hh = out.header
    assert (hh["BUNIT"], hh["OBSERVER"], hh["EXTNAME"], hh["SRFLUX"], hh["SRSCALE"]) == (
        "electron/s", "Hubble", "SCI", flux, 2)
    assert "a comment card" in str(hh["COMMENT"])
    history = " ".join(str(c) for c in hh["HISTORY"])
    assert srgan.__version__ in history and up.info.name in history and up.info.sha256 in history
    assert hh["SRMODSHA"] == up.info.sha256 and f"flux {flux}" in history
    assert quiet_wcs(hh).sip is not None and hh["A_2_0"] == pytest.approx(2e-3 / 2)


def test_nan_positions_preserved_and_no_leak(up):
    up = Interpolating(up.info)  # the fill is under test, not a random tiny network
    data = galaxy(48, 48, noise=1.0)
    y, x = np.mgrid[:48, :48]
    data += 5000 * np.exp(-((x - 20) ** 2 + (y - 24) ** 2) / 4.0)  # a bright star next to the hole
    holed = data.copy()
    holed[20:28, 24:30] = np.nan
    holed[0, 0] = np.nan
    clean = sf.upscale_hdu(up, fits.ImageHDU(data)).data
    out = sf.upscale_hdu(up, fits.ImageHDU(holed)).data
    footprint = np.repeat(np.repeat(np.isnan(holed), 2, 0), 2, 1)
    np.testing.assert_array_equal(np.isnan(out), footprint)
    ring = np.zeros_like(footprint)
    ring[32:64, 40:68] = True
    ring &= ~footprint
    # around the hole the output stays what it would be without the hole (the fill is sane)
    dev = np.abs(out[ring] - clean[ring])
    assert dev.max() < 0.05 * clean.max()
    assert out[~footprint].max() <= 1.05 * clean.max() and np.isfinite(out[~footprint]).all()
    # zero-filling would have been visible: a sanity check that the test can fail
    zeroed = np.where(np.isnan(holed), 0, holed).astype(np.float32)
    bad = sf.upscale_hdu(up, fits.ImageHDU(zeroed)).data
    assert np.abs(bad[ring] - clean[ring]).max() > dev.max()


def test_all_nan_plane_is_an_input_error(up):
    with pytest.raises(InputError, match="no finite pixels"):
        sf.upscale_hdu(up, fits.ImageHDU(np.full((8, 8), np.nan, np.float32)))


def test_photo_model_is_refused(tmp_path):
    photo = tiny_upscaler(tmp_path / "photo.safetensors", normalization=Normalization("unit"))
    with pytest.raises(ModelError, match="asinh.*--model"):
        sf.upscale_hdu(photo, fits.ImageHDU(galaxy()))


def test_three_channel_astro_model_replicates_and_averages(tmp_path):
    rgb = tiny_upscaler(tmp_path / "rgb.safetensors", channels=3)
    data = galaxy()
    out = sf.upscale_hdu(rgb, fits.ImageHDU(data)).data
    assert out.shape == (64, 80) and flux_error(out, data, "conserve") < 0.005


# ---------------------------------------------------------------------------- consistency and residual

def observed(hr, fwhm_in, sigma, seed=0):
    """LR = A(HR) + noise with a Gaussian PSF of ``fwhm_in`` input pixels."""
    k = psf_kernel("gaussian", fwhm_in * SCALE)
    lr = astro_forward(torch.from_numpy(hr)[None, None], k, SCALE)[0, 0].numpy()
    return (lr + sigma * np.random.default_rng(seed).standard_normal(lr.shape)).astype(np.float32)


def test_residual_has_unit_scatter_where_the_model_agrees(up):
    hr = galaxy(64, 80, noise=0.0) + 10.0
    lr = observed(hr, 1.5, 0.5)
    oracle = Oracle(hr, up.info)
    # the oracle's output is the deconvolved truth: kept as it is by the global correction
    result = sf.upscale_hdu(oracle, fits.ImageHDU(lr), options=sf.FitsOptions(psf=1.5, residual=True, correction="global"))
    assert isinstance(result, fits.HDUList) and result[1].name == "SRRESID"
    res = result[1].data
    assert res.shape == lr.shape and res.dtype == np.float32
    assert 0.8 < np.std(res) < 1.2 and abs(np.mean(res)) < 0.2
    assert result[1].header["SRNOISE"] == pytest.approx(0.5, rel=0.2)


def test_consistency_reaches_the_noise_level(up, tmp_path):
    hr = galaxy(64, 80, noise=0.0) + 10.0
    lr = observed(hr, 1.5, 0.5)
    src = tmp_path / "lr.fits"
    fits.PrimaryHDU(lr).writeto(src)
    rms = {}
    for on in (False, True):
        dst = tmp_path / f"sr_{on}.fits"
        sf.upscale_fits(up, src, dst, consistency=on, psf=1.5, residual=True)
        with fits.open(dst) as f:
            rms[on] = float(np.sqrt(np.mean(f["SRRESID"].data ** 2)))
            assert flux_error(f[0].data, lr, "conserve") < 0.005
            if on:
                assert "back-projection" in "".join(str(c) for c in f[0].header["HISTORY"])
    assert rms[False] > 1.5 and rms[True] <= 1.0


# ---------------------------------------------------------------------------- files

def read(path, i=0):
    with fits.open(path) as f:
        return f[i].data.copy(), f[i].header.copy()


def test_streamed_file_equals_in_memory_hdu(up, tmp_path):
    data = galaxy()
    src, dst = tmp_path / "in.fits", tmp_path / "out.fits"
    fits.PrimaryHDU(data, tan_header("tpv")).writeto(src)
    assert sf.upscale_fits(up, src, dst) == dst
    out, header = read(dst)
    mem = sf.upscale_hdu(up, fits.PrimaryHDU(data, tan_header("tpv")))
    np.testing.assert_array_equal(out, mem.data)
    assert header["PV1_4"] == 40.0 and header["CRPIX1"] == mem.header["CRPIX1"]
    assert header["SIMPLE"] and header["BITPIX"] == -32


def test_integer_bscale_bzero_and_blank(up, tmp_path):
    data = galaxy(sky=100.0) * 3
    hdu = fits.PrimaryHDU(data.copy())
    hdu.scale("int16", bscale=0.05, bzero=600.0)
    hdu.header["BLANK"] = -32768
    hdu.data[3, 4] = -32768
    src, dst = tmp_path / "int.fits", tmp_path / "out.fits"
    hdu.writeto(src)
    with fits.open(src) as f:
        assert f[0].header["BITPIX"] == 16
        scaled = f[0].data.astype(np.float64)
    assert np.isnan(scaled[3, 4])
    sf.upscale_fits(up, src, dst)
    out, header = read(dst)
    assert out.dtype.kind == "f" and header["BITPIX"] == -32
    assert not any(k in header for k in ("BSCALE", "BZERO", "BLANK"))
    assert np.isnan(out[6:8, 8:10]).all() and np.isfinite(np.delete(out.ravel(), [6 * 80 + 8])).sum() == out.size - 4
    assert flux_error(out, scaled, "conserve") < 0.005


def test_tile_compressed_round_trip(up, tmp_path):
    data = galaxy()
    src, dst = tmp_path / "in.fits.fz", tmp_path / "out.fits.fz"
    comp = fits.CompImageHDU(data, tan_header("cd"), compression_type="RICE_1")
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(src)
    sf.upscale_fits(up, src, dst)
    with fits.open(src) as fin, fits.open(dst) as fout:
        assert isinstance(fout[1], fits.CompImageHDU) and fout[1].compression_type == "GZIP_2"
        expected = sf.upscale_hdu(up, fin[1]).data
        np.testing.assert_array_equal(fout[1].data, expected)  # lossless: no quantisation
        assert fout[1].data.dtype == np.float32 and fout[1].header["SRFLUX"] == "conserve"


def test_gzipped_in_and_out(up, tmp_path):
    data = galaxy()
    src, plain, dst = tmp_path / "in.fits.gz", tmp_path / "plain.fits", tmp_path / "out.fits.gz"
    fits.PrimaryHDU(data).writeto(src)
    assert src.read_bytes()[:2] == b"\x1f\x8b"
    sf.upscale_fits(up, src, dst)
    sf.upscale_fits(up, src, plain)
    assert dst.read_bytes()[:2] == b"\x1f\x8b" and plain.read_bytes()[:6] == b"SIMPLE"
    with gzip.open(dst) as f:
        assert f.read(6) == b"SIMPLE"
    np.testing.assert_array_equal(read(dst)[0], read(plain)[0])


def multi_extension(path):
    """Two plain images (no SCI: not a pipeline product, see test_fits_products.py) and a table."""
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="ID", format="J", array=np.arange(5)),
         fits.Column(name="FLUX", format="E", array=np.ones(5))],
        name="CAT")
    table.header["TABCARD"] = ("kept", "a card of the table")
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(galaxy(), tan_header("pc"), name="IMG1"), table,
                  fits.ImageHDU(galaxy(seed=2, sky=5.0), name="IMG2")]).writeto(path)


def test_multi_extension_with_table(up, tmp_path):
    src, dst = tmp_path / "mef.fits", tmp_path / "out.fits"
    multi_extension(src)
    sf.upscale_fits(up, src, dst)
    with fits.open(src) as fin, fits.open(dst) as fout:
        assert [h.name for h in fout] == ["PRIMARY", "IMG1", "CAT", "IMG2"]
        assert fout[0].data is None and fout[1].data.shape == (64, 80) and fout[3].data.shape == (64, 80)
        np.testing.assert_array_equal(fout["CAT"].data, fin["CAT"].data)
        assert fout["CAT"].header.tostring() == fin["CAT"].header.tostring()
    # only the chosen HDU: the other image is copied unchanged too
    sf.upscale_fits(up, src, dst, hdu="IMG1")
    with fits.open(src) as fin, fits.open(dst) as fout:
        assert fout["IMG1"].data.shape == (64, 80)
        np.testing.assert_array_equal(fout["IMG2"].data, fin["IMG2"].data)


def test_residual_hdus_follow_their_images(up, tmp_path):
    src, dst = tmp_path / "mef.fits", tmp_path / "out.fits"
    multi_extension(src)
    sf.upscale_fits(up, src, dst, residual=True)
    with fits.open(dst) as f:
        assert [(h.name, h.ver) for h in f] == [("PRIMARY", 1), ("IMG1", 1), ("SRRESID", 1), ("CAT", 1),
                                               ("IMG2", 1), ("SRRESID", 2)]
        assert f[2].data.shape == (32, 40) and quiet_wcs(f[2].header).has_celestial


def test_cube_plane_by_plane(up, tmp_path):
    cube = np.stack([galaxy(seed=i, sky=10.0 * i) for i in range(3)])
    h = tan_header("pc")
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"] = "WAVE", 1e-6, 1e-8, 1.0
    src, dst = tmp_path / "cube.fits", tmp_path / "out.fits"
    fits.PrimaryHDU(cube, h).writeto(src)
    sf.upscale_fits(up, src, dst, flux="surface-brightness")
    out, header = read(dst)
    assert out.shape == (3, 64, 80) and header["NAXIS3"] == 3 and header["CDELT3"] == 1e-8
    for i in range(3):
        assert flux_error(out[i], cube[i], "surface-brightness") < 0.005


def test_nddata_in_and_out(up):
    data = galaxy(sky=2.0)
    mask = np.zeros(data.shape, bool)
    mask[5, 6] = True
    ccd = CCDData(data, unit="electron/s", wcs=quiet_wcs(tan_header("cd")), mask=mask,
                  uncertainty=StdDevUncertainty(np.full(data.shape, 2.0)), meta={"OBSERVER": "me"})
    out = sf.upscale_nddata(up, ccd)
    assert type(out) is CCDData and out.unit == ccd.unit and out.data.shape == (64, 80)
    assert out.mask[10:12, 12:14].all() and out.mask.sum() == 4
    assert isinstance(out.uncertainty, StdDevUncertainty) and np.allclose(out.uncertainty.array, 0.5)
    assert out.wcs.wcs.crpix[0] == pytest.approx((17.3 - 0.5) * 2 + 0.5)
    assert flux_error(out.data, data, "conserve") < 0.005 and out.meta["OBSERVER"] == "me"
    nd = NDData(data, uncertainty=UnknownUncertainty(np.ones(data.shape)))
    with pytest.warns(UserWarning, match="UnknownUncertainty.*dropped"):
        plain, resid = sf.upscale_nddata(up, nd, flux="surface-brightness", residual=True)
    assert type(plain) is NDData and plain.uncertainty is None and plain.wcs is None
    assert resid.data.shape == data.shape


# ---------------------------------------------------------------------------- bad input: clear error, nothing written

def bad_inputs(tmp_path):
    notfits = tmp_path / "notfits.fits"
    notfits.write_text("this is not a FITS file\n" * 200)
    table_only = tmp_path / "table.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="A", format="E", array=np.ones(3))])]).writeto(table_only)
    all_nan = tmp_path / "nan.fits"
    fits.PrimaryHDU(np.full((16, 16), np.nan, np.float32)).writeto(all_nan)
    one_d = tmp_path / "oned.fits"
    fits.PrimaryHDU(np.arange(50, dtype=np.float32)).writeto(one_d)
    full = tmp_path / "full.fits"
    fits.PrimaryHDU(galaxy(64, 64)).writeto(full)
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(full.read_bytes()[:2880 + 4000])
    return {notfits: "not a readable FITS", table_only: "no image HDU", all_nan: "no finite pixels",
            one_d: "no image HDU", truncated: "truncated"}


def test_bad_inputs_raise_and_write_nothing(up, tmp_path):
    for src, message in bad_inputs(tmp_path).items():
        out_dir = tmp_path / f"out_{src.stem}"
        out_dir.mkdir()
        with pytest.raises(SrganError, match=message):
            sf.upscale_fits(up, src, out_dir / "out.fits")
        assert list(out_dir.iterdir()) == [], src.name
    with pytest.raises(InputError, match="not found"):
        sf.upscale_fits(up, tmp_path / "missing.fits", tmp_path / "o.fits")
    with pytest.raises(InputError, match="1-D data"):
        sf.upscale_fits(up, tmp_path / "oned.fits", tmp_path / "o.fits", hdu=0)


def test_never_overwrites_the_input(up, tmp_path):
    src = tmp_path / "in.fits"
    fits.PrimaryHDU(galaxy()).writeto(src)
    before = src.read_bytes()
    for dst in (src, tmp_path / "." / "in.fits"):
        with pytest.raises(ConfigError, match="is the input"):
            sf.upscale_fits(up, src, dst)
    assert src.read_bytes() == before


def test_bad_flux_mode(up):
    with pytest.raises(ConfigError, match="--flux"):
        sf.upscale_hdu(up, fits.ImageHDU(galaxy()), flux="total")


# ---------------------------------------------------------------------------- FitsOptions

class TestFitsOptions:
    @pytest.mark.parametrize("field,value,flag", [
        ("flux", "total", "(--flux)"),
        ("hdu", 1.5, "(--hdu N or NAME)"),
        ("hdu", ("SCI",), "(--hdu N or NAME)"),
        ("hdu", True, "(--hdu N or NAME)"),
        ("consistency", "yes", "(--consistency/--no-consistency)"),
        ("residual", 1, "(--residual)"),
        ("psf", 0, "(--psf FWHM"),
        ("psf", -2.5, "(--psf FWHM"),
        ("psf", float("nan"), "(--psf FWHM"),
        ("psf", True, "(--psf)"),
    ])
    def test_a_bad_field_is_a_config_error_naming_the_option(self, field, value, flag):
        with pytest.raises(ConfigError, match=re.escape(flag)) as e:
            sf.FitsOptions(**{field: value})
        assert field in str(e.value).lower() and "\n" not in str(e.value)

    def test_accepted_values_and_frozen(self):
        for ok in (dict(hdu=0), dict(hdu="3"), dict(hdu="SCI"), dict(hdu=("SCI", 2)), dict(psf=2.5),
                   dict(psf="psf.fits"), dict(psf=np.ones((3, 3))), dict(consistency=True, residual=True)):
            sf.FitsOptions(**ok)
        o = sf.FitsOptions(flux="surface-brightness")
        with pytest.raises(dataclasses.FrozenInstanceError):
            o.flux = "conserve"
        assert sf.FitsOptions().is_default() and not o.is_default()
        assert not sf.FitsOptions(psf=np.ones((3, 3))).is_default()

    def test_options_equal_the_keywords_and_not_both(self, up):
        hdu = fits.ImageHDU(galaxy(), tan_header("cd"))
        by_keywords = sf.upscale_hdu(up, hdu, flux="surface-brightness", residual=True)
        by_options = sf.upscale_hdu(up, hdu, options=sf.FitsOptions(flux="surface-brightness", residual=True))
        assert by_options[0].header["SRFLUX"] == "surface-brightness" and by_options[1].name == "SRRESID"
        for a, b in zip(by_keywords, by_options):
            np.testing.assert_array_equal(a.data, b.data)
        with pytest.raises(TypeError, match="not both"):
            sf.upscale_hdu(up, hdu, residual=True, options=sf.FitsOptions())
        with pytest.raises(TypeError, match="FitsOptions"):
            sf.upscale_nddata(up, NDData(galaxy()), options={"flux": "conserve"})  # no dicts of options

    def test_upscale_fits_takes_the_hdu_from_the_options(self, up, tmp_path):
        src, dst = tmp_path / "mef.fits", tmp_path / "out.fits"
        multi_extension(src)
        sf.upscale_fits(up, src, dst, options=sf.FitsOptions(hdu="IMG2", flux="surface-brightness"))
        with fits.open(src) as fin, fits.open(dst) as fout:
            np.testing.assert_array_equal(fout["IMG1"].data, fin["IMG1"].data)  # not chosen: copied
            assert fout["IMG2"].data.shape == (64, 80) and fout["IMG2"].header["SRFLUX"] == "surface-brightness"
