"""srgan: SRGAN super-resolution for photos and astronomical FITS images."""

__version__ = "0.1.0"

from srgan.checkpoint import ModelInfo, load_model, save_model  # noqa: E402
from srgan.errors import SrganError  # noqa: E402
from srgan.models import Discriminator, Generator, GeneratorConfig  # noqa: E402
from srgan.upscale import Upscaler  # noqa: E402

__all__ = [
    "__version__", "Generator", "GeneratorConfig", "Discriminator", "ModelInfo",
    "load_model", "save_model", "SrganError", "Upscaler",
]
