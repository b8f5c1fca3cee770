"""Root pytest configuration, loaded before any test or doctest module imports torch."""

import os

# OpenMP threads that busy-wait for a busy core make small CPU ops 2-15x slower on shared
# machines (measured on the 2-core CI machine); it must be set before torch is imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
