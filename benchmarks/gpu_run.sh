#!/usr/bin/env bash
# Run benchmarks/gpu_run.py on the GPU machine, whose python lacks kornia and astropy and has
# no srgan: installs the wheels in .whl/ (made by /work/shared/tools/device-wheels.sh and
# carried with the call) into /tmp/site when kornia or astropy is missing, then srgan itself
# with `pip install --no-deps -e .` (PYTHONPATH=$PWD if that fails: srgan.cli is then missing
# and CLI tests error). Arguments go to gpu_run.py (--smoke, --budget, --only, --out ...);
# PYTHON picks the interpreter [default: python3].
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
if ! "$py" -c "import kornia, astropy" 2>/dev/null; then
  if ! compgen -G ".whl/*.whl" >/dev/null; then
    echo "gpu_run.sh: kornia or astropy is missing and there is no .whl/ folder; make it with" \
         "/work/shared/tools/device-wheels.sh and carry .whl with the call" >&2
    exit 2
  fi
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if ! "$py" -c "import srgan.cli" 2>/dev/null; then
  if ! "$py" -m pip install -q --no-deps --no-build-isolation --no-index -e .; then
    echo "gpu_run.sh: 'pip install -e .' failed; using PYTHONPATH=$PWD (srgan.cli missing: CLI tests will error)" >&2
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  fi
fi
exec "$py" benchmarks/gpu_run.py "$@"
