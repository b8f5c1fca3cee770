"""Root pytest configuration, loaded before any test or doctest module imports torch."""

import os

# OpenMP threads that busy-wait for a busy core make small CPU ops 2-15x slower on shared
# machines (measured on the 2-core CI machine); it must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# The tests compare tiled, whole-image and reference outputs within 1e-5, i.e. in fp32; on a CPU
# with native bf16, precision "auto" would pick bf16 for photo models (srgan.upscale.resolve_precision).
# tests/test_cpu_engine.py removes this to test that default itself.
os.environ.setdefault("SRGAN_PRECISION", "fp32")
