"""Rendering SFT rows (chat template, loss mask, over-long rows) and the stage's input checks."""

from __future__ import annotations

import pytest
import torch

from rayda.data.sft import RenderReport, SftDataError, collate, render, render_text
from sft_fixtures import make_tiny_model, sft_rows, write_parquet


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from transformers import AutoTokenizer

    path = make_tiny_model(tmp_path_factory.mktemp("tiny") / "model")
    return path, AutoTokenizer.from_pretrained(path)


def test_render_masks_exactly_the_reasoning_and_answer(tiny):
    _, tok = tiny
    messages = sft_rows(1)[0]["messages"]
    ex = render(messages, tok, max_length=256)
    prompt_ids = tok.apply_chat_template(messages[:-1], add_generation_prompt=True, return_dict=False)
    n = len(prompt_ids)
    assert list(ex.input_ids[:n]) == list(prompt_ids)  # the prompt exactly as generation sees it
    assert ex.loss_mask == (0,) * n + (1,) * (len(ex.input_ids) - n)
    target = tok.decode(ex.input_ids[n:])
    last = messages[-1]
    assert target == f"<think>{last['reasoning_content']}</think>{last['content']}<|end|>"  # learns to stop
    assert ex.num_targets == len(ex.input_ids) - n


def test_template_without_reasoning_support_gets_inline_think(tiny):
    _, tok = tiny
    plain = tok.chat_template.replace("message.get('reasoning_content')", "false")
    tok2 = type(tok).from_pretrained(tiny[0])
    tok2.chat_template = plain
    messages = sft_rows(1)[0]["messages"]
    _, completion = render_text(messages, tok2)
    assert completion.startswith("<think>" + messages[-1]["reasoning_content"] + "</think>")


def test_overlong_rows_are_dropped_or_truncated_and_counted(tiny):
    _, tok = tiny
    rows = sft_rows(20)
    lengths = [len(render(r["messages"], tok, 10_000).input_ids) for r in rows]
    limit = sorted(lengths)[10]
    report = RenderReport()
    kept = [render(r["messages"], tok, limit, "drop", report=report) for r in rows]
    n_long = sum(x > limit for x in lengths)
    assert report.dropped == {"overlong": n_long} and report.kept == 20 - n_long
    assert sum(k is None for k in kept) == n_long
    report = RenderReport()
    kept = [render(r["messages"], tok, limit, "truncate", report=report) for r in rows]
    assert report.truncated == n_long and all(len(k.input_ids) <= limit for k in kept)
    report = RenderReport()
    assert render(rows[0]["messages"], tok, 3, "truncate", report=report) is None
    assert report.dropped == {"prompt_too_long": 1}


def test_rows_without_an_answer_are_errors(tiny):
    _, tok = tiny
    with pytest.raises(SftDataError, match="end on an assistant turn"):
        render([{"role": "user", "content": "hi"}], tok, 64)
    with pytest.raises(SftDataError, match="no content"):
        render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": ""}], tok, 64)


def test_loss_mask_through_the_model(tiny):
    """The issue's proof, on a real forward pass: relabelling a prompt token leaves the loss unchanged,
    relabelling an answer token changes it."""
    from transformers import AutoModelForCausalLM

    from rayda.algo.losses import next_token, sft_loss

    path, tok = tiny
    model = AutoModelForCausalLM.from_pretrained(path)
    ex = render(sft_rows(1)[0]["messages"], tok, 256)
    batch = collate([ex], tok.pad_token_id)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits, labels, mask = next_token(logits, batch["input_ids"], batch["loss_mask"])
    base = sft_loss(logits, labels, mask)[0].item()
    first_target = int(mask[0].nonzero()[0])
    prompt_pos, answer_pos = first_target - 2, first_target + 3
    for pos, same in ((prompt_pos, True), (answer_pos, False)):
        relabelled = labels.clone()
        relabelled[0, pos] = (labels[0, pos] + 1) % len(tok)
        loss = sft_loss(logits, relabelled, mask)[0].item()
        assert (loss == base) is same, (pos, loss, base)


def _recipe(tmp_path, model, **sft):
    from rayda.config import load_recipe

    return load_recipe("tiny", [f"run.dir={tmp_path}", f"model.policy={model}", *(f"sft.{k}={v}" for k, v in sft.items())])


def test_bad_input_fails_before_any_actor_starts(tiny, tmp_path):
    from transformers import AutoTokenizer

    from rayda.engines import ModelNotFound
    from rayda.stages.sft import load_data, policy_path, run

    path, tok = tiny
    with pytest.raises(FileNotFoundError, match="run `rayda gen-sft` first"):
        run(_recipe(tmp_path, path))
    empty = write_parquet([], tmp_path / "sft_data" / "accepted.parquet")
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.Table.from_pylist(sft_rows(1)).schema
    pq.write_table(schema.empty_table(), empty)
    with pytest.raises(SftDataError, match="has no rows"):
        run(_recipe(tmp_path, path))
    with pytest.raises(ModelNotFound, match="does not exist"):
        policy_path(_recipe(tmp_path, tmp_path / "no-such-model"))
    write_parquet(sft_rows(30), empty)
    with pytest.raises(SftDataError, match="none of the 30 rows is trainable"):
        load_data(_recipe(tmp_path, path, max_length=8), AutoTokenizer.from_pretrained(path))
    data = load_data(_recipe(tmp_path, path, max_length=100, heldout_fraction=0.2), tok)
    r = data.report
    assert r["rows"] == 30 and r["kept"] + r["dropped"].get("overlong", 0) == 30 and r["dropped"]["overlong"] > 0
    assert r["train"] + r["heldout"] == r["kept"] and r["heldout"] > 0


def test_stratify_orders_each_epoch_by_category_and_label(tiny, tmp_path):
    from rayda.data.sft import batch_indices
    from rayda.stages.sft import load_data

    path, tok = tiny
    rows = sft_rows(40)
    for i, r in enumerate(rows):  # a quarter of the rows in a second category: 4 strata
        r["category"] = "other" if i % 4 == 0 else "demo"
    data_path = write_parquet(rows, tmp_path / "sft_data" / "accepted.parquet")
    assert load_data(_recipe(tmp_path, path, max_length=512), tok).strata is None  # off by default
    data = load_data(_recipe(tmp_path, path, max_length=512, stratify="true", heldout_fraction=0.0), tok)
    by_id = {r["prompt_id"]: f"{r['category']}/{r['label']}" for r in rows}
    assert data.strata == [by_id[ex.prompt_id] for ex in data.train] and len(set(data.strata)) >= 3
    share = data.strata.count("other/" + rows[0]["label"]) / len(data.strata)
    # the last batch of every epoch holds each stratum in its share (within one), unlike a plain shuffle
    steps = len(data.train) // 8
    for epoch in range(3):
        last = batch_indices(len(data.train), (epoch + 1) * steps - 1, 8, seed=1, strata=data.strata)
        assert abs(sum(data.strata[i] == "other/" + rows[0]["label"] for i in last) - 8 * share) <= 1
    write_parquet([{k: v for k, v in r.items() if k != "label"} for r in rows], data_path)
    with pytest.raises(SftDataError, match=r"sft.stratify needs the column\(s\) \['label'\]"):
        load_data(_recipe(tmp_path, path, max_length=512, stratify="true"), tok)
