"""What importing srgan costs: image IO and file kinds load no torch; public names resolve lazily."""

import subprocess
import sys

import pytest

HEAVY = ("torch", "safetensors", "astropy")


@pytest.mark.parametrize("module", ["srgan", "srgan.imageio", "srgan.atomic", "srgan.filekinds"])
def test_plain_file_modules_do_not_import_torch(module):
    code = f"import sys, {module}; print(sorted(set({HEAVY!r}) & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"{module} imports {proc.stdout.strip()}"


def test_public_names_are_the_defining_modules_objects():
    import srgan
    from srgan import checkpoint, models, upscale

    assert srgan.Upscaler is upscale.Upscaler and srgan.load_model is checkpoint.load_model
    assert srgan.Generator is models.Generator and srgan.ModelInfo is checkpoint.ModelInfo
    assert set(srgan.__all__) <= set(dir(srgan))
    for name in srgan.__all__:
        assert getattr(srgan, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'Upscalr'"):
        srgan.Upscalr
