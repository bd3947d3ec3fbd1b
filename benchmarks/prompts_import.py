"""Near-duplicate grouping of `rayda prompts import`: MinHash LSH against exact all-pairs comparison.

    .venv/bin/python benchmarks/prompts_import.py [--n 2000] [--large 50000] [--seed 0]

Makes `--n` synthetic requests (word sequences over a 3,000-word vocabulary, 8 to 40 words), a third
of them in planted families of near-duplicates (one to three edits each: a word replaced, inserted
or dropped, or two words swapped), and groups them twice:
- the baseline: every pair compared exactly (word-trigram Jaccard >= the import's threshold), joined
  transitively: O(n^2), exact;
- `rayda.data.importers.near_duplicate_groups`: MinHash LSH candidates, each checked exactly.
It prints one JSON line: pair recall (of the pairs the baseline puts in one group, the share LSH also
does) and pair precision, how many baseline groups LSH reproduces exactly, the speed ratio, and the
LSH's throughput on `--large` texts. It exits with an error, printing no figures, when recall falls
below 0.95: a split that lets near-duplicates straddle it is the failure this guards against.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def synthetic(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    texts: list[str] = []
    while len(texts) < n:
        words = [rng.choice(vocab) for _ in range(rng.randint(8, 40))]
        texts.append(" ".join(words))
        if rng.random() < 0.1:  # a family of 2-5 edited copies
            for _ in range(rng.randint(2, 5)):
                w = list(words)
                for _ in range(rng.randint(1, 3)):  # several edits: many pairs land near the threshold
                    i = rng.randrange(len(w))
                    edit = rng.choice(("replace", "insert", "drop", "swap"))
                    if edit == "replace":
                        w[i] = rng.choice(vocab)
                    elif edit == "insert":
                        w.insert(i, rng.choice(vocab))
                    elif edit == "drop" and len(w) > 8:
                        del w[i]
                    else:
                        j = min(i + 1, len(w) - 1)
                        w[i], w[j] = w[j], w[i]
                texts.append(" ".join(w))
    return texts[:n]


def exact_groups(texts: list[str], threshold: float) -> list[int]:
    from rayda.data.importers import DisjointSets, normalise, shingles

    sets = [shingles(normalise(t)) for t in texts]
    groups = DisjointSets(len(texts))
    for i, j in itertools.combinations(range(len(texts)), 2):
        if len(sets[i] & sets[j]) / len(sets[i] | sets[j]) >= threshold:
            groups.join(i, j)
    return [groups.find(i) for i in range(len(texts))]


def same_group_pairs(groups: list[int]) -> set[tuple[int, int]]:
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    return {p for m in members.values() for p in itertools.combinations(sorted(m), 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--large", type=int, default=50000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from rayda.data.importers import NEAR_DUPLICATE, near_duplicate_groups

    texts = synthetic(args.n, args.seed)
    t = time.perf_counter()
    base = exact_groups(texts, NEAR_DUPLICATE)
    base_s = time.perf_counter() - t
    t = time.perf_counter()
    lsh = near_duplicate_groups(texts)
    lsh_s = time.perf_counter() - t
    want, got = same_group_pairs(base), same_group_pairs(lsh)
    recall = len(want & got) / len(want) if want else 1.0
    precision = len(want & got) / len(got) if got else 1.0
    if recall < 0.95:
        sys.exit(f"prompts_import: pair recall {recall:.3f} < 0.95 against exact all-pairs grouping")
    as_sets = lambda groups: {frozenset(i for i, g in enumerate(groups) if g == r) for r in set(groups)}  # noqa: E731
    base_sets, lsh_sets = as_sets(base), as_sets(lsh)
    multi = [s for s in base_sets if len(s) > 1]
    large = synthetic(args.large, args.seed + 1)
    t = time.perf_counter()
    near_duplicate_groups(large)
    large_s = time.perf_counter() - t
    print(json.dumps({
        "benchmark": "prompts_import", "n": args.n, "threshold": NEAR_DUPLICATE,
        "baseline_groups_with_duplicates": len(multi), "pairs_baseline": len(want), "pairs_lsh": len(got),
        "pair_recall": round(recall, 4), "pair_precision": round(precision, 4),
        "groups_reproduced": round(sum(s in lsh_sets for s in multi) / max(len(multi), 1), 4),
        "exact_s": round(base_s, 2), "lsh_s": round(lsh_s, 3), "exact_over_lsh": round(base_s / lsh_s, 1),
        "large_n": args.large, "large_s": round(large_s, 2), "large_texts_per_s": round(args.large / large_s),
    }))


if __name__ == "__main__":
    main()
