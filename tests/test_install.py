"""scripts/install.sh hands uv pip's own configuration (`pip_config`): the option `pip install` would use,
from the environment over the files, from [global] and [install] and no other command's section.
(That both installers give the same packages is `benchmarks/install.py`'s to measure: minutes.)"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "install.sh"


def pip_config(key: str, config_file: Path, **env: str) -> str:
    """`pip_config KEY` from install.sh, run by bash with this Python's pip, `config_file` loaded last
    among pip's files, and no PIP_* variable but `env`'s."""
    function = re.search(r"^pip_config\(\) \{.*?^\}", SCRIPT.read_text(), re.M | re.S).group(0)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    script = f'{function}\nPIP=("{sys.executable}" -m pip)\npip_config "$1"'
    out = subprocess.run(["bash", "-c", script, "bash", key], capture_output=True, text=True, check=True,
                         env={**clean, "PIP_CONFIG_FILE": str(config_file), **env})
    return out.stdout.strip()


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
