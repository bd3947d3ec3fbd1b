"""Stage 4: evaluation. Generate WITHOUT the spec, classify each final answer, report with intervals.

    rayda eval [RECIPE] --model sft                       # the run's SFT checkpoint on tinyworld:heldout
    rayda eval --model rl eval.prompts=xstest_prompts.csv # an external benchmark in its published format
    rayda eval --completions xstest_v2_completions.csv    # grade completions produced elsewhere

`--model` is `base` (the recipe's policy), `sft` or `rl` (this run's checkpoints) or any Hugging Face
path or name. Generation runs on the rollout pool through Ray Data (`actors/answerer.py`),
`eval.samples_per_prompt` completions per prompt. Grading, by `eval.grader`:
- `heuristic` (the default): the behaviour comes from the judge's REWARD view, on the judge pool
  (`actors/judge.py`); the rubric judge and unlabelled or off-spec prompts use `rayda.behaviour.classify`
  on the driver (spec style markers, else free-form cues);
- `judge`: the recipe's llm or http judge grades every answer with the grading prompt of
  `rayda.evaluation.grader` (behaviour, and whether it holds the harmful content asked for), on the judge
  pool through Ray Data, reading the answer or, with `eval.grader_sees=reasoning`, the reasoning too.
Citations from the chain of thought are checked against the spec. Outputs, written atomically:
`<run.dir>/eval/<name>.json` (per-category metrics with 95% bootstrap intervals, and mean ± sd over
samples when there are several) and `<run.dir>/eval/<name>.parquet` (every graded sample). The default
name carries the grading variant (`rayda.evaluation.grader.name_suffix`), so variants sit side by side.
A finished evaluation is not redone; one of the same name graded another way is an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from pathlib import Path

from rayda import io
from rayda.config import Recipe
from rayda.evaluation import grader
from rayda.evaluation.metrics import XSTEST_HUMAN_LABELS, Graded, format_metric, human_agreement, summarise
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


def generate(recipe: Recipe, jobs: list[tuple[str, list[EvalPrompt]]], progress: bool = True) -> list[list[str]]:
    """`eval.samples_per_prompt` completions per prompt of each `(model, items)`, from the rollout pool
    in one Ray Data pipeline (`actors/answerer.py` moves its engine from model to model): in each job,
    prompt i's sample j at i * samples + j, with the seed the run's seed plus that position."""
    import ray.data

    from rayda.actors.answerer import Answerer
    from rayda.engines.vllm_engine import EngineConfig
    from rayda.placement import data_pool_args, plan
    from rayda.ray_utils import init_ray

    init_ray(recipe.run)
    pool = recipe.pools.rollout
    plan({"rollout": pool}, ray.cluster_resources())
    cfg = EngineConfig(jobs[0][0], seed=recipe.run.seed, dtype=recipe.model.dtype,
                       gpu_memory_utilization=recipe.eval.gpu_memory_utilization, verbose=recipe.run.verbose)
    n = recipe.eval.samples_per_prompt
    rows = [{"model": model, "sample": i * n + j, "messages": json.dumps(list(it.prompt.messages))}
            for model, items in jobs for i, it in enumerate(items) for j in range(n)]
    rows = [{"index": k, **r} for k, r in enumerate(rows)]
    ds = ray.data.from_items(rows).map_batches(
        Answerer,
        fn_constructor_args=(cfg, recipe.eval.max_tokens, recipe.eval.temperature, recipe.run.seed),
        batch_size=recipe.eval.batch_size, batch_format="pyarrow", **data_pool_args(pool),
    )
    from tqdm import tqdm

    out: list[str | None] = [None] * len(rows)
    desc = "eval " + ", ".join(Path(model).name for model, _ in jobs)
    for row in tqdm(ds.iter_rows(), total=len(rows), desc=desc, disable=not progress):
        out[row["index"]] = row["completion"]
    starts = [0]
    for _, items in jobs:
        starts.append(starts[-1] + len(items) * n)
    return [out[a:b] for a, b in zip(starts, starts[1:])]  # type: ignore[misc]


def grade(spec, items: list[EvalPrompt], completions: list[str], judge=None, grades: list | None = None,
          samples: list[int] | None = None) -> tuple[list[Graded], list[dict]]:
    """Split, classify and check citations for each completion; the graded samples and their rows.

    `grades` (`rayda.evaluation.grader.Grade`, one per completion) come from the model grader and
    decide the behaviour; otherwise `judge` (a judge pool) or the classifier does. `samples` numbers
    each completion among its prompt's samples (default: all 0)."""
    from rayda.behaviour import classify
    from rayda.types import Completion, RewardRequest

    categories = set(spec.category_ids)
    splits = [split(c) for c in completions]
    answers = [s.answer if s.answer else c for s, c in zip(splits, completions)]
    samples = samples or [0] * len(items)
    if grades is not None:
        judge = None
        assert len(grades) == len(items), f"{len(grades)} grades for {len(items)} completions"
    judged = [i for i, it in enumerate(items) if judge is not None and it.label and it.category in categories]
    verdicts = {}
    if judged:
        reqs = [RewardRequest.of(Completion.from_text(items[i].prompt, completions[i])) for i in judged]
        for i, vs in zip(judged, judge.verdicts(reqs, seeds=[0] * len(reqs))):
            verdicts[i] = vs[0]
    graded, rows = [], []
    for i, (it, s, answer, text) in enumerate(zip(items, splits, answers, completions)):
        v, gr = verdicts.get(i), grades[i] if grades is not None else None
        if gr is not None:
            behaviour = gr.behaviour
        else:
            behaviour = (v.behaviour if v is not None and v.ok else None) if v is not None else classify(answer, spec)
        cites = tuple(spec.citations(s.cot, it.category)) if it.category in categories else ()
        style_ok = (bool(answer.strip()) and "<" not in answer) if behaviour == "safe_complete" else None
        g = Graded(it.id, it.category, it.label, behaviour, s.malformed, cites, style_ok, it.type, samples[i],
                   gr.harmful if gr else None, gr.error if gr else None)
        graded.append(g)
        rows.append({**g.as_row(), "prompt": it.prompt.user_text, "completion": text, "answer": answer, "cot": s.cot,
                     "judge_error": v.error if v is not None else None, **_grade_columns(gr)})
    return graded, rows


