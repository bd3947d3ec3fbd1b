"""The install step (`scripts/install.sh`) through uv, its default, against pip (`RAYDA_INSTALLER=pip`).

    python benchmarks/install.py [--extras cpu,dev]

Each installer fills a fresh venv with the project and its extras, with empty caches of its own (pip's
and uv's), uv first, so that it is the one that reads the wheels from disk cold. Both compile bytecode
(pip does by default, install.sh asks uv to): without it every process of a run compiles the
stack's imports again (7 s against 16 for torch, vLLM, Ray, DeepSpeed and transformers here).

Prints one JSON line: per installer `seconds`, `pip_over_uv`, and `same_packages` (the two venvs'
`pip freeze`, uv itself aside) with `packages`. Exits with an error, printing no figures, when an
install fails or the two venvs differ.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def install(installer: str, venv: Path, caches: Path, extras: str) -> float:
    env = {**os.environ, "RAYDA_INSTALLER": installer, "UV_CACHE_DIR": str(caches / "uv"),
           "PIP_CACHE_DIR": str(caches / "pip")}
    t0 = time.perf_counter()
    subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), str(venv), extras], cwd=ROOT, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def packages(venv: Path) -> set[str]:
    out = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze", "--exclude-editable"],
                         capture_output=True, text=True, check=True).stdout
    return {line for line in out.splitlines() if line and not line.startswith("uv==")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--extras", default="cpu,dev")
    args = ap.parse_args()
    result, frozen = {}, {}
    with tempfile.TemporaryDirectory(prefix="rayda-install-") as tmp:
        for installer in ("uv", "pip"):
            venv = Path(tmp) / installer / "venv"
            result[installer] = {"seconds": round(install(installer, venv, Path(tmp) / installer, args.extras), 1)}
            frozen[installer] = packages(venv)
    if frozen["uv"] != frozen["pip"]:
        sys.exit(f"install: the venvs differ: uv only {sorted(frozen['uv'] - frozen['pip'])}, "
                 f"pip only {sorted(frozen['pip'] - frozen['uv'])}")
    print(json.dumps({**result, "pip_over_uv": round(result["pip"]["seconds"] / result["uv"]["seconds"], 2),
                      "same_packages": True, "packages": len(frozen["uv"]), "extras": args.extras}))


if __name__ == "__main__":
    main()
