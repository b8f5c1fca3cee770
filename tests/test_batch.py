"""Batch planning and running: refusals before work, bad files isolated, resumable, sharded."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srgan.batch import Job, check_writable, plan_jobs, rank_and_world_size, run_jobs, shard
from srgan.errors import ConfigError, InputError
from srgan.upscale import Upscaler


@pytest.fixture(scope="module")
def up(make_generator):
    torch.manual_seed(0)
    return Upscaler(make_generator(scale=2, channels=4, blocks=1), device="cpu")


def photo(path: Path, size=(6, 5), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.randint(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode).save(path)
    return path


@pytest.fixture
def tree(tmp_path):
    """in/a.png, in/sub/b.jpg, in/sub/deeper/c.tif, in/bad.png (text), in/empty.png, in/notes.txt"""
    root = tmp_path / "in"
    photo(root / "a.png")
    photo(root / "sub" / "b.jpg")
    photo(root / "sub" / "deeper" / "c.tif", mode="L")
    (root / "bad.png").write_text("this is not an image")
    (root / "empty.png").write_bytes(b"")
    (root / "notes.txt").write_text("ignored: not an image suffix")
    (root / ".hidden.png").write_text("hidden files are skipped")
    return root


def rel(jobs, root):
    return [(j.src.relative_to(root).as_posix(), j.dst.relative_to(root.parent).as_posix()) for j in jobs]


def test_folder_tree_is_mirrored_with_names_kept(tree):
    jobs = plan_jobs(tree, tree.parent / "out")
    assert rel(jobs, tree) == [("a.png", "out/a.png"), ("bad.png", "out/bad.png"), ("empty.png", "out/empty.png"),
                               ("sub/b.jpg", "out/sub/b.jpg"), ("sub/deeper/c.tif", "out/sub/deeper/c.tif")]
    jobs = plan_jobs(tree, tree.parent / "out", format="png", glob="*.jpg")
    assert rel(jobs, tree) == [("sub/b.jpg", "out/sub/b.png")]
    assert plan_jobs(tree, tree.parent / "out", glob="sub/deeper/*")[0].src.name == "c.tif"
    photo(tree / "IMG_0001.JPG")
    assert [j.src.name for j in plan_jobs(tree, tree.parent / "out", glob="*.jpg")] == ["IMG_0001.JPG", "b.jpg"]


def test_file_input_to_file_or_folder(tree, tmp_path):
    assert plan_jobs(tree / "a.png", tmp_path / "x.jpg")[0].dst == tmp_path / "x.jpg"
    assert plan_jobs(tree / "a.png", tmp_path / "outdir")[0].dst == tmp_path / "outdir" / "a.png"
    assert plan_jobs(tree / "a.png", tmp_path, format="webp")[0].dst == tmp_path / "a.webp"
    with pytest.raises(ConfigError, match="--format jpg"):
        plan_jobs(tree / "a.png", tmp_path / "x.png", format="jpg")
    assert plan_jobs(tree / "a.png", tmp_path / "x.png", format="png")[0].kind == "photo"


def test_fits_files_are_fits_jobs_and_keep_their_names(tmp_path):
    (tmp_path / "in").mkdir()
    for name in ("g.fits", "h.fits.gz", "k.fz"):
        (tmp_path / "in" / name).write_bytes(b"x")
    jobs = plan_jobs(tmp_path / "in", tmp_path / "out", format="png")
    assert [(j.dst.name, j.kind) for j in jobs] == [("g.fits", "fits"), ("h.fits.gz", "fits"), ("k.fz", "fits")]


def test_output_equal_to_input_is_refused(tree):
    with pytest.raises(ConfigError, match="is INPUT itself"):
        plan_jobs(tree, tree / "." / "")
    with pytest.raises(ConfigError, match="is INPUT itself"):
        plan_jobs(tree / "a.png", tree / "sub" / ".." / "a.png")


def test_an_output_resolving_to_an_input_file_is_refused(tree, tmp_path):
    with pytest.raises(ConfigError, match="would overwrite the input"):
        plan_jobs(tree / "a.png", tree)  # into its own folder under the same name
    os.symlink(tree / "a.png", tmp_path / "link.png")
    with pytest.raises(ConfigError, match="INPUT itself"):
        plan_jobs(tree / "a.png", tmp_path / "link.png")
    os.symlink(tree, tmp_path / "link")
    with pytest.raises(ConfigError, match="INPUT itself"):
        plan_jobs(tree / "sub", tmp_path / "link" / "sub")


def test_two_inputs_on_one_output_are_refused(tmp_path):
    photo(tmp_path / "in" / "x.jpg")
    photo(tmp_path / "in" / "x.png")
    with pytest.raises(ConfigError, match="would both be written to"):
        plan_jobs(tmp_path / "in", tmp_path / "out", format="png")


def test_output_folder_inside_input_is_not_read_as_input(tree):
    photo(tree / "out" / "old.png")  # e.g. results of an earlier run
    jobs = plan_jobs(tree, tree / "out")
    assert all("out" not in j.src.relative_to(tree).parts for j in jobs)
    assert len(jobs) == 5


def test_missing_input_and_empty_folders_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        plan_jobs(tmp_path / "nope", tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no files"):
        plan_jobs(tmp_path / "empty", tmp_path / "out")


def test_unwritable_output_is_refused_before_any_work(tree, tmp_path):
    (tmp_path / "file").write_text("a file where a folder should be")
    jobs = plan_jobs(tree, tmp_path / "file" / "out")
    with pytest.raises(ConfigError, match="is a file"):
        check_writable(jobs)
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        try:
            with pytest.raises(ConfigError, match="not writable"):
                check_writable(plan_jobs(tree, locked / "out"))
        finally:
            locked.chmod(0o700)


def test_run_processes_good_files_and_reports_bad_ones(tree, up):
    out = tree.parent / "out"
    jobs = plan_jobs(tree, out)
    check_writable(jobs)
    lines = []
    result = run_jobs(jobs, lambda kind: up, report=lines.append, workers=2)
    assert sorted(p.relative_to(out).as_posix() for p in result.done) == ["a.png", "sub/b.jpg", "sub/deeper/c.tif"]
    assert Image.open(out / "sub" / "deeper" / "c.tif").mode == "L"
    assert Image.open(out / "a.png").size == (12, 10)
    assert {src.name for src, _ in result.failed} == {"bad.png", "empty.png"}
    assert result.exit_code == 1 and not result.ok
    assert len(lines) == 2 and all(line.startswith(str(tree)) for line in lines)
    assert any("empty file" in line for line in lines)
    assert not (out / "bad.png").exists() and not (out / "empty.png").exists()
    assert "3 done, 0 skipped, 2 failed" in result.summary() and "Mpx/s" in result.summary()
    assert result.megapixels_out == pytest.approx(4 * result.megapixels_in)


def test_skip_existing_resumes_after_a_crash(tree, up):
    out = tree.parent / "out"
    jobs = [j for j in plan_jobs(tree, out) if j.src.name in ("a.png", "b.jpg", "c.tif")]
    check_writable(jobs)
    run_jobs(jobs[:1], lambda kind: up)  # a.png finished before the crash
    finished = (out / "a.png").stat().st_mtime_ns
    (out / "sub").mkdir(exist_ok=True)
    stale = out / "sub" / ".b.jpg.k3j2h1.tmp"  # what kill -9 leaves behind mid-write
    stale.write_bytes(b"\xff\xd8 half a jpeg")
    result = run_jobs(jobs, lambda kind: up, skip_existing=True)
    assert result.skipped == [out / "a.png"] and len(result.done) == 2 and result.ok
    assert (out / "a.png").stat().st_mtime_ns == finished
    assert Image.open(out / "sub" / "b.jpg").size == (12, 10)
    assert not stale.exists()


def test_too_many_pixels_fails_that_file_only(tree, up):
    photo(tree / "huge.png", size=(200, 100))
    jobs = [j for j in plan_jobs(tree, tree.parent / "out") if j.src.name in ("a.png", "huge.png")]
    check_writable(jobs)
    result = run_jobs(jobs, lambda kind: up, max_pixels=10_000)
    assert [p.name for p in result.done] == ["a.png"]
    assert "--max-pixels" in result.failed[0][1]


def test_fits_jobs_go_to_srgan_fits(tmp_path, monkeypatch, up):
    import srgan.fits
    from srgan.fits import FitsOptions

    calls = []

    def fake_upscale_fits(upscaler, src, dst, **kw):
        calls.append((upscaler, Path(src).name, kw))
        Path(dst).write_bytes(b"SIMPLE")
        return Path(dst)

    monkeypatch.setattr(srgan.fits, "upscale_fits", fake_upscale_fits)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "g.fits").write_bytes(b"x")
    photo(tmp_path / "in" / "p.png")
    kinds = []
    options = FitsOptions(flux="surface-brightness", residual=True)
    result = run_jobs(plan_jobs(tmp_path / "in", tmp_path / "out"), lambda kind: kinds.append(kind) or up,
                      fits_options=options)
    assert result.ok and sorted(kinds) == ["fits", "photo"]
    assert calls == [(up, "g.fits", {"options": options})]  # the one dataclass, passed on as it is


def test_a_missing_model_stops_before_any_work(tree):
    from srgan.errors import ModelError

    def no_model(kind):
        raise ModelError("unknown model 'photo-x4'")

    with pytest.raises(ModelError):
        run_jobs(plan_jobs(tree, tree.parent / "out"), no_model)
    assert not (tree.parent / "out").exists()


def test_rank_sharding_is_disjoint_and_complete(tmp_path):
    jobs = [Job(Path(f"in/{i:02d}.png"), Path(f"out/{i:02d}.png"), "photo") for i in range(11)]
    shuffled = jobs[5:] + jobs[:5]
    shares = [shard(shuffled, r, 3) for r in range(3)]
    names = [j.src.name for s in shares for j in s]
    assert sorted(names) == sorted(j.src.name for j in jobs) and len(names) == len(set(names))
    assert [j.src.name for j in shares[1]] == ["01.png", "04.png", "07.png", "10.png"]
    assert rank_and_world_size({}) == (0, 1)
    assert rank_and_world_size({"RANK": "2", "WORLD_SIZE": "4"}) == (2, 4)
    with pytest.raises(ConfigError):
        rank_and_world_size({"RANK": "4", "WORLD_SIZE": "4"})
