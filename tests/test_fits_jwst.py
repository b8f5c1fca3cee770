"""A JWST product written and read by STScI's own datamodels library (stdatamodels), not by srgan.

stdatamodels is what the JWST pipeline writes ``_cal``/``_i2d`` files with: its layout (DQ as
int32 + BZERO, i.e. uint32; the ASDF extension holding the metadata tree and the gwcs) is the
real one. srgan upscales such a file with no options, and stdatamodels then opens the output:
every array on the x4 grid, flags bit-exact, no stale gwcs, and the rescaled FITS WCS agrees
with the input's gwcs on the sky.
"""

import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from click.testing import CliRunner
from helpers import tiny_upscaler

from srgan.cli import main

dm = pytest.importorskip("stdatamodels.jwst.datamodels",
                         reason="stdatamodels (the JWST datamodels) is in the test extras: pip install srgan[test]")

S = 4
H, W = 28, 24


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny-x4.safetensors"
    tiny_upscaler(path, scale=S)
    return path


def imaging_gwcs():
    """A TAN imaging gwcs, as assign_wcs builds one: detector pixels -> ICRS."""
    from astropy import coordinates as coord
    from astropy import units as u
    from astropy.modeling import models
    from gwcs import coordinate_frames as cf
    from gwcs import wcs as gw

    pixel = models.Shift(-(W / 2 - 0.5)) & models.Shift(-(H / 2 - 0.5))
    rotate = models.AffineTransformation2D(np.array([[-1.7e-5, 2e-6], [1.5e-6, 1.8e-5]]))
    sky = models.Pix2Sky_TAN() | models.RotateNative2Celestial(53.1, -27.8, 180)
    detector = cf.Frame2D(name="detector", axes_order=(0, 1), unit=(u.pix, u.pix))
    world = cf.CelestialFrame(reference_frame=coord.ICRS(), name="world", unit=(u.deg, u.deg))
    return gw.WCS([(detector, pixel | rotate | sky), (world, None)])


def jwst_cal(path):
    rng = np.random.default_rng(7)
    y, x = np.mgrid[:H, :W]
    sci = (30 * np.exp(-((x - 11) ** 2 + (y - 13) ** 2) / 10) + rng.normal(2, 0.5, (H, W))).astype(np.float32)
    dq = np.zeros((H, W), np.uint32)
    dq[4, 6] = 1 | 2**31  # DO_NOT_USE with the top bit: survives int32 + BZERO storage
    dq[20, 3] = 4  # JUMP_DET: informational, a good pixel
    sci[4, 6] = 1e4
    m = dm.ImageModel(data=sci, err=np.full((H, W), 0.5, np.float32), dq=dq,
                      var_poisson=np.full((H, W), 0.2, np.float32), var_rnoise=np.full((H, W), 0.05, np.float32),
                      area=np.ones((H, W), np.float32))
    m.meta.telescope = "JWST"
    m.meta.instrument.name = "NIRCAM"
    m.meta.bunit_data = m.meta.bunit_err = "MJy/sr"
    m.meta.wcs = imaging_gwcs()
    # the FITS approximation the pipeline writes next to the gwcs (here exact: a TAN)
    for k, v in dict(ctype1="RA---TAN", ctype2="DEC--TAN", crpix1=W / 2 + 0.5, crpix2=H / 2 + 0.5, crval1=53.1,
                     crval2=-27.8, cdelt1=1.0, cdelt2=1.0, pc1_1=-1.7e-5, pc1_2=2e-6, pc2_1=1.5e-6,
                     pc2_2=1.8e-5, cunit1="deg", cunit2="deg").items():
        setattr(m.meta.wcsinfo, k, v)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m.save(path)
    return m


def test_jwst_datamodel_reads_the_upscaled_product(model_path, tmp_path, one_thread):
    src, dst = tmp_path / "jw01345001001_01101_00001_nrcb1_cal.fits", tmp_path / "x4_cal.fits"
    m_in = jwst_cal(src)
    with fits.open(src) as f:
        assert f["DQ"].header["BZERO"] == 2**31 and "ASDF" in f  # the real writer's layout
    result = CliRunner().invoke(main, ["upscale", str(src), str(dst), "--model", str(model_path)])
    assert result.exit_code == 0, result.output

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = dm.open(dst)
    assert type(m).__name__ == "ImageModel"
    for name in ("data", "err", "dq", "var_poisson", "var_rnoise", "area"):
        assert getattr(m, name).shape == (H * S, W * S), name
    nearest = np.repeat(np.repeat(m_in.dq, S, 0), S, 1)
    assert m.dq.dtype == np.uint32
    np.testing.assert_array_equal(m.dq, nearest)  # bit 31 included
    # MJy/sr: surface brightness, uncertainties kept per pixel
    np.testing.assert_allclose(m.err, 0.5)
    np.testing.assert_allclose(m.var_poisson, 0.2)
    # DO_NOT_USE: flat at the input value; JUMP_DET: super-resolved
    np.testing.assert_allclose(m.data[4 * S:5 * S, 6 * S:7 * S], 1e4, rtol=1e-6)
    assert np.ptp(m.data[20 * S:21 * S, 3 * S:4 * S]) > 0
    # the input-grid gwcs is not offered for the output; the tree is kept under another name
    assert m.meta.wcs is None
    with fits.open(src) as fin, fits.open(dst) as fout:
        assert "ASDF" not in fout
        assert fout["ASDF_IN"].data.tobytes() == fin["ASDF"].data.tobytes()
        out_wcs = WCS(fout["SCI"].header)
    # the output's FITS WCS puts each output pixel where the input's gwcs puts its parent
    xi, yi = np.array([0.0, 6.3, 23.0]), np.array([0.0, 13.7, 27.0])
    ra, dec = m_in.meta.wcs(xi, yi)
    ra2, dec2 = out_wcs.pixel_to_world_values((xi + 0.5) * S - 0.5, (yi + 0.5) * S - 0.5)
    np.testing.assert_allclose(ra2, ra, rtol=0, atol=1e-9)
    np.testing.assert_allclose(dec2, dec, rtol=0, atol=1e-9)