def _grade_columns(gr) -> dict:
    """The model grader's raw output and what it read, for audit (absent under the heuristic grader)."""
    return {} if gr is None else {"grader_raw": gr.raw, "grader_input": gr.input}


def model_grades(recipe: Recipe, ctx, requests: list[tuple], progress: bool = True) -> list:
    """`eval.grader=judge`: the recipe's llm or http judge grades each (messages, answer, cot) with the
    grading prompt, greedily and once, on the judge pool through Ray Data; a `Grade` per request, in order
    (a failed or unparseable grade is an error grade, never an exception)."""
    import ray.data
    from tqdm import tqdm

    from rayda.placement import data_pool_args, plan
    from rayda.ray_utils import init_ray

    chats = grader.grading_chats(requests, recipe.eval.grader_sees)
    init_ray(recipe.run)
    plan({"judge": recipe.pools.judge}, ray.cluster_resources())
    cfg = dataclasses.replace(recipe.judge, k=1, temperature=0.0)
    rows = [{"index": i, "chat": json.dumps(c)} for i, c in enumerate(chats)]
    ds = ray.data.from_items(rows).map_batches(
        grader.GradeWorker, fn_constructor_kwargs=dict(**ctx.judge_args({}, cfg), run_seed=recipe.run.seed),
        batch_size=recipe.eval.batch_size, batch_format="pyarrow", **data_pool_args(recipe.pools.judge),
    )
    out: list = [None] * len(rows)
    for row in tqdm(ds.iter_rows(), total=len(rows), desc="eval grader", disable=not progress):
        i = row["index"]
        out[i] = dataclasses.replace(grader.parse_grade(row["raw"], row["error"]), input=chats[i][-1]["content"])
    return out


def _write(out_dir: Path, name: str, rows: list[dict], summary: dict) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with io.atomic_path(out_dir / f"{name}.parquet") as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)
    io.atomic_write_json(out_dir / f"{name}.json", summary)  # last: its presence means "done"
    return out_dir / f"{name}.json"


@dataclasses.dataclass(frozen=True)
class Job:
    """One evaluation: `model` on `source` (default: `eval.prompts`) under `recipe`, reported as `name`."""

    recipe: Recipe
    model: str = "base"
    source: str | None = None
    name: str | None = None


@dataclasses.dataclass
class _Prepared:
    job: Job
    report: Path
    ctx: object = None
    path: str = ""
    items: list | None = None
    """The prompts; None when the report exists (nothing to do)."""
    seen: list | None = None
    """The prompts as the model sees them (with the spec, under `eval.spec_in_context`)."""


def run(recipe: Recipe, model: str = "base", source: str | None = None, name: str | None = None,
        progress: bool = True) -> Path:
    """Evaluate `model` on `source` (default: `eval.prompts`); returns the path of the JSON report."""
    return run_many([Job(recipe, model, source, name)], progress)[0]


