"""The trie baseline, the paper's character metric, ggr's pick and blocks' new seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ggr_kv.core.prompts import encode_prompts
from ggr_kv.core.table import Table
from ggr_kv.reorder import reorder
from ggr_kv.reorder.metrics import block_hit_rate, paper_char_hit_rate

QUERY = "Is this beer worth buying?"


def beer_like(seed: int = 2, n: int = 300, n_beers: int = 12) -> Table:
    """Ratings of a few beers: a long name, low-cardinality ratings (4-13 values)."""
    rng = np.random.default_rng(seed)
    names = [f"Brewery {i} Imperial Stout Reserve Batch {i * 7}" for i in range(n_beers)]
    b = rng.integers(0, n_beers, n)
    return Table.from_frame(
        pd.DataFrame(
            {
                "overall": [f"{x}/20" for x in rng.integers(8, 21, n)],
                "taste": [f"{x}/10" for x in rng.integers(4, 11, n)],
                "palate": [f"{x}/5" for x in rng.integers(2, 6, n)],
                "appearance": [f"{x}/5" for x in rng.integers(2, 6, n)],
                "name": [names[i] for i in b],
                "style": [["Stout", "IPA", "Lager"][i % 3] for i in b],
            }
        )
    )


def rates(t: Table, plan) -> list[float]:
    return [block_hit_rate(t, plan, "llama3", b, QUERY) for b in (16, 32, 64)]


def test_trie_runs_rows_in_token_order_with_fields_as_given():
    t = beer_like(n=80)
    plan = reorder(t, "trie", tokenizer="llama3", query=QUERY).plan
    assert (plan.field_perm == np.arange(t.n_cols)).all()
    assert sorted(plan.row_order.tolist()) == list(range(t.n_rows))
    tokens, offsets = encode_prompts(t, plan, "llama3", QUERY)
    seqs = [tokens[offsets[i] : offsets[i + 1]].tolist() for i in range(t.n_rows)]
    assert seqs == sorted(seqs)  # a depth-first walk of the token trie
    ident = reorder(t, "original").plan
    for b in (16, 64):
        assert block_hit_rate(t, plan, "llama3", b, QUERY) >= block_hit_rate(
            t, ident, "llama3", b, QUERY
        )


def test_paper_char_metric_is_a_trie_over_earlier_rows():
    t = beer_like(n=60)
    for method in ("original", "ggr"):
        plan = reorder(t, method).plan
        texts = ["".join(t.cells[r, c] for c in cols) for r, cols in
                 zip(plan.row_order, plan.field_perm)]  # fmt: skip
        root: dict = {}
        hits = 0
        for s in texts:
            node, k = root, 0
            while k < len(s) and s[k] in node:
                node, k = node[s[k]], k + 1
            hits += k
            node = root
            for ch in s:
                node = node.setdefault(ch, {})
        assert paper_char_hit_rate(t, plan) == pytest.approx(hits / sum(map(len, texts)))


def test_ggr_no_longer_loses_blocks_to_the_papers_settings():
    # our value greedy alone splits each beer's rows over the 13-value ``overall`` before
    # the 4-value ratings; the paper's depth caps keep the ratings first and vLLM caches more
    t = beer_like()
    old = reorder(t, "ggr", pick=False).plan
    res = reorder(t, "ggr")
    paper = reorder(t, "ggr", preset="paper").plan
    assert res.info["pick"]["winner"] == "paper"
    new_r, old_r, paper_r = rates(t, res.plan), rates(t, old), rates(t, paper)
    assert all(a > b for a, b in zip(new_r, old_r))
    assert all(a >= b for a, b in zip(new_r, paper_r))


def test_blocks_at_least_every_seed_and_baseline():
    t = beer_like(n=200)
    for b in (16, 64):
        got = reorder(t, "blocks", tokenizer="llama3", block_size=b, query=QUERY)
        r = block_hit_rate(t, got.plan, "llama3", b, QUERY)
        for m, kn in [("ggr", {}), ("ggr", {"preset": "paper"}), ("sorted", {})]:
            assert r >= block_hit_rate(t, reorder(t, m, **kn).plan, "llama3", b, QUERY)
        trie = reorder(t, "trie", tokenizer="llama3", query=QUERY).plan
        assert r >= block_hit_rate(t, trie, "llama3", b, QUERY)
        assert {"ggr paper", "trie"} <= set(got.info["candidates"])
