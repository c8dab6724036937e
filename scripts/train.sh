#!/usr/bin/env bash
# The README's MNIST command: installs srcgrad, then trains the MLP (extra flags pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
"$PYTHON" -m pip install --quiet --disable-pip-version-check -e .
if [ -z "${SRCGRAD_DATA:-}" ] && [ -d ../shared/data/mnist ]; then
    export SRCGRAD_DATA="$(cd ../shared/data/mnist && pwd)"
fi
exec "$PYTHON" examples/train_mnist.py "$@"
