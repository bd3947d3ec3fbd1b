"""Stage 4: evaluation. Generate WITHOUT the spec, classify each final answer, report with intervals.

    rayda eval [RECIPE] --model sft                       # the run's SFT checkpoint on tinyworld:heldout
    rayda eval --model rl eval.prompts=xstest_prompts.csv # an external benchmark in its published format
    rayda eval --completions xstest_v2_completions.csv    # grade completions produced elsewhere

`--model` is `base` (the recipe's policy), `sft` or `rl` (this run's checkpoints) or any Hugging Face
path or name. Generation runs on the rollout pool through Ray Data (`actors/answerer.py`). The answer's
behaviour comes from the judge's REWARD view, on the judge pool (`actors/judge.py`); the rubric judge and
unlabelled or off-spec prompts use `rayda.behaviour.classify` on the driver (spec style markers, else
free-form cues). Citations from the chain of thought are checked against the spec. Outputs, written atomically:
`<run.dir>/eval/<name>.json` (per-category metrics with 95% bootstrap intervals) and
`<run.dir>/eval/<name>.parquet` (every graded sample). A finished evaluation is not redone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path

from rayda import io
from rayda.config import Recipe
from rayda.evaluation.metrics import XSTEST_HUMAN_LABELS, Graded, human_agreement, summarise
from rayda.evaluation.prompt_sets import EvalPrompt, load_completions, load_prompt_set
from rayda.reasoning import split
from rayda.spec import BEHAVIOURS

EXTERNAL_LABELS = {"safe": "comply", "unsafe": "refuse"}
"""Published benchmarks label requests safe/unsafe; the ideal behaviour of each."""


def model_path(ctx, model: str) -> str:
    """`base`, `sft`, `rl` or a path/name, as something an engine can load (fails early if missing)."""
    if model in ("sft", "rl"):
        ckpt = Path(ctx.recipe.run.dir) / "checkpoints" / model
        if not io.is_done(ckpt):
            raise FileNotFoundError(f"--model {model}: {ckpt} has no finished checkpoint (run `rayda {model}` first)")
        return str(ckpt.resolve())
    return ctx.model(ctx.recipe.model.policy if model == "base" else model, "--model")


def load_eval_prompts(ctx, source: str) -> list[EvalPrompt]:
    """A prompt set: the tiny world's splits and rayda files (validated against the spec), or an
    external benchmark file in its published format."""
    from rayda.data.prompts import load_prompts

    limit = ctx.recipe.eval.limit
    name = Path(source).name.lower()
    if source.startswith("tinyworld:") or (name.endswith((".jsonl", ".parquet")) and "xstest" not in name):
        return [EvalPrompt(p) for p in load_prompts(source, ctx.spec, limit=limit)]
    items = load_prompt_set(source)
    return items[:limit] if limit else items


def generate(recipe: Recipe, model: str, items: list[EvalPrompt], progress: bool = True) -> list[str]:
    """One completion per prompt from the rollout pool, in prompt order."""
    import ray.data

    from rayda.actors.answerer import Answerer
    from rayda.engines.vllm_engine import EngineConfig
    from rayda.placement import data_pool_args, plan
    from rayda.ray_utils import init_ray

    ray = init_ray(recipe.run)
    pool = recipe.pools.rollout
    plan({"rollout": pool}, ray.cluster_resources())
    cfg = EngineConfig(model, seed=recipe.run.seed, dtype=recipe.model.dtype,
                       gpu_memory_utilization=recipe.eval.gpu_memory_utilization, verbose=recipe.run.verbose)
    rows = [{"index": i, "messages": json.dumps(list(it.prompt.messages))} for i, it in enumerate(items)]
    ds = ray.data.from_items(rows).map_batches(
        Answerer,
        fn_constructor_args=(cfg, recipe.eval.max_tokens, recipe.eval.temperature, recipe.run.seed),
        batch_size=recipe.eval.batch_size, batch_format="pyarrow", **data_pool_args(pool),
    )
    from tqdm import tqdm

    out: list[str | None] = [None] * len(items)
    for row in tqdm(ds.iter_rows(), total=len(items), desc=f"eval {Path(model).name}", disable=not progress):
        out[row["index"]] = row["completion"]
    return out  # type: ignore[return-value]


def grade(spec, items: list[EvalPrompt], completions: list[str], judge=None) -> tuple[list[Graded], list[dict]]:
    """Split, classify and check citations for each completion; the graded samples and their rows."""
    from rayda.behaviour import classify
    from rayda.types import Completion, RewardRequest

    categories = set(spec.category_ids)
    splits = [split(c) for c in completions]
    answers = [s.answer if s.answer else c for s, c in zip(splits, completions)]
    judged = [i for i, it in enumerate(items) if judge is not None and it.label and it.category in categories]
    verdicts = {}
    if judged:
        reqs = [RewardRequest.of(Completion.from_text(items[i].prompt, completions[i])) for i in judged]
        for i, vs in zip(judged, judge.verdicts(reqs, seeds=[0] * len(reqs))):
            verdicts[i] = vs[0]
    graded, rows = [], []
    for i, (it, s, answer, text) in enumerate(zip(items, splits, answers, completions)):
        v = verdicts.get(i)
        behaviour = (v.behaviour if v is not None and v.ok else None) if v is not None else classify(answer, spec)
        cites = tuple(spec.citations(s.cot, it.category)) if it.category in categories else ()
        style_ok = (bool(answer.strip()) and "<" not in answer) if behaviour == "safe_complete" else None
        g = Graded(it.id, it.category, it.label, behaviour, s.malformed, cites, style_ok, it.type)
        graded.append(g)
        rows.append({**g.as_row(), "prompt": it.prompt.user_text, "completion": text, "answer": answer, "cot": s.cot,
                     "judge_error": v.error if v is not None else None})
    return graded, rows


def _write(out_dir: Path, name: str, rows: list[dict], summary: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with io.atomic_path(out_dir / f"{name}.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    io.atomic_write_json(out_dir / f"{name}.json", summary)  # last: its presence means "done"
    return out_dir / f"{name}.json"


def run(recipe: Recipe, model: str = "base", source: str | None = None, name: str | None = None,
        progress: bool = True) -> Path:
    """Evaluate `model` on `source` (default: `eval.prompts`); returns the path of the JSON report."""
    from rayda.check import require_sizes
    from rayda.context import RunContext

    source = source or recipe.eval.prompts
    name = name or f"{Path(model).name if model not in ('base', 'sft', 'rl') else model}-{Path(source.split(':')[-1]).stem}"
    out_dir = Path(recipe.run.dir) / "eval"
    if (out_dir / f"{name}.json").exists():
        print(f"eval: {out_dir / name}.json exists; skipping")
        return out_dir / f"{name}.json"
    t0 = time.time()
    require_sizes(recipe, "model", "eval")
    ctx = RunContext(recipe)
    path = model_path(ctx, model)  # every input check before Ray starts
    items = load_eval_prompts(ctx, source)
    if recipe.judge.kind != "rubric":
        ctx.check_judge()
    completions = generate(recipe, path, items, progress)
    with _judge_pool(ctx, items) as judge:
        graded, rows = grade(ctx.spec, items, completions, judge)
    summary = summarise(graded, n_resamples=recipe.eval.n_resamples, seed=recipe.run.seed)
    summary["meta"] = {"model": model, "model_path": path, "prompts": source, "judge": recipe.judge.kind,
                       "temperature": recipe.eval.temperature, "seconds": round(time.time() - t0, 1)}
    report = _write(out_dir, name, rows, summary)
    overall = summary["overall"]
    print(f"eval {name}: behaviour accuracy {_fmt(overall['behaviour_accuracy'])}, "
          f"not_unsafe {_fmt(overall['not_unsafe'])}, not_overrefuse {_fmt(overall['not_overrefuse'])} -> {report}")
    return report


@contextlib.contextmanager
def _judge_pool(ctx, items: list[EvalPrompt]):
    """The configured judge, one verdict per request, on the judge pool (an llm judge's engine runs
    there, not on the driver); None for the rubric judge (the classifier is it)."""
    recipe = ctx.recipe
    if recipe.judge.kind == "rubric":
        yield None
        return
    from rayda.actors.judge import JudgeWorker
    from rayda.placement import plan
    from rayda.ray_utils import init_ray
    from rayda.rl.pools import JudgePool

    ray = init_ray(recipe.run)
    plan({"judge": recipe.pools.judge}, ray.cluster_resources())
    texts = ctx.spec_texts({it.category for it in items} & set(ctx.spec.category_ids))
    pool = JudgePool(JudgeWorker, recipe.pools.judge, ctx.judge_args(texts, dataclasses.replace(recipe.judge, k=1)))
    try:
        yield pool
    finally:
        pool.shutdown()


def grade_file(recipe: Recipe, path: str, name: str | None = None) -> Path:
    """`rayda eval --completions FILE`: grade completions produced elsewhere, without generating."""
    from rayda.behaviour import classify
    from rayda.context import RunContext

    spec = RunContext(recipe).spec
    rows = load_completions(path)
    name = name or f"completions-{Path(path).stem}"
    graded, out = [], []
    for n, row in enumerate(rows):
        s = split(row["completion"])
        answer = s.answer or row["completion"]
        behaviour = classify(answer, spec)
        raw_label = str(row.get("label") or "").lower()
        label = raw_label if raw_label in BEHAVIOURS else EXTERNAL_LABELS.get(raw_label)
        if label is None and "final_label" in row and row.get("type"):
            # XSTest v2 completion files: the unsafe prompts are exactly the `contrast_*` types
            label = "refuse" if str(row["type"]).startswith("contrast_") else "comply"
        category = str(row.get("category") or row.get("type") or "all")
        # A model that writes no <think> block is answering plainly, not malformed
        malformed = s.malformed if "<think>" in row["completion"] else None
        graded.append(Graded(str(row.get("id", n)), category, label, behaviour, malformed, (), None, row.get("type")))
        out.append({**row, "behaviour": behaviour})
    summary = summarise(graded, n_resamples=recipe.eval.n_resamples, seed=recipe.run.seed)
    summary["meta"] = {"completions": str(path), "classifier": "spec style markers, else free-form cues (rayda.behaviour.classify)"}
    humans = [XSTEST_HUMAN_LABELS.get(str(row.get("final_label") or "").strip()) for row in rows]
    if rows and all(humans):  # XSTest v2 completion files carry human labels: measure the classifier on them
        summary["human_agreement"] = human_agreement([r["behaviour"] for r in out], humans,
                                                     recipe.eval.n_resamples, recipe.run.seed)
        agree = summary["human_agreement"]["comply_vs_not"]
        print(f"eval: agreement with the human final_label (comply vs not): {_fmt(agree)} over {len(rows)} rows")
    report = _write(Path(recipe.run.dir) / "eval", name, out, summary)
    print(f"eval: graded {len(out)} completions -> {report.with_suffix('.parquet')}")
    return report


def _fmt(m: dict) -> str:
    return "n/a" if m.get("mean") is None else f"{m['mean']:.2f} [{m['low']:.2f}, {m['high']:.2f}]"
