"""The notebooks in notebooks/ run headless (nbclient) with small settings, and are stored clean.

Each notebook is read from the repository, its ``parameters`` cell replaced by small settings,
and executed in memory with tmp_path as the working directory: every file it writes lands
there and the stored notebook is never rewritten. Both tests assert what a broken model would
fail: the embedded galaxy-x4 must agree with its input (SRRESID), the training run must learn.
"""

import json
import re
import sys
from pathlib import Path

import pytest
from astropy.io import fits

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SAMPLE = ROOT / "data" / "galaxies" / "ceers_f200w_29185.fits"
CELL_TIMEOUT = 120  # seconds per cell


def _read(name):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is needed to read the notebooks")
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def _parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    return cells[0]


@pytest.fixture(scope="module")
def kernel_spec_manager(tmp_path_factory):
    """A kernelspec running *this* interpreter (where srgan is installed), whatever kernels are registered."""
    pytest.importorskip("nbclient", reason="nbclient is needed to execute the notebooks (pip install nbclient)")
    pytest.importorskip("ipykernel", reason="ipykernel is needed to execute the notebooks (pip install ipykernel)")
    from jupyter_client.kernelspec import KernelSpecManager

    spec = tmp_path_factory.mktemp("kernels") / "srgan-test"
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "srgan tests", "language": "python"}))
    return KernelSpecManager(kernel_dirs=[str(spec.parent)])


def _execute(name, params: str, cwd: Path, ksm):
    """Run notebook ``name`` with its parameters cell replaced by ``params``; returns the executed copy."""
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    nb = _read(name)
    _parameters_cell(nb).source = params
    km = KernelManager(kernel_name="srgan-test", kernel_spec_manager=ksm)
    NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def _stdout(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.outputs if o.output_type == "stream" and o.name == "stdout")


def _figures(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells if c.cell_type == "code" for o in c.outputs)


@pytest.mark.parametrize("name, names", [
    ("upscale_galaxy.ipynb", ("MODEL", "INPUT", "FLUX", "CENTRE", "OUTPUT")),
    ("train_on_galaxies.ipynb", ("N_GALAXIES", "SIZE", "STEPS", "BLOCKS", "CHANNELS", "BATCH_SIZE",
                                 "PATCH_SIZE", "WORK", "SEED")),
])
def test_notebook_is_stored_clean_with_a_parameters_cell(name, names):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is needed to read the notebooks")
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.outputs == [] and c.execution_count is None for c in code), f"{name}: clear the outputs"
    params = _parameters_cell(nb)
    assert params is code[0], "the parameters cell is the first code cell"
    assigned = re.findall(r"^([A-Z_]+) = ", params.source, flags=re.M)
    assert tuple(assigned) == names  # the tests below replace exactly these


@pytest.mark.slow
def test_upscale_galaxy_notebook(tmp_path, kernel_spec_manager):
    if not SAMPLE.is_file():
        pytest.skip(f"sample galaxy {SAMPLE} missing")
    params = (f"MODEL = 'galaxy-x4'\nINPUT = {str(SAMPLE)!r}\nFLUX = 'conserve'\nCENTRE = None\n"
              "OUTPUT = 'galaxy_x4.fits'\n")
    nb = _execute("upscale_galaxy.ipynb", params, tmp_path, kernel_spec_manager)

    text = _stdout(nb)
    assert _figures(nb) == 3  # before/after, residual map, radial profile
    # The network alone (before any consistency correction) re-blurred and binned must match the
    # input within its noise: galaxy-x4 gives median -0.003, scatter 0.15 sigma, 0.8% beyond 3
    # sigma; with zeroed weights the output is flat: median +2.7, scatter 0.9, 45%.
    median, scatter, beyond = map(float, re.search(
        r"SRRESID, network alone: median ([-+0-9.]+), robust scatter ([0-9.]+) sigma, ([0-9.]+)% of pixels beyond",
        text).groups())
    assert abs(median) < 0.3 and scatter < 0.5 and beyond < 3, (median, scatter, beyond)
    flux = float(re.search(r"relative difference ([-+0-9.e]+)", text).group(1))
    assert abs(flux) < 5e-3  # total flux within 0.5%
    separation = float(re.search(r"separation ([0-9.e+-]+) mas", text).group(1))
    assert separation < 1.0  # same sky position through both WCSs, to < 1 milliarcsec
    assert re.search(r"CCDData \(32, 32\) .*-> CCDData \(128, 128\)", text)
    with fits.open(tmp_path / "galaxy_x4.fits") as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "SRRESID"]
        assert hdul[0].data.shape == (400, 400) and hdul["SRRESID"].data.shape == (100, 100)
        assert hdul[0].header["SRFLUX"] == "conserve"


@pytest.mark.slow
def test_train_on_galaxies_notebook(tmp_path, kernel_spec_manager):
    params = ("N_GALAXIES = 4\nSIZE = 32\nSTEPS = 30\nBLOCKS = 1\nCHANNELS = 4\nBATCH_SIZE = 2\n"
              "PATCH_SIZE = 16\nWORK = 'work'\nSEED = 0\n")
    nb = _execute("train_on_galaxies.ipynb", params, tmp_path, kernel_spec_manager)

    text = _stdout(nb)
    assert _figures(nb) == 3  # galaxies, learning curve, held-out comparison
    assert len(list((tmp_path / "work" / "galaxies").glob("galaxy_*.fits"))) == 4
    (run,) = (tmp_path / "work").glob("run-*")
    assert (run / "model.safetensors").is_file()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 30
    # The run learns: validation PSNR every 5 steps, 10.1 -> 12.3 dB over 30 steps (seed 0); a model
    # that does not train (no optimiser step, zero weights, a forward that ignores its input) stays flat.
    val = [r["val_psnr"] for r in records if "val_psnr" in r]
    assert len(val) == 6 and val[-1] > val[0] + 1.0, val
    last = re.search(r"validation PSNR at step 30: model ([0-9.]+) dB", text)
    assert last and float(last.group(1)) == pytest.approx(val[-1], abs=0.01)
    assert "LR (8, 8) -> SR (32, 32)" in text
    assert re.search(r"RMS error vs the truth \(HR noise units\): bicubic [0-9.]+, model [0-9.]+", text)
