"""The ``blocks`` method: never below original/sorted/ggr by the block metric, valid plans,
FD groups kept together, what ``info`` records, and errors named before any work.

The block metric here is `ggr_kv.reorder.metrics.block_hit_rate` (tested against block
hashes of whole-prompt tokens in ``test_blocks_score.py`` and against vLLM in
``test_blocks_vllm.py``).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggr_kv.core.table import Table
from ggr_kv.core.tokenizer import load_tokenizer
from ggr_kv.reorder import METHODS, reorder
from ggr_kv.reorder.blockaware import refine
from ggr_kv.reorder.blockscore import BlockScorer
from ggr_kv.reorder.fragments import PromptPieces
from ggr_kv.reorder.metrics import block_hit_rate
from ggr_kv.reorder.units import build_units, column_scores, expand_perm, fixed_order

# cells of very different token lengths, some sharing leading words, so block
# boundaries fall in different places for different field orders
VALUES = [
    "",
    "x",
    "Fresh",
    "Rotten",
    "12",
    "the movie",
    "the movie was long and slow",
    "a long shared description of a product that many rows repeat " * 2,
    "Heat (1995)",
    "https://www.rottentomatoes.com/m/heat",
]


@st.composite
def tables(draw, max_rows: int = 40, max_cols: int = 5):
    m = draw(st.integers(1, max_cols))
    n = draw(st.integers(1, max_rows))
    data = {}
    for j in range(m):
        palette = draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=5, unique=True))
        data[f"c{j}"] = draw(st.lists(st.sampled_from(palette), min_size=n, max_size=n))
    return Table.from_frame(pd.DataFrame(data))


@pytest.fixture(scope="module")
def llama3():
    return load_tokenizer("llama3")


def _rates(table, tok, bs, query, fds=None, **knobs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plans = {m: reorder(table, m, fds=fds).plan for m in ("original", "sorted", "ggr")}
        res = reorder(table, "blocks", fds=fds, tokenizer=tok, block_size=bs, query=query, **knobs)
    rates = {m: block_hit_rate(table, p, tok, bs, query) for m, p in plans.items()}
    return rates, block_hit_rate(table, res.plan, tok, bs, query), res


@pytest.mark.slow
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(table=tables(), bs=st.sampled_from([1, 4, 16, 32]), query=st.sampled_from(["", "Q?"]))
def test_blocks_is_never_below_original_sorted_ggr(table, bs, query, llama3):
    rates, got, res = _rates(table, llama3, bs, query)
    assert got >= max(rates.values()) - 1e-12
    assert res.info["candidates"][res.info["winner"]]["block_hit_rate"] == pytest.approx(got)
    n, m = table.n_rows, table.n_cols
    assert sorted(res.plan.row_order.tolist()) == list(range(n))
    assert (np.sort(res.plan.field_perm, axis=1) == np.arange(m)).all()


@pytest.mark.slow
@pytest.mark.parametrize(
    "name,block_size,strict",
    [
        ("movies_sampled_labelled.csv", 16, True),
        ("products_sampled_labelled.csv", 16, True),
        ("contributions.csv", 16, True),
        ("contributions.csv", 128, True),
        ("posts_sampled_labelled.csv", 16, False),  # sorted and ggr already reach it
    ],
)
def test_blocks_on_real_samples(name, block_size, strict, llama3):
    # loaded as the benchmark loads them: declared FD groups, labels dropped, the first
    # query of the table's layout (benchmarks/RESULTS-blocks.md)
    from ggr_kv.datasets import load_dataset

    ds = load_dataset(shared_path(name))
    query = ds.query(ds.query_types[0]).text if ds.query_types else "Is this row relevant?"
    rates, got, _ = _rates(ds.table(), llama3, block_size, query, list(ds.fds) or None)
    if strict:
        assert got > max(rates.values())
    else:
        assert got >= max(rates.values()) - 1e-12


def test_fd_groups_stay_together(llama3):
    df = pd.read_csv(shared_path("movies_small.csv"), dtype=str, keep_default_na=False)
    fds = [("rotten_tomatoes_link", "movie_title", "movie_info")]
    res = reorder(df, "blocks", fds=fds, tokenizer=llama3)
    idx = {list(df.columns).index(c) for c in fds[0]}
    for row in res.plan.field_perm.tolist():
        pos = sorted(row.index(c) for c in idx)
        assert pos == list(range(pos[0], pos[0] + 3))
    assert res.info["fd_groups"] and set(res.info["fd_groups"][0]) == set(fds[0])


def test_refinement_never_lowers_the_hits(llama3):
    from ggr_kv.datasets import load_dataset

    ds = load_dataset("beer")
    table = ds.table()
    sc = BlockScorer(PromptPieces.build(table, llama3, "Q"), 16)
    units = build_units(table)
    n, u = units.codes.shape
    seed = np.broadcast_to(fixed_order(column_scores(units)).astype(np.int32), (n, u))
    before = sc.total_hits(None, expand_perm(units, seed))
    res = refine(sc, units, seed)
    assert res.hits > before  # beer's statistics order leaves room
    assert [lv["hits"] for lv in res.levels] == sorted(lv["hits"] for lv in res.levels)
    assert res.hits == sc.total_hits(None, expand_perm(units, res.unit_perm))
    # the sort it returns is the sort of its orders; given the seed's sort, same result
    want = sc.sorted_hits(None, expand_perm(units, res.unit_perm))
    assert [x.tolist() for x in res.sort] == [x.tolist() for x in want]
    again = refine(sc, units, seed, seed_sort=sc.sorted_hits(None, expand_perm(units, seed)))
    assert np.array_equal(again.unit_perm, res.unit_perm) and again.levels == res.levels


def test_info_says_what_won_and_every_candidates_rate(llama3):
    from ggr_kv.datasets import load_dataset

    ds = load_dataset("rag")
    res = reorder(ds.table(), "blocks", tokenizer=llama3, block_size=16, query="Q")
    info = res.info
    assert "blocks" in METHODS
    assert info["knobs"]["tokenizer"] == "llama3" and info["knobs"]["block_size"] == 16
    assert {"original", "sorted", "ggr", "fixed order"} <= set(info["candidates"])
    assert info["winner"] in info["candidates"]
    best = max(c["block_hit_rate"] for c in info["candidates"].values())
    assert info["candidates"][info["winner"]]["block_hit_rate"] == best
    assert {"tokenize", "rank_pieces", "fixed_order", "refine", "select"} <= set(info["timings"])
    assert info["fragment_tokenization"] is True
    json.dumps(info)  # run folders store it


def test_unknown_tokenizer_still_never_below_the_seeds(llama3):
    from ggr_kv.core.tokenizer import Tok

    odd = Tok("odd", llama3.bos_id, llama3._encode_batch, llama3._decode, pattern=None)
    table = Table.from_frame(
        pd.DataFrame({"a": ["Fresh", "Rotten", "Fresh"] * 4, "b": ["the movie"] * 12})
    )
    res = reorder(table, "blocks", tokenizer=odd, block_size=4)
    assert "not known to split" in res.info["note"]
    rates = {
        m: block_hit_rate(table, reorder(table, m).plan, llama3, 4)
        for m in ("original", "sorted", "ggr")
    }
    assert block_hit_rate(table, res.plan, llama3, 4) >= max(rates.values())


@pytest.mark.parametrize(
    "knobs,match",
    [
        ({"block_size": 0}, "block_size must be a positive integer"),
        ({"output_len": 5}, r"\['output_len'\] only matter with kv_blocks"),
        ({"kv_blocks": 1}, "kv_blocks must be >= 2"),
        ({"kv_blocks": 3, "block_size": 4}, r"kv_blocks=3: the longest prompt \(\d+ tokens"),
        ({"refine_seeds": -1}, "refine_seeds must be an integer >= 0"),
        pytest.param({"tokenizer": "no-such-tokenizer"}, "unknown tokenizer 'no-such-tokenizer'",
                     marks=pytest.mark.slow),  # asks the Hugging Face cache: imports transformers
    ],
)
def test_bad_knobs_are_named(knobs, match):
    with pytest.raises(ValueError, match=match):
        reorder(pd.DataFrame({"a": ["x", "y"]}), "blocks", **knobs)


def test_unknown_knob_lists_the_valid_ones():
    with pytest.raises(TypeError, match="kv_block.*valid knobs: tokenizer, block_size"):
        reorder(pd.DataFrame({"a": ["x"]}), "blocks", kv_block=10)


def test_callers_dataframe_is_unchanged():
    df = pd.DataFrame({"a": ["x", "y", "x", None], "b": [1.5, 2.0, None, 4.0]})
    before = df.copy(deep=True)
    reorder(df, "blocks", block_size=4)
    pd.testing.assert_frame_equal(df, before)
