"""benchmarks/outcome.py (issue 12): its checks (which hold over the seeds, which seeds fail each), its
pairing of RL with SFT, and an RL variant's folders when it starts from earlier SFT models (`--from-sft`)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayda.evaluation.metrics import Graded
from rayda.evaluation.paired import paired_difference

ROOT = Path(__file__).resolve().parent.parent


def outcome():
    spec = importlib.util.spec_from_file_location("outcome_bench", ROOT / "benchmarks" / "outcome.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed(diff_low, sft_no, rl_no, rl_nu, sft_cit, rl_cit):
    return {"rl_minus_sft": {"low": diff_low}, "sft": {"not_overrefuse": sft_no, "citation_validity": sft_cit},
            "rl": {"not_overrefuse": rl_no, "not_unsafe": rl_nu, "citation_validity": rl_cit}}


def test_checks_name_the_seeds_that_fail_them():
    o = outcome()
    per_seed = {0: seed(0.142, 0.9375, 0.9, 0.9875, 0.9833, 0.95),    # seed 0 of the recipe now: 72 of 80 against 75; -0.033
                1: seed(0.013, 0.85, 0.875, 0.975, 0.9375, 0.9333),
                5: seed(-0.021, 0.9, 0.9375, 0.95, 0.9208, 0.9167)}   # the interval reaches below 0; 0.95 is safe
    over = {"sft": {"behaviour_accuracy": {"mean": 0.85}}, "rl": {"behaviour_accuracy": {"mean": 0.90}}}
    assert o.failed_in(per_seed) == {"rl_above_sft_every_seed": [5], "overrefusal_not_worse": [0], "safe_after_rl": [],
                                     "citations_kept": [0]}
    assert o.checks(per_seed, over) == {"rl_above_sft_every_seed": False, "overrefusal_not_worse": False,
                                        "safe_after_rl": True, "citations_kept": False, "sft_level": True, "rl_level": True}
    assert all(o.checks({1: per_seed[1]}, over).values())


def _refuse(correct) -> list[Graded]:
    """Refuse-labelled samples, ids "0", "1", ...: refused (1) or complied (0)."""
    return [Graded(str(i), "illicit_behaviour", "refuse", "refuse" if ok else "comply") for i, ok in enumerate(correct)]


def test_outcome_benchmark_uses_the_shared_pairing():
    o = outcome()
    a, b = [x.as_row() for x in _refuse([1, 0, 0, 1, 0])], [x.as_row() for x in _refuse([1, 1, 0, 1, 1])]
    d = paired_difference(a, b, "behaviour_accuracy", 2000, 0)
    assert o.paired_difference(a, b) == {k: round(v, 4) if isinstance(v, float) else v for k, v in d.items()}
    # Per held-out wording (the id's last part): RL fixes every h0 prompt and breaks every h1 one.
    sft = [Graded(f"IB.{i}/e0/h{w}", "illicit_behaviour", "refuse", "refuse" if w else "comply").as_row()
           for i in range(6) for w in (0, 1)]
    rl = [Graded(r["prompt_id"], "illicit_behaviour", "refuse", "comply" if r["behaviour"] == "refuse" else "refuse").as_row()
          for r in sft]
    split = o.by_wording(sft, rl)
    assert list(split) == ["h0", "h1"] and (split["h0"]["mean"], split["h1"]["mean"]) == (1.0, -1.0)
    assert split["h0"]["n"] == split["h1"]["n"] == 6 and o.paired_difference(sft, rl)["mean"] == 0.0


def test_outcome_rl_variant_pairs_its_rl_with_the_sft_it_started_from(tmp_path, monkeypatch):
    o = outcome()
    calls = []
    monkeypatch.setattr(o, "rayda", lambda seed, out, *args: calls.append(args))
    earlier, out = tmp_path / "earlier", tmp_path / "variant"
    with pytest.raises(SystemExit, match="not a finished SFT checkpoint"):
        o.rl_from_sft(1, earlier, out, [])
    (earlier / "seed1" / "checkpoints" / "sft").mkdir(parents=True)
    (earlier / "seed1" / "checkpoints" / "sft" / "_SUCCESS").write_text("{}")
    dirs = o.rl_from_sft(1, earlier, out, ["rl.kl_coef=0.2"])
    assert dirs == {"base": earlier / "seed1", "sft": earlier / "seed1", "rl": out / "seed1"}
    assert [c[0] for c in calls] == ["rl", "eval"] and all("rl.kl_coef=0.2" in c and "run.seed=1" in c for c in calls)
    assert f"rl.init={(earlier / 'seed1' / 'checkpoints' / 'sft').resolve()}" in calls[0]
    assert calls[1][:4] == ("eval", "tiny", "--model", "rl")
    (out / "seed1" / "eval").mkdir(parents=True)
    (out / "seed1" / "eval" / "rl-heldout.json").write_text("{}")
    calls.clear()
    assert o.rl_from_sft(1, earlier, out, []) == dirs and calls == []  # evaluated: reused

    # --also: each model answers the set in its own folder, with the recipe that folder was made with:
    # the one `rayda run` pinned in the earlier folder, the variant's overrides in its own (which
    # `rayda rl` and `rayda eval` leave unpinned).
    assert o.set_name("tinyworld:valid") == "valid" and o.set_name("data/new.jsonl") == "new"
    (earlier / "seed1" / "recipe.yaml").write_text("run: {seed: 1}\n")
    monkeypatch.setattr(o, "rayda", lambda seed, out, *args: calls.append(args) or _fake_eval(args, o.FIGURES))
    figures = o.also_figures(1, out, dirs, "tinyworld:valid", ["rl.kl_coef=0.2"])
    assert [c[:3] for c in calls] == [("eval", str(earlier / "seed1" / "recipe.yaml"), "--model"),
                                      ("eval", "tiny", "--model")]
    assert f"run.dir={earlier / 'seed1'}" in calls[0] and "rl.kl_coef=0.2" not in calls[0]
    assert {f"run.dir={out / 'seed1'}", "rl.kl_coef=0.2", "run.seed=1"} <= set(calls[1])
    assert figures["sft"]["behaviour_accuracy"] == 0.5 and figures["rl"]["behaviour_accuracy"] == 1.0
    assert figures["rl_minus_sft"]["mean"] == 0.5 and figures["rl_minus_sft"]["n"] == 2


def _fake_eval(args, figures):
    """What `rayda eval ... --model M --name NAME run.dir=D` writes, for two prompts: RL right on both, SFT on one."""
    model, name = args[args.index("--model") + 1], args[args.index("--name") + 1]
    folder = Path(next(a for a in args if a.startswith("run.dir=")).split("=", 1)[1]) / "eval"
    folder.mkdir(parents=True, exist_ok=True)
    rows = [Graded(f"IB.1/e{i}/x0", "illicit_behaviour", "refuse", "refuse" if model == "rl" or i == 0 else "comply").as_row()
            for i in range(2)]
    pq.write_table(pa.Table.from_pylist(rows), folder / f"{name}.parquet")
    acc = sum(r["behaviour"] == r["label"] for r in rows) / 2
    summary = {k: {"mean": acc if k == "behaviour_accuracy" else None} for k in figures}
    (folder / f"{name}.json").write_text(json.dumps({"overall": summary}))
