"""gen-sft throughput, generator utilisation, and the cost of k verdicts batched (n=k) vs k requests.

    python benchmarks/gen_sft.py [--prompts 32] [--k 3] [--model PATH]

Prints one JSON line:
- rows_per_s_1 / rows_per_s_2: prompts per second through the whole pipeline (engine start included)
  with 1 and 2 generator actors; rows_per_s_after_start_* counts from the first engine being ready,
  and speedup_2_over_1 is their ratio;
- busy_fraction_1 / busy_fraction_2: share of the generators' life after engine start spent generating;
- judge_batched_s / judge_separate_s / judge_separate_over_batched: k FILTER verdicts for the same
  requests as one request with n=k samples vs k separate requests, on one llm-judge engine, in this run.
The model is the tiny world's unless --model is given; all runs use the rubric judge so generation is
what is measured. It exits with an error, printing no figures, when a pipeline run had a judge error
or accepted no row, or when any timed llm-judge verdict failed: a ratio of failed verdicts means nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


JUDGE_MAX_MODEL_LEN = 2048


def pipeline(model: str, n_prompts: int, n_gen: int, root: Path, extra: list[str]) -> dict:
    from rayda.config import load_recipe
    from rayda.stages import gen_sft

    recipe = load_recipe("tiny", [
        f"run.dir={root / f'gen{n_gen}'}", f"model.policy={model}", f"prompts.limit={n_prompts}",
        f"pools.rollout.actors={n_gen}", "pools.judge.cpus_per_actor=0.5", "gen_sft.batch_size=8", *extra,
    ])
    return gen_sft.run(recipe, progress=False).metrics


def judge_cost(model: str, k: int, n_requests: int, token_budget) -> dict:
    from rayda.config import JudgeConfig
    from rayda.engines.vllm_engine import EngineConfig, VllmEngine
    from rayda.judges.llm import LLMJudge
    from rayda.config import load_recipe
    from rayda.context import RunContext
    from rayda.types import FilterRequest, Prompt

    ctx = RunContext(load_recipe("tiny", [f"spec.token_budget={'null' if token_budget is None else token_budget}"]))
    spec = ctx.spec
    texts = ctx.spec_texts(spec.category_ids, model)
    # The judge's prompt holds spec(category), the request, the reasoning and the answer: more than the
    # tiny model's 1024 positions, so the judge's context is 2048 (as tests/test_gen_sft_tinyworld.py's
    # llm judge).
    engine = VllmEngine(EngineConfig(model, structured_outputs=True, max_model_len=JUDGE_MAX_MODEL_LEN))
    reqs = []
    for i in range(n_requests):
        cat = spec.category_ids[i % len(spec.category_ids)]
        clause = spec.category(cat).clauses[0]
        p = Prompt(f"b{i}", ({"role": "user", "content": f"question {i} about {cat}"},), cat, clause.behaviour)
        reqs.append(FilterRequest(p, f"Clause {clause.id} applies. Decision: {clause.behaviour}.",
                                  spec.style_guide(clause.behaviour).example))
    out = {}
    for batched in (True, False, True, False):  # each twice, interleaved: the first pair warms up
        judge = LLMJudge(spec, texts, model, JudgeConfig(kind="llm", k=k, batched_k=batched, max_model_len=JUDGE_MAX_MODEL_LEN),
                         engine=engine)
        t0 = time.perf_counter()
        verdicts = judge.filter(reqs, k, list(range(len(reqs))))
        out[batched] = (time.perf_counter() - t0, [v.error for vs in verdicts for v in vs if not v.ok])
    errors = out[True][1] + out[False][1]
    if errors:
        sys.exit(f"gen_sft: {len(errors)} of {2 * k * n_requests} timed verdicts failed "
                 f"(first: {errors[0]}); no figures")
    return {
        "judge_k": k,
        "judge_requests": n_requests,
        "judge_batched_s": round(out[True][0], 3),
        "judge_separate_s": round(out[False][0], 3),
        "judge_separate_over_batched": round(out[False][0] / out[True][0], 3),
        "judge_errors": len(errors),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--model", default=None, help="policy/judge model path (default: the tiny world's)")
    ap.add_argument("--override", action="append", default=[], help="extra recipe overrides, key=value")
    args = ap.parse_args()

    from rayda.config import RunConfig, load_recipe
    from rayda.context import RunContext
    from rayda.ray_utils import init_ray

    recipe = load_recipe("tiny", args.override)
    model = args.model or RunContext(recipe).policy
    init_ray(RunConfig(num_cpus=4))
    line = {"benchmark": "gen_sft", "model": Path(model).name if args.model else "tinyworld", "prompts": args.prompts}
    with tempfile.TemporaryDirectory(prefix="rayda-bench-") as tmp:
        for n in (1, 2):
            m = pipeline(model, args.prompts, n, Path(tmp), args.override)
            if m["judge_errors"] or not m["accepted"]:
                sys.exit(f"gen_sft: with {n} generator(s), {m['judge_errors']} judge errors and "
                         f"{m['accepted']} of {m['prompts']} rows accepted; no figures")
            line.update({
                f"rows_per_s_{n}": round(m["rows_per_s"], 3),
                f"rows_per_s_after_start_{n}": round(m["rows_per_s_after_start"], 3),
                f"first_row_s_{n}": m["first_row_s"],
                f"busy_fraction_{n}": round(m["generator_busy_fraction"], 3),
                f"rows_by_actor_{n}": m["rows_by_actor"],
                f"tokens_per_s_{n}": round(m["tokens_generated"] / max(1e-9, m["pipeline_seconds"]), 1),
            })
    line["speedup_2_over_1"] = round(line["rows_per_s_after_start_2"] / max(1e-9, line["rows_per_s_after_start_1"]), 3)
    line.update(judge_cost(model, args.k, n_requests=16, token_budget=recipe.spec.token_budget))
    print(json.dumps(line, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
