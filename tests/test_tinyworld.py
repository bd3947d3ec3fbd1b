"""The tiny world: prompts, transcripts, tokenizer, a small build (cached), and loading the saved model.

The build here is deliberately small (a few dozen pre-training steps) so the file stays fast on two
cores; the full-size default world is measured by benchmarks/tinyworld.py and used only by the vLLM test.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter

import pytest

from rayda.behaviour import classify
from rayda.config import TinyWorldConfig
from rayda.reasoning import split
from rayda.spec import BEHAVIOURS
from rayda.tinyworld.prompts import FRAMES_PER_SUBJECT, HELDOUT_FRAMES, TRAIN_FRAMES, make_prompts
from rayda.tinyworld.transcripts import response, stated_decision


@pytest.fixture(scope="module")
def prompts(spec):
    return make_prompts(spec)


@pytest.fixture(scope="module")
def small_world(spec, tmp_path_factory):
    from rayda.tinyworld.build import build

    cfg = TinyWorldConfig(
        transcripts=600, pretrain_steps=60, batch_size=16, lr=2e-3, cache_dir=str(tmp_path_factory.mktemp("twcache")),
        report_prompts=24,  # the report's spec-carrying samples were 3/4 of this build's time
    )
    t = time.time()
    world = build(spec, cfg, progress=False)
    return world, cfg, time.time() - t


# ---- prompts -------------------------------------------------------------------------------------


def test_prompt_splits_are_disjoint_by_frame_and_cover_every_clause(spec, prompts):
    train, heldout = prompts["train"], prompts["heldout"]
    assert {r["frame"] for r in train}.isdisjoint({r["frame"] for r in heldout})
    assert {r["messages"][0]["content"] for r in train}.isdisjoint({r["messages"][0]["content"] for r in heldout})
    n_examples = sum(len(cl.examples) for c in spec.categories for cl in c.clauses)
    assert len(train) == n_examples * FRAMES_PER_SUBJECT
    assert len(heldout) == n_examples * len(HELDOUT_FRAMES)
    # every training frame is used, for every behaviour: a frame says nothing about the clause
    for b in ("comply", "refuse", "safe_complete"):
        assert {r["frame"] for r in train if r["label"] == b} == {f"t{i}" for i in range(len(TRAIN_FRAMES))}
    every = set(spec.clauses())
    assert {r["clause_id"] for r in train} == every == {r["clause_id"] for r in heldout}
    ids = [r["id"] for r in train + heldout]
    assert len(ids) == len(set(ids))
    clauses = spec.clauses()
    for r in train + heldout:
        category, clause = clauses[r["clause_id"]]
        assert r["category"] == category.id and r["label"] == clause.behaviour
        assert r["messages"] == [{"role": "user", "content": r["messages"][0]["content"]}]
    # held-out frames' wording never appears in a training prompt
    for frame in HELDOUT_FRAMES:
        head, tail = (part.strip(" ?.") for part in frame.split("{s}"))
        assert not any(r["messages"][0]["content"].startswith(head) for r in train)
        assert not any(head in t for t in TRAIN_FRAMES)


def test_prompt_ids_are_stable(spec):
    assert [r["id"] for r in make_prompts(spec)["train"]] == [r["id"] for r in make_prompts(spec)["train"]]


# ---- transcripts ---------------------------------------------------------------------------------


def test_transcripts_state_a_decision_matching_the_answer_style(spec, prompts):
    rng = random.Random(0)
    clause_ids = sorted(spec.clauses())
    seen = Counter()
    for _ in range(300):
        row = rng.choice(prompts["train"])
        b, cid = rng.choice(BEHAVIOURS), rng.choice(clause_ids)
        cot, answer = response(spec, row, b, cid, rng)
        assert stated_decision(cot) == b
        assert classify(answer, spec) == b
        assert [c.clause_id for c in spec.citations(cot, row["category"])] == [cid]
        assert row["subject"] in cot
        assert split(f"<think>{cot}</think>{answer}").ok
        seen[answer] += 1
    assert len(seen) >= 9  # small variations, not one fixed answer per style


# ---- tokenizer -----------------------------------------------------------------------------------


def test_tokenizer_round_trip_and_chat_template(small_world):
    from transformers import AutoTokenizer

    world, cfg, _ = small_world
    tok = AutoTokenizer.from_pretrained(world.model_dir)
    assert len(tok) == cfg.vocab_size
    text = "how do i spot a phishing email? Clause IB.4 applies. Déjà vu \u2014 ok!"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    for t in ("<think>", "</think>", "<|user|>", "<|assistant|>", "<|end|>", "<|system|>"):
        assert len(tok.encode(t, add_special_tokens=False)) == 1, t
    messages = [
        {"role": "system", "content": "SPEC"},
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "ANSWER", "reasoning_content": "COT"},
    ]
    rendered = tok.apply_chat_template(messages, tokenize=False)
    assert rendered == "<|system|>SPEC<|end|><|user|>hello<|end|><|assistant|><think>COT</think>ANSWER<|end|>"
    prompt = tok.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|system|>SPEC<|end|><|user|>hello<|end|><|assistant|>"
    ids = tok.apply_chat_template(messages, tokenize=True, return_dict=False)
    prompt_ids = tok.apply_chat_template(messages[:2], tokenize=True, add_generation_prompt=True, return_dict=False)
    assert ids[: len(prompt_ids)] == prompt_ids
    # the reasoning tags survive skip_special_tokens (vLLM's default); the role tokens do not
    assert tok.decode(ids, skip_special_tokens=True) == "SPEChello<think>COT</think>ANSWER"
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<|pad|>"


def test_heldout_tokens_were_seen_in_training(small_world):
    world, _, _ = small_world
    assert world.report["unseen_heldout_token_share"] < 0.03


# ---- the build -----------------------------------------------------------------------------------


def test_build_report_and_files(small_world):
    world, cfg, _ = small_world
    r = world.report
    for key in ("build_seconds", "parameters", "vocab_size", "unseen_heldout_token_share", "eval"):
        assert key in r
    assert 2_000_000 < r["parameters"] < 6_000_000
    assert r["vocab_size"] == cfg.vocab_size
    for key in ("well_formed", "behaviour_accuracy", "citation_valid"):
        assert 0.0 <= r["eval"][key] <= 1.0
    assert (world.root / "_SUCCESS").exists()
    assert list(world.model_dir.glob("*.safetensors"))
    assert len(world.prompts("train")) == r["train_prompts"] and len(world.prompts("heldout")) == r["heldout_prompts"]
    with pytest.raises(ValueError):
        world.prompts("test")


def test_second_build_is_a_cache_hit(spec, small_world):
    from rayda.tinyworld.build import build, world_hash

    world, cfg, _ = small_world
    t = time.time()
    again = build(spec, cfg, progress=False)
    assert time.time() - t < 1.0
    assert again == world
    # the cache key ignores where the cache lives, but not the content of the config
    assert world_hash(spec, dataclasses.replace(cfg, cache_dir="/elsewhere")) == world.root.name
    assert world_hash(spec, dataclasses.replace(cfg, pretrain_steps=61)) != world.root.name
    assert world_hash(spec, dataclasses.replace(cfg, report_prompts=25)) != world.root.name
    assert world_hash(spec, dataclasses.replace(cfg, extra_frames=5)) != world.root.name
    assert world.report["eval"]["n"] == world.report["eval_with_spec"]["n"] == 24
    assert not list(world.root.parent.glob(".tmp-*"))


def test_extra_frames_are_new_wordings_that_share_nothing_with_held_out_ones():
    """Pre-training wordings (`tinyworld.extra_frames`): deterministic, none a training frame, none
    sharing two consecutive words with a held-out frame, so held-out accuracy still measures wording
    no stage saw."""
    from rayda.tinyworld.prompts import _bigrams, extra_frames

    frames = extra_frames(300)
    assert frames == extra_frames(300) and len(set(frames)) == 300 and extra_frames(0) == ()
    held = set().union(*map(_bigrams, HELDOUT_FRAMES))
    assert held and all(f.count("{s}") == 1 and f not in TRAIN_FRAMES and not _bigrams(f) & held for f in frames)
    assert ("best", "way") in held and ("explain", "how") in held
    with pytest.raises(ValueError, match="tinyworld.extra_frames=100000: at most"):
        extra_frames(100000)


def test_too_small_spec_budget_fails_with_a_clear_message(spec, tmp_path):
    from rayda.tinyworld.build import build

    cfg = TinyWorldConfig(transcripts=50, pretrain_steps=1, batch_size=2, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="token_budget"):
        build(spec, cfg, spec_token_budget=20, progress=False)
    assert not list((tmp_path / "tinyworld").glob(".tmp-*"))


def test_saved_model_loads_by_path_and_generates(small_world):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    world, _, _ = small_world
    tok = AutoTokenizer.from_pretrained(world.model_dir)
    model = AutoModelForCausalLM.from_pretrained(world.model_dir)
    assert model.config.tie_word_embeddings
    row = world.prompts("heldout")[0]
    ids = tok.apply_chat_template(row["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=40, do_sample=False)
    new = out[0, ids["input_ids"].shape[1] :]
    assert len(new) > 0
    assert isinstance(tok.decode(new, skip_special_tokens=True), str)


def test_small_world_learns_the_format(small_world):
    """Even 60 steps teach the tags; the full world (benchmarks/tinyworld.py) reaches >= 0.9."""
    world, _, _ = small_world
    assert world.report["eval"]["well_formed"] >= 0.25


# ---- vLLM ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_default_world_generates_well_formed_text_in_vllm(tiny_world, spec):
    """The default tiny world loads in vLLM (CPU build here) and writes well-formed responses."""
    vllm = pytest.importorskip("vllm")

    llm = vllm.LLM(
        model=str(tiny_world.model_dir),
        dtype="float32",
        enforce_eager=True,
        max_model_len=1024,
        kv_cache_memory_bytes=256 * 2**20,
        seed=0,
    )
    rows = tiny_world.prompts("heldout")[:64]
    params = vllm.SamplingParams(temperature=0.7, max_tokens=160, seed=0)  # as the tiny recipe's gen-sft samples
    outs = llm.chat([r["messages"] for r in rows], params, use_tqdm=False)
    texts = [o.outputs[0].text for o in outs]
    ok = [split(t).ok for t in texts]
    assert sum(ok) / len(ok) >= 0.8, texts[:3]
    styles = {classify(split(t).answer, spec) for t in texts if split(t).ok}
    assert len(styles) >= 2


def test_rl_split_asks_every_training_subject_in_every_training_frame(spec, prompts):
    from rayda.tinyworld.prompts import rl_rows

    rl = rl_rows(prompts["train"])
    subjects = {r["id"].rsplit("/", 1)[0] for r in prompts["train"]}
    assert len(rl) == len(subjects) * len(TRAIN_FRAMES) and len({r["id"] for r in rl}) == len(rl)
    by_id = {r["id"]: r for r in rl}
    for r in prompts["train"]:  # the SFT prompts are part of it, unchanged
        assert by_id[r["id"]] == r
    heldout_texts = {r["messages"][0]["content"] for r in prompts["heldout"]}
    assert not heldout_texts & {r["messages"][0]["content"] for r in rl}


def test_rl_wide_adds_new_wordings_per_subject_and_none_of_the_held_out_ones(spec, prompts):
    from rayda.data.prompts import read_rows
    from rayda.tinyworld.prompts import HELDOUT_FRAMES, RL_WIDE_EXTRA, _bigrams, rl_rows

    rl, wide = rl_rows(prompts["train"]), read_rows("tinyworld:rl_wide", spec)[1]
    assert len(wide) == len(rl) // len(TRAIN_FRAMES) * (len(TRAIN_FRAMES) + RL_WIDE_EXTRA)
    assert [r for r in wide if r["frame"].startswith("t")] == rl and len({r["id"] for r in wide}) == len(wide)
    extra = [r for r in wide if r["frame"].startswith("x")]
    held = set().union(*(_bigrams(f) for f in HELDOUT_FRAMES))
    per_subject: dict[str, set] = {}
    for r in extra:
        wording = r["messages"][0]["content"].replace(r["subject"], "{s}", 1)
        assert "{s}" in wording and wording not in TRAIN_FRAMES and not _bigrams(wording) & held, wording
        per_subject.setdefault(r["id"].rsplit("/", 1)[0], set()).add(wording)
    assert all(len(v) == RL_WIDE_EXTRA for v in per_subject.values())  # no wording twice for one subject
    assert len({frozenset(v) for v in per_subject.values()}) > 1  # a different draw per subject
    assert read_rows("tinyworld:rl_wide", spec)[1] == wide  # deterministic


def test_rl_cue_asks_each_subject_in_wordings_with_the_specs_comply_words_and_shares_no_word_pair_with_an_eval_set(spec, prompts):
    """`rl_cue` = `rl` plus CUE_PER_SUBJECT wordings per subject carrying a word that begins at least
    two comply examples and more of them than other ones; none shares two consecutive words with a
    held-out or `valid` wording, so both evaluation sets stay unseen."""
    from rayda.data.prompts import read_rows
    from rayda.tinyworld.prompts import CUE_PER_SUBJECT, HELDOUT_FRAMES, _bigrams, cue_verbs, rl_rows

    verbs = cue_verbs(spec)
    assert {"learn", "understand", "explain"} <= set(verbs) and not {"make", "write"} & set(verbs)
    cue = read_rows("tinyworld:rl_cue", spec)[1]
    assert [r for r in cue if r["frame"].startswith("t")] == rl_rows(prompts["train"])
    added = [r for r in cue if r["frame"].startswith("c")]
    assert len(added) == len({r["subject"] for r in prompts["train"]}) * CUE_PER_SUBJECT
    evaluated = [r["messages"][0]["content"].replace(r["subject"], "{s}", 1)
                 for r in (*prompts["heldout"], *read_rows("tinyworld:valid", spec)[1])]
    taken = set().union(*(_bigrams(f) for f in (*evaluated, *HELDOUT_FRAMES, *TRAIN_FRAMES)))
    per_subject: dict[str, set] = {}
    for r in added:
        wording = r["messages"][0]["content"].replace(r["subject"], "{s}", 1)
        assert "{s}" in wording and any(v in wording.split() for v in verbs), wording
        assert not _bigrams(wording) & taken, wording
        per_subject.setdefault(r["subject"], set()).add(wording)
    assert all(len(v) == CUE_PER_SUBJECT for v in per_subject.values())
    assert {r["label"] for r in added} == {"comply", "refuse", "safe_complete"}
    assert read_rows("tinyworld:rl_cue", spec)[1] == cue  # deterministic
    assert read_rows("tinyworld:train_cue", spec)[1] == prompts["train"] + added  # SFT's prompts with them
    one = read_rows("tinyworld:train_cue1", spec)[1][len(prompts["train"]):]  # each subject's first cue wording
    assert [r["subject"] for r in one] == list(per_subject) and all(r in added for r in one)
    assert all(r == next(a for a in added if a["id"].rsplit("/", 1)[0] == r["id"].rsplit("/", 1)[0]) for r in one)
    mix = read_rows("tinyworld:train_mix", spec)[1]  # train's size: half its wordings, half cue wordings
    assert len(mix) == len(prompts["train"]) and {r["frame"] for r in mix if r["frame"].startswith("t")} == {
        r["frame"] for r in prompts["train"]}
    assert [r for r in mix if r["frame"].startswith("c")] == [r for r in added if r["frame"] in {
        m["frame"] for m in mix if m["subject"] == r["subject"]}]
    assert all(sorted(m["frame"][0] for m in mix if m["subject"] == s) == ["c", "c", "t", "t"] for s in per_subject)


def test_valid_split_is_the_generated_wordings_of_training_subjects_and_nothing_any_stage_trains_or_evaluates_on(spec, prompts):
    from rayda.data.prompts import read_rows

    valid = read_rows("tinyworld:valid", spec)[1]
    wide = read_rows("tinyworld:rl_wide", spec)[1]
    assert valid == [r for r in wide if r["frame"].startswith("x")] and valid
    text = lambda rows: {r["messages"][0]["content"] for r in rows}  # noqa: E731
    for name in ("train", "rl", "heldout"):
        assert not text(valid) & text(read_rows(f"tinyworld:{name}", spec)[1]), name
    assert {r["subject"] for r in valid} == {r["subject"] for r in prompts["train"]}


def test_pretraining_threads_follow_the_load_now_not_the_last_minutes(monkeypatch):
    """`default_threads` reads the cores busy now: a core spinning in another process counts at once
    (the 1-minute load average would still show the quiet minute before), and the override wins."""
    import subprocess
    import sys

    from rayda.tinyworld.model import busy_cores, default_threads

    monkeypatch.delenv("RAYDA_TORCH_THREADS", raising=False)
    monkeypatch.setattr("os.getloadavg", lambda: (0.0, 0.0, 0.0))  # a quiet last minute
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert busy_cores() >= 0.7
    finally:
        spin.kill()
        spin.wait()
    monkeypatch.setenv("RAYDA_TORCH_THREADS", "3")
    assert default_threads() == 3
