"""Run one benchmark and keep its figures with where they came from, in benchmarks/results/NAME.json.

    .venv/bin/python benchmarks/run.py NAME [args...]         (NAME: benchmarks/NAME.py, or a script's path)

Runs the script with this Python, passing its output through, and takes the last line of its stdout
that parses as a JSON object. Writes (atomically: a temporary file, then a rename)
{"benchmark", "result", "commit", "dirty", "date", "cores", "command"}: the short commit of HEAD and
whether tracked files that can change a figure differ from it (documentation, tests and results
cannot), the UTC date, `os.cpu_count()` and the command as run.
Exits non-zero and writes nothing when the script fails or prints no JSON object. A result of the form
{"skipped": why} (an optional input is missing) is reported and not written; the exit status is 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def git_state(root: Path) -> tuple[str, bool | None]:
    """HEAD's short hash and whether tracked files (documentation, tests and results aside) differ from it;
    ("unknown", None) outside git."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!benchmarks/results", ":!*.md",
                         ":!tests"))
    except (OSError, subprocess.CalledProcessError):
        return "unknown", None
    return commit, dirty


def last_json_object(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            return obj
    return None


def write_atomic(path: Path, obj: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(obj, indent=1, sort_keys=True) + "\n")
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would make the results unreadable to others
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(RESULTS), help="where NAME.json goes (default: benchmarks/results)")
    ap.add_argument("script", help="a benchmark's name (benchmarks/NAME.py) or a script's path")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")
    a = ap.parse_args(argv)
    script = (Path(a.script) if a.script.endswith(".py") else ROOT / "benchmarks" / f"{a.script}.py").resolve()
    name = script.stem
    if not script.is_file():
        print(f"bench {name}: no script {script}", file=sys.stderr)
        return 2
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    command = shlex.join(["python", str(shown), *a.args])
    commit, dirty = git_state(ROOT)
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")

    print(f"bench {name}: {command}", file=sys.stderr, flush=True)
    proc = subprocess.Popen([sys.executable, str(script), *a.args], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stdout:  # passed through as it comes: benchmarks run for minutes
        sys.stdout.write(line)
        lines.append(line)
    if proc.wait() != 0:
        print(f"bench {name}: failed (exit {proc.returncode}); nothing written", file=sys.stderr)
        return 1
    result = last_json_object("".join(lines))
    if result is None:
        print(f"bench {name}: printed no JSON object; nothing written", file=sys.stderr)
        return 1
    if "skipped" in result:
        print(f"bench {name}: skipped: {result['skipped']}", file=sys.stderr)
        return 0
    path = Path(a.results) / f"{name}.json"
    write_atomic(path, {"benchmark": name, "result": result, "commit": commit, "dirty": dirty, "date": date,
                        "cores": os.cpu_count(), "command": command})
    print(f"bench {name}: -> {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
