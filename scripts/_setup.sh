# Shared by scripts/demo and scripts/test: make .venv and install the package into it.
# Usage: source scripts/_setup.sh EXTRAS   (e.g. "" or "all,dev")
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
case ",${1:-}," in
    *,torch,*)
        # The CPU build this project tests with; a bare `torch` could resolve to a CUDA build of
        # several GB. Installed first, it satisfies the extra's range and nothing newer is fetched.
        .venv/bin/python -m pip install --quiet "torch==${TORCH_VERSION:-2.13.0}"
        ;;
esac
if [ -n "${1:-}" ]; then
    .venv/bin/python -m pip install --quiet -e ".[$1]"
else
    .venv/bin/python -m pip install --quiet -e .
fi
