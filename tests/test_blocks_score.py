"""The piece scorer equals the block-hash metric and plain recounts, for any plan.

`ggr_kv.reorder.blockscore` computes hits from fragment pieces without building prompts;
here it is compared with chained block hashes over whole-prompt tokens
(`ggr_kv.core.blocks`), with a dict recount of vLLM's rule, and with the token metric.
"""

from __future__ import annotations

import itertools
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggr_kv.core.blocks import block_hashes, unbounded_prefix_hits
from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.prompts import encode_prompts
from ggr_kv.core.table import Table
from ggr_kv.core.tokenizer import load_tokenizer
from ggr_kv.reorder.blockscore import BlockScorer, _lexsort_rows, lex_order
from ggr_kv.reorder.fragments import PieceSet, PromptPieces
from ggr_kv.reorder.metrics import block_hit_rate, plan_hits, token_prefix_hits

# values sharing leading words, so prompts share partial cells too
VALUES = ["", "a", "ab", "the cat", "the cat sat", "the dog", "Up", "x!", "12", "123", "é"]
NAMES = ["title", "genre", "t", "_id"]


@st.composite
def tables_and_plans(draw, max_rows: int = 10, max_cols: int = 4):
    m = draw(st.integers(1, max_cols))
    n = draw(st.integers(1, max_rows))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=m, max_size=m, unique=True))
    data = {c: draw(st.lists(st.sampled_from(VALUES), min_size=n, max_size=n)) for c in names}
    table = Table.from_frame(pd.DataFrame(data))
    rows = np.array(draw(st.permutations(range(n))))
    base = draw(st.permutations(range(m)))
    perms = np.array(
        draw(st.lists(st.one_of(st.just(base), st.permutations(range(m))), min_size=n, max_size=n))
    )
    return table, ReorderPlan(table.columns, rows, perms)


def dict_block_hits(seqs: list[list[int]], block_size: int) -> list[int]:
    """vLLM's rule with a dict of token-tuple prefixes: whole blocks, last token recomputed."""
    seen: set[tuple[int, ...]] = set()
    out = []
    for s in seqs:
        usable = (len(s) - 1) // block_size if s else 0
        k = 0
        while k < usable and tuple(s[: (k + 1) * block_size]) in seen:
            k += 1
        out.append(k * block_size)
        for b in range(len(s) // block_size):
            seen.add(tuple(s[: (b + 1) * block_size]))
    return out


@pytest.fixture(scope="module")
def llama3():
    return load_tokenizer("llama3")


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    tp=tables_and_plans(),
    block_size=st.sampled_from([1, 2, 3, 4, 16]),
    query=st.sampled_from(["", "Is it good?", "the cat"]),
)
def test_piece_scorer_equals_block_hashes_and_dict_recount(tp, block_size, query, llama3):
    table, plan = tp
    tokens, offsets = encode_prompts(table, plan, llama3, query)
    seqs = [tokens[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    by_hash = unbounded_prefix_hits(block_hashes(tokens, offsets, block_size))
    ph = BlockScorer(PromptPieces.build(table, llama3, query), block_size).plan_hits(plan)
    assert ph.block_hits.tolist() == by_hash.tolist() == dict_block_hits(seqs, block_size)
    assert ph.token_hits.tolist() == token_prefix_hits(tokens, offsets).tolist()
    assert ph.lengths.tolist() == [len(s) for s in seqs]


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(tp=tables_and_plans())
def test_sorted_hits_sort_in_token_order_with_previous_prompt_lcp(tp, llama3):
    table, plan = tp
    sc = BlockScorer(PromptPieces.build(table, llama3, "Q"), 4)
    order, lcp, lengths, _ = sc.sorted_hits(plan.row_order, plan.field_perm)
    tokens, offsets = encode_prompts(table, plan, llama3, "Q")
    seqs = [tokens[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    srt = [seqs[i] for i in order]
    assert srt == sorted(seqs)
    want = [0] + [len(os.path.commonprefix([a, b])) for a, b in itertools.pairwise(srt)]
    assert lcp.tolist() == want
    assert lengths.tolist() == [len(s) for s in srt]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tp=tables_and_plans(), data=st.data())
def test_pair_lcp_is_the_common_prefix_of_the_two_prompts(tp, data, llama3):
    table, plan = tp
    sc = BlockScorer(PromptPieces.build(table, llama3, "Q"), 4)
    tokens, offsets = encode_prompts(table, plan, llama3, "Q")
    seqs = [tokens[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    n = plan.n_rows
    a = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=12)))
    b = np.array(data.draw(st.lists(st.integers(0, n - 1), min_size=len(a), max_size=len(a))))
    r, fp = plan.row_order, plan.field_perm
    got = sc.pair_lcp(r[a], fp[a], r[b], fp[b])
    assert got.tolist() == [len(os.path.commonprefix([seqs[i], seqs[j]])) for i, j in zip(a, b)]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), max_size=8), min_size=1, max_size=30))
def test_lex_order_matches_python_sort(seqs):
    lens = [len(s) for s in seqs]
    offsets = np.r_[0, np.cumsum(lens)].astype(np.int64)
    tokens = np.array([t for s in seqs for t in s], dtype=np.int32)
    order, adj = lex_order(PieceSet(tokens, offsets))
    assert [seqs[i] for i in order] == sorted(seqs)
    srt = [seqs[i] for i in order]
    assert adj.tolist() == [0] + [
        len(os.path.commonprefix([a, b])) for a, b in itertools.pairwise(srt)
    ]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["movies", "beer"])
def test_fast_metrics_equal_whole_prompt_metrics_on_bundled_tables(name, llama3):
    from ggr_kv.datasets import load_dataset
    from ggr_kv.reorder import reorder

    ds = load_dataset(name)
    table = ds.table()
    query = ds.query(ds.query_types[0]).text
    for method in ("original", "sorted", "ggr"):
        plan = reorder(table, method, fds=list(ds.fds)).plan
        tokens, offsets = encode_prompts(table, plan, llama3, query)
        for bs in (16, 128):
            want = unbounded_prefix_hits(block_hashes(tokens, offsets, bs)).sum() / offsets[-1]
            assert block_hit_rate(table, plan, llama3, bs, query) == pytest.approx(want, abs=0)
        got = plan_hits(table, plan, llama3, 16, query)
        assert got.token_hits.tolist() == token_prefix_hits(tokens, offsets).tolist()


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda m: st.lists(st.lists(st.integers(0, 3), min_size=m, max_size=m), min_size=1,
                           max_size=40)
    ),
    st.randoms(use_true_random=False),
)
def test_row_sort_from_a_hint_equals_lexsort(rows, rnd):
    """Sorting rows from a guessed order gives `np.lexsort`'s order, ties in row order."""
    keys = np.array(rows, dtype=np.int64)
    want = _lexsort_rows(keys)
    assert want.tolist() == np.lexsort(keys.T[::-1]).tolist()
    n = len(rows)
    for hint in (list(range(n)), want.tolist()[::-1], rnd.sample(range(n), n)):
        got = _lexsort_rows(keys, np.array(hint, dtype=np.int64))
        assert got.tolist() == want.tolist()
