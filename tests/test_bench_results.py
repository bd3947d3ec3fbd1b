"""benchmarks/run.py keeps a benchmark's figures with their commit, date and cores, and only from a
run that worked; benchmarks/render.py turns them into the README's table and marks older figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUN, RENDER = ROOT / "benchmarks" / "run.py", ROOT / "benchmarks" / "render.py"

PRINTS_JSON = """import json, sys
print("engine starting")
print(json.dumps({"benchmark": "fake", "ratio": 1.0}))
print(json.dumps({"benchmark": "fake", "ratio": 2.5, "args": sys.argv[1:]}))
print("done")
"""
FAILS = """import json, sys
print(json.dumps({"benchmark": "fake", "ratio": 2.98, "judge_errors": 96}))
sys.exit("fake: every verdict failed")
"""
NO_JSON = 'print("ratio: 2.5")\nprint("[1, 2]")\n'
SKIPS = 'import json\nprint(json.dumps({"benchmark": "fake", "skipped": "no input files given"}))\n'


@pytest.fixture(scope="module")
def head():
    p = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip("not a git checkout")
    return p.stdout.strip()


def bench(tmp_path: Path, body: str, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "fake.py"
    script.write_text(body)
    return subprocess.run([sys.executable, str(RUN), "--results", str(tmp_path / "results"), str(script), *args],
                          capture_output=True, text=True)


def test_the_last_json_line_is_written_with_commit_date_cores_and_command(tmp_path, head):
    p = bench(tmp_path, PRINTS_JSON, "--steps", "2")
    assert p.returncode == 0, p.stderr
    assert "engine starting" in p.stdout  # the benchmark's output passes through
    assert [f.name for f in (tmp_path / "results").iterdir()] == ["fake.json"]  # no temporary file left
    rec = json.loads((tmp_path / "results" / "fake.json").read_text())
    assert rec["result"] == {"benchmark": "fake", "ratio": 2.5, "args": ["--steps", "2"]}
    assert rec["benchmark"] == "fake" and rec["commit"] == head and isinstance(rec["dirty"], bool)
    assert rec["cores"] == os.cpu_count() and rec["command"] == f"python {tmp_path / 'fake.py'} --steps 2"
    assert datetime.fromisoformat(rec["date"]).utcoffset() == timedelta(0)


def test_dirty_means_uncommitted_code_not_an_open_readme(tmp_path):
    repo = tmp_path / "repo"
    (repo / "benchmarks").mkdir(parents=True)
    (repo / "benchmarks" / "run.py").write_text(RUN.read_text())
    (repo / "benchmarks" / "fake.py").write_text(PRINTS_JSON)
    (repo / "README.md").write_text("figures\n")

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True, capture_output=True)

    git("init", "-q")
    git("add", "-A")
    git("commit", "-qm", "one")

    def dirty():
        p = subprocess.run([sys.executable, str(repo / "benchmarks" / "run.py"), "fake"], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        return json.loads((repo / "benchmarks" / "results" / "fake.json").read_text())["dirty"]

    (repo / "README.md").write_text("figures being edited\n")
    assert dirty() is False
    (repo / "benchmarks" / "fake.py").write_text(PRINTS_JSON + "\n")
    assert dirty() is True


@pytest.mark.parametrize("body,why", [(FAILS, "failed (exit 1)"), (NO_JSON, "printed no JSON object")])
def test_a_failed_or_silent_benchmark_writes_nothing(tmp_path, body, why):
    old = tmp_path / "results" / "fake.json"
    old.parent.mkdir()
    old.write_text('{"kept": true}')
    p = bench(tmp_path, body)
    assert p.returncode == 1 and why in p.stderr and "nothing written" in p.stderr
    assert old.read_text() == '{"kept": true}' and [f.name for f in old.parent.iterdir()] == ["fake.json"]


def test_a_skipped_benchmark_is_reported_not_failed(tmp_path):
    p = bench(tmp_path, SKIPS)
    assert p.returncode == 0 and "skipped: no input files given" in p.stderr
    assert not (tmp_path / "results").exists()


def _record(name, result, commit, dirty=False):
    return {"benchmark": name, "result": result, "commit": commit, "dirty": dirty,
            "date": "2026-01-02T03:04:05+00:00", "cores": 2, "command": f"python benchmarks/{name}.py"}


def render(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(RENDER), *args], capture_output=True, text=True)


def test_the_table_shows_headlines_and_marks_older_commits(tmp_path, head):
    results = tmp_path / "results"
    results.mkdir()
    rl_step = {"benchmark": "rl_step", "step_s": 2.8, "split_s": {"generate": 1.1}, "steps_timed": 3}
    sync = {"benchmark": "weight_sync", "sizes": [{"bytes": 10, "collective_s_per_100mb": 0.6}, {"bytes": 20}]}
    records = [_record("rl_step", rl_step, head),
               _record("learner", {"benchmark": "learner", "scaling_2_vs_1_rank": 1.92}, "abc1234"),
               _record("newbench", {"benchmark": "newbench", "a": 1, "b": [1, 2]}, head, dirty=True),
               _record("weight_sync", sync, head)]
    for r in records:
        (results / f"{r['benchmark']}.json").write_text(json.dumps(r))
    p = render("--results", str(results))
    assert p.returncode == 0, p.stderr
    rows = p.stdout.splitlines()
    assert rows[:2] == ["| benchmark | figures | commit | date | cores |", "|---|---|---|---|---|"]
    assert rows[2:] == [
        "| `benchmarks/learner.py` | scaling_2_vs_1_rank 1.92 | (from abc1234, older) | 2026-01-02 | 2 |",
        f'| `benchmarks/rl_step.py` | step_s 2.8; split_s {{"generate":1.1}} | {head} | 2026-01-02 | 2 |',
        f"| `benchmarks/weight_sync.py` | sizes.0.bytes 10; sizes.0.collective_s_per_100mb 0.6 | {head} | 2026-01-02 | 2 |",
        f'| `benchmarks/newbench.py` | {{"a":1,"b":[1,2]}} | {head}+dirty | 2026-01-02 | 2 |',
    ]


def test_a_result_older_than_head_by_documentation_only_is_not_marked_older(tmp_path):
    """The mark says whether the measured code changed since, not whether any commit came after: a
    README, test or other benchmark's edit keeps the figures current; a change to the benchmark's own
    script, to a script it imports from, or to rayda makes them older."""
    repo, results = tmp_path / "repo", tmp_path / "results"
    repo.mkdir()
    results.mkdir()

    def git(*args):
        return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                              capture_output=True, text=True).stdout.strip()

    git("init", "-q")

    def commit(path, text):
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
        git("add", "-A")
        git("commit", "-qm", path)
        return git("rev-parse", "--short", "HEAD")

    measured = commit("rayda/x.py", "a = 1\n")
    (results / "rl_step.json").write_text(json.dumps(_record("rl_step", {"step_s": 2.8}, measured)))
    cell = lambda: render("--results", str(results), "--root", str(repo)).stdout.splitlines()[2].split(" | ")[2]  # noqa: E731
    assert cell() == measured
    for path in ("README.md", "benchmarks/results/other.json", "tests/test_x.py", "benchmarks/other.py"):
        commit(path, "x\n")
    assert cell() == f"{measured}, same code"
    commit("benchmarks/rl_step.py", "from benchmarks.helper import f\n")  # the benchmark's own script
    assert cell() == f"(from {measured}, older)"
    (results / "rl_step.json").write_text(json.dumps(_record("rl_step", {"step_s": 2.8}, git("rev-parse", "--short", "HEAD"))))
    commit("benchmarks/helper.py", "f = 1\n")  # a script it imports from
    assert cell().endswith("older)")


def test_write_replaces_only_the_block_between_the_markers(tmp_path, head):
    results = tmp_path / "results"
    results.mkdir()
    (results / "rl_step.json").write_text(json.dumps(_record("rl_step", {"step_s": 2.8}, head)))
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nintro\n<!-- bench:begin -->\nan old table\n<!-- bench:end -->\n\nafter\n")
    table = ("| benchmark | figures | commit | date | cores |\n|---|---|---|---|---|\n"
             f"| `benchmarks/rl_step.py` | step_s 2.8 | {head} | 2026-01-02 | 2 |")
    for _ in range(2):  # rewriting is idempotent
        assert render("--results", str(results), "--write", str(readme)).returncode == 0
        assert readme.read_text() == f"# x\n\nintro\n<!-- bench:begin -->\n\n{table}\n\n<!-- bench:end -->\n\nafter\n"
    readme.write_text("no markers\n")
    p = render("--results", str(results), "--write", str(readme))
    assert p.returncode == 2 and "marker" in p.stderr and readme.read_text() == "no markers\n"
