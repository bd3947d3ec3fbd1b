"""One resolved run: what every stage needs from a Recipe, resolved in one place.

    ctx = RunContext(recipe)
    ctx.spec                        the loaded spec (`spec.path`, else the spec shipped with rayda)
    ctx.policy / ctx.judge_model    loadable model paths or hub names (`tinyworld` -> the tiny world's)
    ctx.prompts()                   the labelled prompts `prompts.source` names, validated
    ctx.spec_texts(cats, tok)       `spec(category)` within `spec.token_budget` tokens of a tokenizer
    ctx.judge_args(spec_texts)      the arguments of a judge actor (`rayda.actors.judge.JudgeWorker`)
    ctx.reward_args(spec_texts)     ... of RL's reward actors: the judge, or the preference model (`reward.kind`)

Nothing here starts Ray or an engine. The tiny world's model is built (or read from its cache) only
when a model is `tinyworld`; its prompt sets come from the spec and need no build. Every stage and the CLI go through this
class, so a model, a prompt set or the judge is resolved the same way everywhere.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from rayda.config import Recipe
from rayda.spec import default_spec_dir, load_spec


def resolve_spec_path(path: str) -> Path:
    """A spec path as given, else relative to the spec shipped with rayda (so `specs` works anywhere)."""
    p = Path(path)
    if p.exists():
        return p
    shipped = default_spec_dir().parent / path
    return shipped if shipped.exists() else p


class RunContext:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe
        self.spec = load_spec(resolve_spec_path(recipe.spec.path))

    # ---- models ----------------------------------------------------------------------------------

    @cached_property
    def world(self):
        """The tiny world (built once per machine, then read from its cache)."""
        from rayda.tinyworld.build import for_recipe

        return for_recipe(self.recipe, self.spec)

    def model(self, name: str, what: str) -> str:
        """A recipe model string as something an engine loads; a missing local path fails here."""
        from rayda.engines import resolve_model

        return resolve_model(str(self.world.model_dir) if name == "tinyworld" else name, what)

    @cached_property
    def policy(self) -> str:
        return self.model(self.recipe.model.policy, "model.policy")

    @cached_property
    def judge_model(self) -> str | None:
        """The judge's weights (llm), the endpoint's model name (http), or None (rubric)."""
        from rayda import judges

        kind = self.recipe.judge.kind
        judges.check_kind(kind)
        if judges.needs_model(kind):
            return self.model(self.recipe.model.judge, "model.judge")
        if kind == "http":
            return self.recipe.judge.api_model or self.recipe.model.judge
        return None

    # ---- prompts and spec ------------------------------------------------------------------------

    def prompts(self, source: str | None = None) -> list:
        """The prompts of `source` (default `prompts.source`), labelled where the judge needs labels."""
        from rayda import judges
        from rayda.data.prompts import load_prompts

        return load_prompts(source or self.recipe.prompts.source, self.spec, limit=self.recipe.prompts.limit,
                            require_label=judges.needs_label(self.recipe.judge.kind))

    def spec_texts(self, categories, tokenizer: str | None = None) -> dict[str, str]:
        """`spec(category)` for each category, within `spec.token_budget` tokens of `tokenizer`'s
        tokenization (default: the policy's); whitespace tokens when there is no budget."""
        budget, count = self.recipe.spec.token_budget, None
        if budget is not None:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(tokenizer or self.policy)
            count = lambda s: len(tok.encode(s, add_special_tokens=False))  # noqa: E731
        return {c: self.spec.compile(c, budget, count) for c in sorted(set(categories))}

    # ---- the judge -------------------------------------------------------------------------------

    def check_judge(self) -> None:
        """The judge kind, its settings and its model, checked before any actor starts."""
        from rayda.check import require_sizes

        require_sizes(self.recipe, "judge")
        self.judge_model  # noqa: B018 - resolves (and checks) the model path

    def judge_args(self, spec_texts: dict[str, str], cfg=None) -> dict:
        """What a judge actor (`rayda.actors.judge.JudgeWorker`) is built from, in the pool it runs in:
        an llm judge starts its engine there, never on the driver."""
        return {"cfg": cfg or self.recipe.judge, "spec": self.spec, "spec_texts": spec_texts, "model": self.judge_model}

    def pm_model(self) -> str:
        """The preference model RL is rewarded by (`reward.model`, else `<run.dir>/checkpoints/pm`); a
        folder without `_SUCCESS` fails here."""
        from rayda.io import is_done

        path = Path(self.recipe.reward.model or Path(self.recipe.run.dir) / "checkpoints" / "pm")
        if not is_done(path):
            raise FileNotFoundError(f"reward.kind=pm: the preference model {path} is not finished (no _SUCCESS): "
                                    "run `rayda pm` first or set reward.model")
        return str(path.resolve())

    def reward_args(self, spec_texts: dict[str, str]) -> dict:
        """RL's reward actors (`JudgeWorker`): the recipe's judge, or with `reward.kind=pm` the preference
        model as a judge of kind `pm` (deterministic: one verdict per request)."""
        if self.recipe.reward.kind != "pm":
            return self.judge_args(spec_texts)
        from dataclasses import replace

        return {"cfg": replace(self.recipe.judge, kind="pm", k=1), "spec": self.spec, "spec_texts": spec_texts,
                "model": self.pm_model()}
