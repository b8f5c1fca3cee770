"""`srgan upscale` end to end with a tiny model file: exit codes and exact error lines."""

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from srgan import checkpoint
from srgan.cli import main


@pytest.fixture(scope="module")
def model_file(tmp_path_factory, make_model_file):
    return str(make_model_file(tmp_path_factory.mktemp("model") / "tiny.safetensors", scale=2, channels=4, blocks=1))


def photo(path, size=(6, 5), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(path)


def upscale(*args):
    return CliRunner().invoke(main, ["upscale", *map(str, args)])


def test_help_documents_units_defaults_and_an_example():
    result = upscale("--help")
    assert result.exit_code == 0
    for text in ("Example", "LR (input) pixels", "--max-pixels", "--skip-existing", "--flux", "[default: keep]"):
        assert text in result.output, text


def test_folder_with_bad_files_processes_the_rest_and_exits_1(tmp_path, model_file):
    src = tmp_path / "in"
    photo(src / "a.png")
    photo(src / "nested" / "deep" / "b.jpg", mode="L")
    (src / "nested" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    (src / "fake.jpg").write_text("not a photo")
    result = upscale(src, tmp_path / "out", "--model", model_file)
    assert result.exit_code == 1
    out = tmp_path / "out"
    assert Image.open(out / "a.png").size == (12, 10)
    assert Image.open(out / "nested" / "deep" / "b.jpg").mode == "L"
    assert not (out / "fake.jpg").exists() and not (out / "nested" / "corrupt.png").exists()
    lines = result.output.splitlines()
    assert sum(line.startswith(f"Error: {src / 'fake.jpg'}: not an image") for line in lines) == 1
    assert sum(line.startswith(f"Error: {src / 'nested' / 'corrupt.png'}:") for line in lines) == 1
    assert "2 done, 0 skipped, 2 failed" in result.output
    assert "Error: 2 of 4 file(s) failed:" in result.output


def test_single_file_to_file_with_format_and_quality(tmp_path, model_file):
    photo(tmp_path / "a.png")
    result = upscale(tmp_path / "a.png", tmp_path / "b.jpg", "--model", model_file, "--quality", "80")
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "b.jpg").format == "JPEG"
    result = upscale(tmp_path / "a.png", tmp_path / "o", "--model", model_file, "--format", "webp", "--tile", "2")
    assert result.exit_code == 0 and Image.open(tmp_path / "o" / "a.webp").size == (12, 10)


def test_dry_run_lists_pairs_and_writes_nothing(tmp_path, model_file):
    photo(tmp_path / "in" / "a.png")
    photo(tmp_path / "in" / "s" / "b.png")
    result = upscale(tmp_path / "in", tmp_path / "out", "--dry-run", "--format", "tiff")
    assert result.exit_code == 0
    assert result.output.splitlines() == [f"{tmp_path / 'in' / 'a.png'} -> {tmp_path / 'out' / 'a.tif'}",
                                          f"{tmp_path / 'in' / 's' / 'b.png'} -> {tmp_path / 'out' / 's' / 'b.tif'}"]
    assert not (tmp_path / "out").exists()


def test_skip_existing_resume(tmp_path, model_file):
    for name in ("a", "b", "c"):
        photo(tmp_path / "in" / f"{name}.png")
    assert upscale(tmp_path / "in" / "a.png", tmp_path / "out", "--model", model_file).exit_code == 0
    (tmp_path / "out" / ".b.png.x1y2.tmp").write_bytes(b"partial")  # left by kill -9
    result = upscale(tmp_path / "in", tmp_path / "out", "--model", model_file, "--skip-existing")
    assert result.exit_code == 0 and "2 done, 1 skipped, 0 failed" in result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.png", "b.png", "c.png"]


@pytest.mark.parametrize("args,message", [
    (("{in}", "{in}"), "is INPUT itself"),
    (("{in}/a.png", "{in}"), "would overwrite the input"),
    (("{in}", "{tmp}/file.txt/out"), "is a file"),
    (("{in}/a.png", "{tmp}/o.png", "--format", "jpg"), "--format jpg was given"),
])
def test_refusals_are_one_error_line_before_any_work(tmp_path, model_file, args, message):
    photo(tmp_path / "in" / "a.png")
    (tmp_path / "file.txt").write_text("x")
    argv = [a.format(**{"in": tmp_path / "in", "tmp": tmp_path}) for a in args]
    result = upscale(*argv, "--model", model_file)
    assert result.exit_code == 1
    assert result.output.startswith("Error: ") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["a.png"]


@pytest.mark.parametrize("psf", ["0", "-1.5"])
def test_a_bad_fits_option_is_one_error_line_before_any_work(tmp_path, model_file, psf):
    from astropy.io import fits

    src = tmp_path / "in"
    src.mkdir()
    fits.PrimaryHDU(np.random.default_rng(0).normal(size=(16, 16)).astype(np.float32)).writeto(src / "g.fits")
    photo(src / "a.png")
    result = upscale(src, tmp_path / "out", "--model", model_file, "--residual", "--psf", psf)
    assert result.exit_code == 1
    assert result.output == f"Error: PSF FWHM must be > 0 input pixels, got {float(psf)} (--psf FWHM or a PSF FITS file)\n"
    assert not (tmp_path / "out").exists()  # refused by FitsOptions before any folder or file is made


def test_output_folder_inside_input_is_not_reread(tmp_path, model_file):
    photo(tmp_path / "in" / "a.png")
    for _ in range(2):  # the second run would pick up in/out/a.png if it re-read OUTPUT
        result = upscale(tmp_path / "in", tmp_path / "in" / "out", "--model", model_file, "--overwrite")
        assert result.exit_code == 0 and "1 done" in result.output, result.output
    assert not (tmp_path / "in" / "out" / "out").exists()


def test_max_pixels(tmp_path, model_file):
    photo(tmp_path / "a.png", size=(40, 30))
    result = upscale(tmp_path / "a.png", tmp_path / "o", "--model", model_file, "--max-pixels", "1000")
    assert result.exit_code == 1 and "raise --max-pixels" in result.output
    assert upscale(tmp_path / "a.png", tmp_path / "o", "--model", model_file, "--max-pixels", "0").exit_code == 0


def test_missing_default_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpoint, "WEIGHTS_DIR", tmp_path / "no-weights")
    photo(tmp_path / "a.png")
    result = upscale(tmp_path / "a.png", tmp_path / "o")
    assert result.exit_code == 1
    assert result.output.startswith("Error: unknown model 'photo-x4'")
    assert not (tmp_path / "o" / "a.png").exists()


def test_torchrun_ranks_take_disjoint_shares(tmp_path, model_file, monkeypatch):
    for i in range(5):
        photo(tmp_path / "in" / f"{i}.png")
    done = []
    for rank in range(2):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        result = upscale(tmp_path / "in", tmp_path / f"out{rank}", "--model", model_file)
        assert result.exit_code == 0 and f"[rank {rank}/2]" in result.output
        done.append(sorted(p.name for p in (tmp_path / f"out{rank}").iterdir()))
    assert done == [["0.png", "2.png", "4.png"], ["1.png", "3.png"]]
