"""Build (once) and cache the tiny world: tokenizer, pre-trained base model, labelled prompts, report.

A world is cached under `cache_root(cfg.cache_dir)/tinyworld/<hash>/`, where the hash covers the spec's
content hash, the TinyWorldConfig (minus where it is cached), the spec token budget and CODE_VERSION.
It is built in a temporary folder beside the target and renamed into place only when complete, under a
file lock, so racing processes neither corrupt it nor build it twice; `_SUCCESS` marks a finished world.

Layout: `model/` (model + tokenizer, safetensors, loadable by path with Auto* classes and by vLLM),
`prompts/train.jsonl`, `prompts/heldout.jsonl`, `report.json`, `_SUCCESS`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import random
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from rayda.behaviour import classify
from rayda.config import TinyWorldConfig, cache_root
from rayda.io import atomic_write_json, is_done, mark_success, read_jsonl, write_jsonl
from rayda.reasoning import split
from rayda.spec import BEHAVIOURS

CODE_VERSION = "tinyworld-5"
"""Bump when a change here, or in prompts/transcripts/tokenizer/model, changes what a build produces."""
SEED = 0
ASSISTANT_ONLY_LOSS = True
"""Pre-training loss on the response only (True) or on the user turn and the response (False); the
spec in a system message is never a target. See rayda/tinyworld/model.py for why."""
RESPONSE_RESERVE = 256
"""Tokens kept free for the user turn and the response when the spec budget is chosen automatically."""
EVAL_MAX_NEW_TOKENS = 128
EVAL_TEMPERATURE = 1.0
"""The report samples the base model at temperature 1.0 (its behaviour distribution, not its mode)."""
SPEC_TOKENIZER_WEIGHT = 4
"""Copies of each category's full spec text in the tokenizer's training corpus."""


@dataclass(frozen=True)
class TinyWorld:
    root: Path
    model_dir: Path
    train_path: Path
    heldout_path: Path
    report: dict

    def prompts(self, split: str = "train") -> list[dict]:
        return load_prompts(self, split)


def load_prompts(world: TinyWorld, split: str = "train") -> list[dict]:
    """The labelled prompt rows of `split`: `train`, `heldout`, or `rl` (every training subject in
    every training frame, `rayda.tinyworld.prompts.rl_rows`)."""
    from rayda.tinyworld.prompts import rl_rows

    paths = {"train": world.train_path, "heldout": world.heldout_path}
    if split == "rl":
        return rl_rows(read_jsonl(world.train_path))
    if split not in paths:
        raise ValueError(f"unknown tiny-world split {split!r}; expected 'train', 'heldout' or 'rl'")
    return read_jsonl(paths[split])


def for_recipe(recipe, spec) -> TinyWorld:
    """The tiny world a recipe names (`model.policy: tinyworld`): built once, then read from the cache."""
    return build(spec, recipe.tinyworld, spec_token_budget=recipe.spec.token_budget)


def cached_path(spec, cfg: TinyWorldConfig, spec_token_budget: int | None = None) -> Path:
    """Where the world of `spec` and `cfg` lives once built (finished when it holds `_SUCCESS`)."""
    return cache_root(cfg.cache_dir) / "tinyworld" / world_hash(spec, cfg, spec_token_budget)


def world_hash(spec, cfg: TinyWorldConfig, spec_token_budget: int | None = None) -> str:
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k != "cache_dir"}
    for key, default in (("report_prompts", None), ("extra_frames", 0)):
        if fields[key] == default:  # added later: the default keeps every existing world's hash
            del fields[key]
    blob = json.dumps(
        {"spec": spec.content_hash, "cfg": fields, "spec_token_budget": spec_token_budget, "code": CODE_VERSION},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _world(root: Path) -> TinyWorld:
    return TinyWorld(
        root=root,
        model_dir=root / "model",
        train_path=root / "prompts" / "train.jsonl",
        heldout_path=root / "prompts" / "heldout.jsonl",
        report=json.loads((root / "report.json").read_text()),
    )


def build(spec, cfg: TinyWorldConfig | None = None, spec_token_budget: int | None = None, progress: bool = True) -> TinyWorld:
    """The tiny world for `spec` and `cfg`: from the cache if built before, else built now (minutes)."""
    cfg = cfg or TinyWorldConfig()
    root = cached_path(spec, cfg, spec_token_budget)
    if is_done(root):
        return _world(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    with _lock(root.parent / f"{root.name}.lock"):
        if is_done(root):  # another process finished it while we waited
            return _world(root)
        if root.exists():  # a folder without _SUCCESS: left by a crash before the rename; never ours
            shutil.rmtree(root, ignore_errors=True)
        tmp = root.parent / f".tmp-{root.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            _build_into(tmp, spec, cfg, spec_token_budget, progress)
            os.rename(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _world(root)


@contextlib.contextmanager
def _lock(path: Path):
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---- the build -----------------------------------------------------------------------------------


def _build_into(out: Path, spec, cfg: TinyWorldConfig, spec_token_budget: int | None, progress: bool) -> None:
    import torch

    from rayda.tinyworld.model import Example, default_threads, encode, generate, make_model, pretrain, torch_threads
    from rayda.tinyworld.prompts import extra_frames, make_prompts
    from rayda.tinyworld.tokenizer import SYSTEM, chat_ids, train_tokenizer, unseen_share
    from rayda.tinyworld.transcripts import response

    t0 = time.time()
    rng = random.Random(SEED)
    prompts = make_prompts(spec)
    train_rows = prompts["train"]
    clauses = spec.clauses()
    clause_ids = sorted(clauses)

    # 1. Policy-free transcripts: a random training prompt and a random clause, whose behaviour the
    #    response then follows. With spec(category) in context the clause is one the spec shows (a
    #    reader of the spec who cannot yet tell which clause fits); without it, any clause of the spec.
    #    With `cfg.extra_frames`, half the transcripts ask their subject in a generated wording.
    by_category = {c.id: [cl.id for cl in c.clauses] for c in spec.categories}
    wordings = extra_frames(cfg.extra_frames, SEED)
    plan = []
    for _ in range(cfg.transcripts):
        row = rng.choice(train_rows)
        if wordings and rng.random() < 0.5:
            text = rng.choice(wordings).format(s=row["subject"])
            row = {**row, "messages": [{"role": "user", "content": text}]}
        with_spec = rng.random() < cfg.system_spec_fraction
        clause_id = rng.choice(by_category[row["category"]] if with_spec else clause_ids)
        behaviour = clauses[clause_id][1].behaviour
        cot, answer = response(spec, row, behaviour, clause_id, rng)
        plan.append((row, cot, answer, with_spec))

    # 2. Tokenizer on training text only: the spec, the training prompts and the transcripts.
    texts = [spec.compile(c.id) for c in spec.categories] * SPEC_TOKENIZER_WEIGHT
    texts += [r["messages"][0]["content"] for r in train_rows]
    texts += [t for _, cot, answer, _ in plan for t in (cot, answer)]
    texts += [frame.format(s="") for frame in wordings]
    tokenizer = train_tokenizer(texts, cfg.vocab_size, cfg.max_position)

    # 3. spec(category) as data generation will show it, within the token budget.
    def count(text: str) -> int:  # the backend tokenizer: no "longer than model_max_length" warning
        return len(tokenizer.backend_tokenizer.encode(text, add_special_tokens=False).ids)

    budget = spec_token_budget if spec_token_budget is not None else cfg.max_position - RESPONSE_RESERVE
    try:
        compiled = {c.id: spec.compile(c.id, token_budget=budget, count_tokens=count) for c in spec.categories}
    except ValueError as e:
        raise ValueError(
            f"tiny world: {e} (counted with the tiny world's {cfg.vocab_size}-token BPE); "
            f"raise spec.token_budget or shorten the spec"
        ) from None
    prefixes = {}
    for cat, text in compiled.items():
        prefixes[cat] = chat_ids(tokenizer, [{"role": "system", "content": text}])
        assert prefixes[cat][0] == tokenizer.convert_tokens_to_ids(SYSTEM)

    # 4. Tokenise the transcripts; spec-carrying ones are stored after their shared system prefix.
    examples, seen = [], set()
    for p in prefixes.values():
        seen.update(p)
    longest = 0
    for row, cot, answer, with_spec in plan:
        messages = list(row["messages"])
        if with_spec:
            messages = [{"role": "system", "content": compiled[row["category"]]}, *messages]
        ids, start = encode(tokenizer, messages, cot, answer)
        if not ASSISTANT_ONLY_LOSS:
            start = 0  # after the system message: the user turn is a target too (see model.py)
        longest = max(longest, len(ids))
        if with_spec:
            p = prefixes[row["category"]]
            if ids[: len(p)] != p:
                raise ValueError("chat template: the system message does not tokenise as a separate prefix")
            examples.append(Example(ids[len(p) :], max(0, start - len(p)), row["category"]))
        else:
            examples.append(Example(ids, start))
        seen.update(ids)
    if longest + 64 > cfg.max_position:
        raise ValueError(f"tiny world: a transcript needs {longest} tokens; max_position is {cfg.max_position}")
    heldout_ids = [chat_ids(tokenizer, r["messages"], add_generation_prompt=True) for r in prompts["heldout"]]
    unseen = unseen_share(seen, heldout_ids)

    # 5. Pre-train.
    threads = default_threads()
    with torch_threads(threads):
        model = make_model(cfg, tokenizer, seed=SEED)
        n_params = sum(p.numel() for p in model.parameters())
        t_train = time.time()
        stats = pretrain(model, examples, prefixes, cfg.pretrain_steps, cfg.batch_size, cfg.lr, SEED, progress)
        train_seconds = time.time() - t_train

        # 6. Save, then measure the base model on the held-out prompts WITHOUT the spec.
        model_dir = out / "model"
        model.save_pretrained(model_dir, safe_serialization=True)
        tokenizer.save_pretrained(model_dir)
        write_jsonl(out / "prompts" / "train.jsonl", train_rows)
        write_jsonl(out / "prompts" / "heldout.jsonl", prompts["heldout"])
        t_eval = time.time()
        heldout_rows = prompts["heldout"][: cfg.report_prompts]
        texts = generate(
            model,
            tokenizer,
            [r["messages"] for r in heldout_rows],
            max_new_tokens=EVAL_MAX_NEW_TOKENS,
            temperature=EVAL_TEMPERATURE,
            seed=SEED,
            progress=progress,
        )
        eval_seconds = time.time() - t_eval
        # ... and on training prompts WITH spec(category), as data generation sees them.
        gen_rows = train_rows[::4][: cfg.report_prompts]
        with_spec = generate(
            model,
            tokenizer,
            [[{"role": "system", "content": compiled[r["category"]]}, *r["messages"]] for r in gen_rows],
            max_new_tokens=EVAL_MAX_NEW_TOKENS,
            temperature=EVAL_TEMPERATURE,
            seed=SEED,
            progress=progress,
        )
    scores = score(spec, heldout_rows, texts)
    spec_scores = score(spec, gen_rows, with_spec)
    report = {
        "code_version": CODE_VERSION,
        "spec_hash": spec.content_hash,
        "config": dataclasses.asdict(cfg),
        "spec_token_budget": budget,
        "spec_tokens": {cat: len(p) for cat, p in prefixes.items()},
        "build_seconds": round(time.time() - t0, 2),
        "pretrain_seconds": round(train_seconds, 2),
        "pretrain_tokens_per_s": round(stats["tokens"] / max(train_seconds, 1e-9)),
        "pretrain": stats,
        "eval_seconds": round(eval_seconds, 2),
        "parameters": n_params,
        "vocab_size": len(tokenizer),
        "train_prompts": len(train_rows),
        "heldout_prompts": len(prompts["heldout"]),
        "transcripts": len(examples),
        "unseen_heldout_token_share": round(unseen, 4),
        "eval": {"split": "heldout", "with_spec": False, "temperature": EVAL_TEMPERATURE, **scores},
        "eval_with_spec": {"split": "train[::4]", "with_spec": True, "temperature": EVAL_TEMPERATURE, **spec_scores},
        "samples": texts[:3],
        "torch": torch.__version__,
        "torch_threads": threads,
    }
    atomic_write_json(out / "report.json", report)
    mark_success(out, {"hash": out.name, "code_version": CODE_VERSION})


def score(spec, rows: list[dict], texts: list[str]) -> dict:
    """Format, behaviour and citation figures of `texts` (one completion per row of `rows`).

    - well_formed: `reasoning.split` accepts the completion.
    - consistent: well formed, cites a clause, and the decision stated in the reasoning matches the
      answer's style (the strict check data generation filters on).
    - behaviour_accuracy: among well-formed completions, answer behaviour (`behaviour.classify`) == label.
    - citation_valid: among well-formed completions, the first cited clause exists and belongs to the
      prompt's category.
    """
    from rayda.tinyworld.transcripts import stated_decision

    n = len(texts)
    ok = correct = cited_ok = consistent = 0
    by_behaviour = {b: 0 for b in BEHAVIOURS}
    for row, text in zip(rows, texts):
        s = split(text)
        if not s.ok:
            continue
        ok += 1
        b = classify(s.answer, spec)
        by_behaviour[b] += 1
        correct += b == row["label"]
        cites = spec.citations(s.cot, row["category"])
        cited_ok += bool(cites) and cites[0].exists and cites[0].in_category
        consistent += bool(cites) and stated_decision(s.cot) == b
    return {
        "n": n,
        "well_formed": round(ok / n, 4) if n else 0.0,
        "consistent": round(consistent / n, 4) if n else 0.0,
        "behaviour_accuracy": round(correct / ok, 4) if ok else 0.0,
        "citation_valid": round(cited_ok / ok, 4) if ok else 0.0,
        "behaviour_counts": by_behaviour,
    }
