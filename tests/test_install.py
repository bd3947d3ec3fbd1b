"""scripts/install.sh hands uv pip's own configuration (`uv_flags` from `pip_config`): the option `pip
install` would use, from the environment over the files, from [global] and [install] and no other
command's section.
(That both installers give the same packages is `benchmarks/install.py`'s to measure: minutes.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "install.sh"


def shell(call: str, config_file: Path, **env: str) -> str:
    """`call` (`pip_config KEY`, `uv_flags`) after install.sh's functions, run by bash with this Python's
    pip, `config_file` loaded last among pip's files, and no PIP_* variable but `env`'s."""
    functions = re.findall(r"^\w+\(\) \{.*?^\}", SCRIPT.read_text(), re.M | re.S)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    script = "\n".join([*functions, f'PIP=("{sys.executable}" -m pip)', call])
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                         env={**clean, "PIP_CONFIG_FILE": str(config_file), **env})
    return out.stdout.strip()


def pip_config(key: str, config_file: Path, **env: str) -> str:
    return shell(f"pip_config {key}", config_file, **env)


def test_pip_config_is_what_pip_install_reads(tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nfind-links = /wheels\nextra-index-url = file:///a file:///b\n"
                    "[install]\nconstraint = /c.txt\nindex-url = file:///mirror\n"
                    "[wheel]\nindex-url = file:///not-for-install\n")
    assert pip_config("find-links", conf) == "/wheels"  # this file is loaded after the machine's
    assert pip_config("extra-index-url", conf).split() == ["file:///a", "file:///b"]
    assert pip_config("constraint", conf) == "/c.txt"
    assert pip_config("index-url", conf) == "file:///mirror"  # [install], not [wheel]
    assert pip_config("find-links", conf, PIP_FIND_LINKS="/from-env") == "/from-env"
    assert pip_config("index-url", conf, PIP_INDEX_URL="file:///env") == "file:///env"
    assert pip_config("no-such-option", conf) == ""


def test_uv_gets_every_option_as_its_flag(tmp_path):
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nfind-links = /w1 /w2\nextra-index-url = file:///a\nindex-url = file:///i\n"
                    "[install]\nconstraint = /c.txt\n")
    assert shell("uv_flags", conf).split("\n") == ["--find-links", "/w1", "--find-links", "/w2", "--extra-index-url",
                                                  "file:///a", "--index-url", "file:///i", "--constraints", "/c.txt"]
