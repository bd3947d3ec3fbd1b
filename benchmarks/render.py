"""The benchmark table, rendered from benchmarks/results/*.json (written by benchmarks/run.py).

    .venv/bin/python benchmarks/render.py                     (print the table)
    .venv/bin/python benchmarks/render.py --write README.md   (replace the lines between the markers)

One row per result: its headline figures (HEADLINES; the whole result, compactly, for a benchmark not
listed there), the commit, the UTC date and the machine's cores. A result measured at a commit whose
code differs from HEAD's is marked "(from abc1234, older)"; one whose commit differs from HEAD only in
what cannot change its figures (documentation, tests, results, the scripts of benchmarks it does not
import) shows "abc1234, same code"; one measured with uncommitted changes carries "+dirty".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"

HEADLINES = {
    "install": ["uv.seconds", "pip.seconds", "pip_over_uv", "same_packages", "packages"],
    "allocator": ["system_over_jemalloc", "cpu_system_over_jemalloc", "system.median_s_per_step",
                  "jemalloc.median_s_per_step", "same_weights"],
    "tinyworld": ["build_seconds", "parameters", "well_formed", "heldout_behaviour_accuracy",
                  "with_spec_citation_valid", "vllm_over_hf"],
    "learner": ["tokens_per_s", "ratio_deepspeed_1_vs_torch", "scaling_2_vs_1_rank", "mfu"],
    "engine_dtype": ["auto_over_bfloat16_with_spec", "auto_over_bfloat16_without_spec", "tokens_per_s_auto_with_spec"],
    "engine_process": ["start_multiprocess_over_in_process", "tokens_per_s_in_process_over_multiprocess",
                       "in_process.start_s", "multiprocess.start_s"],
    "gen_sft": ["judge_separate_over_batched", "busy_fraction_1", "busy_fraction_2", "rows_per_s_after_start_1",
                "speedup_2_over_1"],
    "classifier": ["pooled.n", "pooled.rayda", "pooled.prefix", "pooled.error_ratio"],
    "rl_step": ["step_s", "split_s", "generate_first_over_last", "step_first_over_last", "overhead_fraction", "sync_over_memcpy",
                "probe_max_diff"],
    "outcome": ["over_seeds.sft.behaviour_accuracy.mean", "over_seeds.rl.behaviour_accuracy.mean",
                "over_seeds.rl_minus_sft.mean", "also.prompts", "also.over_seeds.rl_minus_sft.mean"],
    "compare_arms": ["over_runs.da.behaviour_accuracy.mean", "over_runs.cai.behaviour_accuracy.mean",
                     "over_runs.cai_sft_only.behaviour_accuracy.mean", "ratios.cai.not_overrefuse"],
    "prompts_import": ["pair_recall", "pair_precision", "groups_reproduced", "exact_over_lsh", "large_texts_per_s"],
    "weight_sync": ["sizes.0.bytes", "sizes.0.collective_s_per_100mb", "sizes.0.files_over_collective",
                    "sizes.2.bytes", "sizes.2.collective_s_per_100mb", "sizes.2.files_over_collective",
                    "sizes.2.collective_over_memcpy", "rl_step_files_over_collective.step"],
    "async_rl": ["async_over_sync_steps_per_s", "sync.step_s", "async.step_s", "async.split_s.wait", "judge_latency_s"],
}
"""Per benchmark, the keys shown (a dotted key reaches into nested objects; a number, into a list), in
this order."""


def head_commit(root: Path = ROOT) -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def scripts_of(name: str, root: Path = ROOT) -> list[str]:
    """benchmarks/NAME.py and the benchmark scripts it imports from (`from engine_dtype import ...`,
    `from benchmarks.rl_step import ...`), and theirs, as paths under `root`."""
    bench = root / "benchmarks"
    found, todo = [], [name]
    while todo:
        stem = todo.pop()
        path = bench / f"{stem}.py"
        if stem in found or not path.exists():
            continue
        found.append(stem)
        todo += re.findall(r"^\s*from (?:benchmarks\.)?(\w+) import", path.read_text(), re.M)
    return [f"benchmarks/{stem}.py" for stem in [name, *sorted(set(found) - {name})]]


def same_code(name: str, commit: str, root: Path = ROOT) -> bool:
    """Whether benchmark `name`'s code is the same at `commit` and HEAD: they differ at most in
    documentation (*.md), tests, results and the scripts of benchmarks it does not import. False when
    git cannot tell (no checkout, an unknown commit)."""
    def unchanged(*paths: str) -> bool:
        return subprocess.run(["git", "diff", "--quiet", commit, "HEAD", "--", *paths], cwd=root,
                              capture_output=True).returncode == 0

    try:
        return unchanged(".", ":(exclude)*.md", ":(exclude)tests", ":(exclude)benchmarks") and \
            unchanged(*scripts_of(name, root))
    except OSError:
        return False


def _compact(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))


def _get(result: dict, dotted: str):
    for part in dotted.split("."):
        if isinstance(result, list) and part.isdigit() and int(part) < len(result):
            result = result[int(part)]
        elif isinstance(result, dict) and part in result:
            result = result[part]
        else:
            return None
    return result


def figures(name: str, result: dict) -> str:
    shown = [(k, _get(result, k)) for k in HEADLINES.get(name, [])]
    shown = [f"{k} {_compact(v)}" for k, v in shown if v is not None]
    if not shown:
        return _compact({k: v for k, v in result.items() if k not in ("benchmark", "bench")})
    return "; ".join(shown)


def commit_cell(rec: dict, head: str | None, root: Path = ROOT) -> str:
    commit = rec.get("commit") or "unknown"
    text = commit + ("+dirty" if rec.get("dirty") else "")
    same = head is not None and (head.startswith(commit) or commit.startswith(head))  # short hashes may grow
    if same or head is None:
        return text
    return f"{text}, same code" if same_code(rec["benchmark"], commit, root) else f"(from {text}, older)"


def table(records: list[dict], head: str | None, root: Path = ROOT) -> str:
    order = list(HEADLINES)
    records = sorted(records, key=lambda r: (order.index(r["benchmark"]) if r["benchmark"] in order else len(order),
                                              r["benchmark"]))
    lines = ["| benchmark | figures | commit | date | cores |", "|---|---|---|---|---|"]
    for r in records:
        cells = [f"`benchmarks/{r['benchmark']}.py`", figures(r["benchmark"], r["result"]), commit_cell(r, head, root),
                 str(r.get("date", ""))[:10], str(r.get("cores", ""))]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if not records:
        lines.append("| (no results yet: `make bench`) | | | | |")
    return "\n".join(lines)


def load(results: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(results.glob("*.json"))]


def replace_block(text: str, block: str) -> str:
    """`text` with the lines between the BEGIN and END marker lines replaced by `block`."""
    lines = text.split("\n")
    if BEGIN not in lines or END not in lines or lines.index(BEGIN) > lines.index(END):
        raise ValueError(f"no {BEGIN} ... {END} marker lines")
    b, e = lines.index(BEGIN), lines.index(END)
    return "\n".join(lines[:b + 1] + block.split("\n") + lines[e:])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--write", metavar="FILE", help="replace the table between the marker lines of FILE")
    ap.add_argument("--root", default=str(ROOT), help="the git checkout whose HEAD the results are dated against")
    a = ap.parse_args(argv)
    block = table(load(Path(a.results)), head_commit(Path(a.root)), Path(a.root))
    if not a.write:
        print(block)
        return 0
    path = Path(a.write)
    try:
        text = replace_block(path.read_text(), f"\n{block}\n")  # blank lines: the table is a block of its own
    except ValueError as e:
        print(f"render: {path}: {e}", file=sys.stderr)
        return 2
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    shutil.copymode(path, tmp)
    os.replace(tmp, path)
    print(f"render: {len(block.splitlines()) - 2} rows -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
