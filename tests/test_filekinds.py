"""srgan.filekinds: one set of suffixes, so upscale, train and eval pick up the same files."""

from srgan.batch import plan_jobs
from srgan.data import find_images
from srgan.filekinds import FITS_SUFFIXES, PHOTO_SUFFIXES, is_fits, is_image, is_photo


def test_every_suffix_in_any_case():
    for suffix in PHOTO_SUFFIXES:
        assert is_photo(f"a{suffix}") and is_photo(f"a{suffix.upper()}") and not is_fits(f"a{suffix}")
    for suffix in FITS_SUFFIXES:
        assert is_fits(f"dir.png/a{suffix}") and is_fits(f"a{suffix.upper()}") and not is_photo(f"a{suffix}")
    assert not is_image("notes.txt") and not is_image("fits/notes") and not is_image("a.png.txt")


def test_batch_and_training_folders_list_the_same_files(tmp_path):
    root = tmp_path / "in"
    names = [f"a{s.replace('.', '_')}{s}" for s in PHOTO_SUFFIXES + FITS_SUFFIXES]  # distinct output names
    names += ["B.JPG", "sub/c.Fits", "notes.txt", "sub/x.npy"]
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")  # planning looks at names only
    planned = [job.src for job in plan_jobs(root, tmp_path / "out")]
    assert planned == find_images(root)
    assert len(planned) == len(names) - 2
