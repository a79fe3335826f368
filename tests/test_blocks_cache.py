"""Row orders under a finite KV cache, judged by the simulator (``ggr_kv.simulate``).

The claims of ``experiments/RESULTS-finite-cache.md``: a plan whose rows run in token
order keeps every unbounded-cache hit at every pool size; other row orders of the same
prompts lose hits as the pool shrinks; with ``kv_blocks`` the ``blocks`` method never
prefills more prompt tokens than its token order, and prefills fewer where it says so.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import shared_path

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.datasets import load_dataset
from ggr_kv.reorder import reorder
from ggr_kv.reorder.blockscore import BlockScorer
from ggr_kv.reorder.cacheaware import order_for_cache, simulate_pieces
from ggr_kv.reorder.fragments import PromptPieces

BLOCK = 16
ENGINE = {"max_num_seqs": 256, "max_num_batched_tokens": 8192, "output_len": 32}


def _setup(name: str):
    ds = load_dataset(name if not name.endswith(".csv") else shared_path(name))
    table = ds.table()
    query = ds.query(ds.query_types[0]).text
    fds = list(ds.fds) or None
    pieces = PromptPieces.build(table, "llama3", query)
    return ds, table, query, fds, pieces


@pytest.mark.slow
@pytest.mark.parametrize("name,pools", [("beer", [5697, 384, 26]), ("movies", [972, 31])])
def test_token_order_keeps_every_unbounded_hit_and_other_orders_lose(name, pools):
    _, table, query, fds, pieces = _setup(name)
    scorer = BlockScorer(pieces, BLOCK)
    plan = reorder(table, "blocks", fds=fds, tokenizer="llama3", block_size=BLOCK, query=query).plan
    unbounded = int(scorer.plan_hits(plan).block_hits.sum())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        others = {
            m: reorder(table, m, fds=fds if m != "original" else None).plan
            for m in ("original", "sorted", "ggr")
        }
    for kv in pools:
        got = simulate_pieces(pieces, plan, block_size=BLOCK, kv_blocks=kv, **ENGINE)
        assert got["hits"] == unbounded
        for p in others.values():
            other = simulate_pieces(pieces, p, block_size=BLOCK, kv_blocks=kv, **ENGINE)
            assert other["hits"] <= int(scorer.plan_hits(p).block_hits.sum())
            assert other["hits"] < got["hits"]
    # the original order of beer loses most of its hits in the smallest pool
    if name == "beer":
        small = simulate_pieces(
            pieces, others["original"], block_size=BLOCK, kv_blocks=26, **ENGINE
        )
        big = int(scorer.plan_hits(others["original"]).block_hits.sum())
        assert small["hits"] < 0.6 * big


def test_same_field_orders_in_another_row_order_lose_hits_in_a_small_pool():
    _, table, query, fds, pieces = _setup("movies")
    scorer = BlockScorer(pieces, BLOCK)
    plan = reorder(table, "blocks", fds=fds, tokenizer="llama3", block_size=BLOCK, query=query).plan
    shuffled = np.random.default_rng(0).permutation(plan.n_rows)
    other = ReorderPlan(plan.columns, plan.row_order[shuffled], plan.field_perm[shuffled])
    assert scorer.plan_hits(other).block_hits.sum() == scorer.plan_hits(plan).block_hits.sum()
    sim = dict(block_size=BLOCK, kv_blocks=100, **ENGINE)
    assert (
        simulate_pieces(pieces, other, **sim)["hits"] < simulate_pieces(pieces, plan, **sim)["hits"]
    )


def test_kv_blocks_never_prefills_more_than_token_order_and_less_where_reported():
    # RESULTS-finite-cache.md: products_sampled_labelled at 696 blocks, the reverse token
    # order prefills 3.9% fewer prompt tokens than the token order
    _, table, query, fds, pieces = _setup("products_sampled_labelled.csv")
    res = reorder(
        table,
        "blocks",
        fds=fds,
        tokenizer="llama3",
        block_size=BLOCK,
        query=query,
        kv_blocks=696,
        **ENGINE,
    )
    fc = res.info["finite_cache"]
    cands = fc["candidates"]
    assert fc["chosen"] == "reverse token order"
    tok, rev = cands["token order"], cands["reverse token order"]
    assert rev["hits"] == tok["hits"]  # both loss-free
    assert rev["computed_tokens"] < 0.97 * tok["computed_tokens"]
    got = simulate_pieces(pieces, res.plan, block_size=BLOCK, kv_blocks=696, **ENGINE)
    assert got == rev  # the plan returned is the one simulated
    choice = order_for_cache(pieces, res.plan, block_size=BLOCK, kv_blocks=2496, **ENGINE)
    assert (
        choice.candidates[choice.chosen]["computed_tokens"]
        <= (choice.candidates["token order"]["computed_tokens"])
    )