def run_many(jobs: list[Job], progress: bool = True) -> list[Path]:
    """Several evaluations, the report path of each. Those whose generation settings agree
    (`_generation_key`) share one pipeline and one engine, which loads each next model's weights in
    place when only the weights differ; each report is then written as `run` writes it, in turn. A
    report that exists is not redone. Every job's inputs are checked before Ray starts."""
    prepared = [_prepare(job) for job in jobs]
    groups: dict[tuple, list[_Prepared]] = {}
    for p in prepared:
        if p.items is not None:
            groups.setdefault(_generation_key(p.job.recipe), []).append(p)
    for group in groups.values():
        t0 = time.time()
        recipe = group[0].job.recipe
        completions = generate(recipe, [(p.path, p.seen) for p in group], progress)
        for p, texts in zip(group, completions):
            _finish(p, texts, t0, progress)
    return [p.report for p in prepared]


def _generation_key(recipe: Recipe) -> tuple:
    """What `generate` reads from a recipe: jobs that agree on it can share a pipeline."""
    r, e = recipe.run, recipe.eval
    return (repr(r), repr(recipe.pools.rollout), recipe.model.dtype, e.samples_per_prompt, e.max_tokens, e.temperature,
            e.batch_size, e.gpu_memory_utilization)


def _prepare(job: Job) -> _Prepared:
    from rayda.check import require_sizes
    from rayda.context import RunContext

    recipe, model = job.recipe, job.model
    source = job.source or recipe.eval.prompts
    name = job.name or f"{Path(model).name if model not in ('base', 'sft', 'rl') else model}-{Path(source.split(':')[-1]).stem}" + ("-spec" * recipe.eval.spec_in_context)
    name = name + grader.name_suffix(recipe.eval) if job.name is None else name
    report = Path(recipe.run.dir) / "eval" / f"{name}.json"
    if report.exists():
        _same_variant(report, recipe)
        print(f"eval: {report} exists; skipping")
        return _Prepared(job, report)
    require_sizes(recipe, "model", "eval")
    ctx = RunContext(recipe)
    path = model_path(ctx, model)  # every input check before Ray starts
    items = load_eval_prompts(ctx, source)
    if recipe.judge.kind != "rubric":
        ctx.check_judge()
    seen = with_spec(ctx, items, path) if recipe.eval.spec_in_context else items
    return _Prepared(dataclasses.replace(job, source=source, name=name), report, ctx, path, items, seen)


def _finish(p: _Prepared, completions: list[str], t0: float, progress: bool) -> None:
    """Grade one job's completions and write its report (its `seconds`: since its pipeline started)."""
    recipe, ctx = p.job.recipe, p.ctx
    n = recipe.eval.samples_per_prompt
    samples = [j for _ in p.items for j in range(n)]
    items = [it for it in p.items for _ in range(n)]  # in generate's order: prompt i's sample j at i * n + j
    if recipe.eval.grader == "judge":
        requests = [(it.prompt.messages, *_answer_cot(text)) for it, text in zip(items, completions)]
        graded, rows = grade(ctx.spec, items, completions, grades=model_grades(recipe, ctx, requests, progress),
                             samples=samples)
    else:
        with _judge_pool(ctx, items) as judge:
            graded, rows = grade(ctx.spec, items, completions, judge, samples=samples)
    summary = summarise(graded, n_resamples=recipe.eval.n_resamples, seed=recipe.run.seed)
    summary["meta"] = {"model": p.job.model, "model_path": p.path, "prompts": p.job.source, "judge": recipe.judge.kind,
                       "temperature": recipe.eval.temperature, "spec_in_context": recipe.eval.spec_in_context,
                       "seconds": round(time.time() - t0, 1)}
    summary["meta"].update(_grading_meta(ctx, recipe))
    _write(p.report.parent, p.job.name, rows, summary)
    print(f"eval {p.job.name}: {_headline(summary)} -> {p.report}")


def _answer_cot(completion: str) -> tuple[str, str]:
    """The final answer (the whole completion when it has none apart) and the chain of thought."""
    s = split(completion)
    return s.answer or completion, s.cot


def _grading_meta(ctx, recipe: Recipe) -> dict:
    meta = {"grading": grader.variant(recipe.eval)}
    if recipe.eval.grader == "judge":
        meta.update(grader_model=ctx.judge_model, grader_prompt_hash=grader.prompt_hash())
    return meta


def _same_variant(path: Path, recipe: Recipe) -> None:
    """A finished eval is reused only when it was graded the way this one asks (an explicit `--name`
    could otherwise hand back the other variant's figures)."""
    had = json.loads(path.read_text()).get("meta", {}).get("grading") or grader.variant(Recipe().eval)
    want = grader.variant(recipe.eval)
    if had != want:
        raise ValueError(f"eval: {path} exists, graded with {had}, and this eval asks for {want}: "
                         "give it another --name (the default name tells the variants apart)")


def _headline(summary: dict) -> str:
    o = summary["overall"]
    names = ["behaviour_accuracy", "not_unsafe", "not_overrefuse"]
    if o["grader_error_rate"]["n"]:  # a model grader read the answers
        names += ["not_harmful", "grader_error_rate"]
    return ", ".join(f"{m} {format_metric(o[m])}" for m in names)


def with_spec(ctx, items: list[EvalPrompt], tokenizer: str | None = None) -> list[EvalPrompt]:
    """`eval.spec_in_context`: each prompt as gen-sft's generator sees it, `spec(category)` in the system
    message (`templates.generation_messages`); a prompt outside the spec's categories stays as it is."""
    from rayda.templates import generation_messages

    texts = ctx.spec_texts({it.category for it in items} & set(ctx.spec.category_ids), tokenizer)
    return [dataclasses.replace(it, prompt=dataclasses.replace(it.prompt, messages=tuple(generation_messages(
        it.prompt.messages, texts[it.category])))) if it.category in texts else it for it in items]


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


def grade_file(recipe: Recipe, path: str, name: str | None = None, progress: bool = True) -> Path:
    """`rayda eval --completions FILE`: grade completions produced elsewhere, without generating (with
    `eval.grader=judge`, by the recipe's model judge: a file with human labels then measures it)."""
    from rayda.behaviour import classify
    from rayda.check import require_sizes
    from rayda.context import RunContext

    ctx = RunContext(recipe)
    spec = ctx.spec
    rows = load_completions(path)
    name = name or f"completions-{Path(path).stem}{grader.name_suffix(recipe.eval, samples=False)}"
    grades = None
    if recipe.eval.grader == "judge":
        require_sizes(recipe, "eval")
        ctx.check_judge()
        grades = model_grades(recipe, ctx, [(({"role": "user", "content": r["prompt"]},), *_answer_cot(r["completion"]))
                                            for r in rows], progress)
    graded, out = [], []
    for n, row in enumerate(rows):
        s = split(row["completion"])
        answer = s.answer or row["completion"]
        gr = grades[n] if grades is not None else None
        behaviour = gr.behaviour if gr is not None else classify(answer, spec)
        raw_label = str(row.get("label") or "").lower()
        label = raw_label if raw_label in BEHAVIOURS else EXTERNAL_LABELS.get(raw_label)
        if label is None and "final_label" in row and row.get("type"):
            # XSTest v2 completion files: the unsafe prompts are exactly the `contrast_*` types
            label = "refuse" if str(row["type"]).startswith("contrast_") else "comply"
        category = str(row.get("category") or row.get("type") or "all")
        # A model that writes no <think> block is answering plainly, not malformed
        malformed = s.malformed if "<think>" in row["completion"] else None
        graded.append(Graded(str(row.get("id", n)), category, label, behaviour, malformed, (), None, row.get("type"),
                             0, gr.harmful if gr else None, gr.error if gr else None))
        extra = {} if gr is None else {"harmful_content": gr.harmful, "grader_error": gr.error, **_grade_columns(gr)}
        out.append({**row, "behaviour": behaviour, **extra})
    summary = summarise(graded, n_resamples=recipe.eval.n_resamples, seed=recipe.run.seed)
    summary["meta"] = {"completions": str(path), **_grading_meta(ctx, recipe)}
    if grades is None:
        summary["meta"]["classifier"] = "spec style markers, else free-form cues (rayda.behaviour.classify)"
    humans = [XSTEST_HUMAN_LABELS.get(str(row.get("final_label") or "").strip()) for row in rows]
    if rows and all(humans):  # XSTest v2 completion files carry human labels: measure the classifier on them
        summary["human_agreement"] = human_agreement([r["behaviour"] for r in out], humans,
                                                     recipe.eval.n_resamples, recipe.run.seed)
        agree = summary["human_agreement"]["comply_vs_not"]
        print(f"eval: agreement with the human final_label (comply vs not): {format_metric(agree)} over {len(rows)} rows")
    report = _write(Path(recipe.run.dir) / "eval", name, out, summary)
    print(f"eval: graded {len(out)} completions -> {report.with_suffix('.parquet')}")
    return report
