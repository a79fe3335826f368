"""Metrics against plain recounts written straight from their definitions."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ggr_kv.core.blocks import block_hashes, to_csr, unbounded_prefix_hits
from ggr_kv.core.plan import PlanError, ReorderPlan
from ggr_kv.core.prompts import build_prompts, encode_prompts
from ggr_kv.core.table import Table
from ggr_kv.core.tokenizer import load_tokenizer
from ggr_kv.reorder.metrics import (
    Score,
    block_hit_rate,
    char_hit_rate,
    phc,
    phc_per_row,
    score,
    token_hit_rate,
    token_prefix_hits,
)

# few distinct values, so that equal cells (and prefixes) are common; some are prefixes of
# others, some need JSON escaping
VALUES = ["", "a", "ab", "abc", "Up", "Heat", 'say "hi"', "back\\slash", "Ünï ✓", "a,\nb"]
NAMES = ["title", "genre", "t", "col with space", 'q"k', "ü"]
QUERY = "Is this review positive?"
INSTRUCTION = "Answer from the data."


@st.composite
def tables_and_plans(draw, max_rows: int = 8, max_cols: int = 4):
    m = draw(st.integers(1, max_cols))
    n = draw(st.integers(1, max_rows))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=m, max_size=m, unique=True))
    data = {c: draw(st.lists(st.sampled_from(VALUES), min_size=n, max_size=n)) for c in names}
    table = Table.from_frame(pd.DataFrame(data))
    row_order = draw(st.permutations(range(n)))
    base = draw(st.permutations(range(m)))
    # mostly one shared field order (so leading cells can match), sometimes another one
    perms = draw(
        st.lists(st.one_of(st.just(base), st.permutations(range(m))), min_size=n, max_size=n)
    )
    return table, ReorderPlan(table.columns, np.array(row_order), np.array(perms))


def direct_phc_per_row(table: Table, plan: ReorderPlan) -> list[int]:
    """Paper Eq. 2, one cell at a time: squared lengths of the leading equal cells."""
    out, prev = [], None
    for slot, r in enumerate(plan.row_order):
        cells = [(table.columns[j], table.cells[r][j]) for j in plan.field_perm[slot]]
        hit = 0
        if prev is not None:
            for cur, before in zip(cells, prev):
                if cur != before:  # same column AND same value
                    break
                hit += len(cur[1]) ** 2
        out.append(hit)
        prev = cells
    return out


@pytest.fixture(scope="module")
def llama3():
    return load_tokenizer("llama3")


# -- PHC ------------------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(tables_and_plans())
def test_phc_equals_direct_recount(tp):
    table, plan = tp
    expected = direct_phc_per_row(table, plan)
    assert phc_per_row(table, plan).tolist() == expected
    assert phc(table, plan) == sum(expected)


def test_phc_of_a_small_table_by_hand():
    df = pd.DataFrame(
        {"title": ["Up", "Up", "Heat", "Up"], "genre": ["Animation"] * 2 + ["Crime", "Animation"]}
    )
    table = Table.from_frame(df)
    plan = ReorderPlan.identity(table)
    # row 1 repeats both cells of row 0; rows 2 and 3 differ from their predecessor at once
    assert phc_per_row(table, plan).tolist() == [0, 2**2 + 9**2, 0, 0]
    # sorted so the two other "Up" rows follow each other: rows 0,1,3 then 2
    sorted_plan = ReorderPlan(table.columns, np.array([0, 1, 3, 2]), plan.field_perm)
    assert phc(table, sorted_plan) == 2 * (2**2 + 9**2)


def test_equal_values_in_different_columns_do_not_match():
    table = Table.from_frame(pd.DataFrame({"x": ["same", "same"], "y": ["same", "same"]}))
    swapped = ReorderPlan(table.columns, np.array([0, 1]), np.array([[0, 1], [1, 0]]))
    assert phc(table, swapped) == 0
    assert phc(table, ReorderPlan.identity(table)) == 2 * len("same") ** 2


def test_metrics_refuse_a_plan_of_another_table():
    table = Table.from_frame(pd.DataFrame({"a": ["1", "2"], "b": ["3", "4"]}))
    other = Table.from_frame(pd.DataFrame({"a": ["1", "2", "3"], "b": ["3", "4", "5"]}))
    with pytest.raises(PlanError, match="3 rows"):
        phc(table, ReorderPlan.identity(other))
    with pytest.raises(PlanError, match="3 rows"):
        char_hit_rate(table, ReorderPlan.identity(other))


# -- characters -----------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(tables_and_plans(), st.sampled_from(["", QUERY]))
def test_char_hit_rate_equals_commonprefix_recount(tp, query):
    table, plan = tp
    texts = build_prompts(table, plan, query, INSTRUCTION)
    shared = sum(len(os.path.commonprefix([a, b])) for a, b in zip(texts[1:], texts[:-1]))
    expected = shared / sum(map(len, texts))
    assert char_hit_rate(table, plan, query, INSTRUCTION) == pytest.approx(expected, abs=1e-12)


def test_char_hit_rate_with_long_shared_values():
    # common prefixes far longer than the first bisection step, inside one cell
    long = "x" * 5000
    df = pd.DataFrame({"a": [long + "1", long + "2", long + "2", "y"], "b": ["k", "k", "j", "k"]})
    table = Table.from_frame(df)
    plan = ReorderPlan.identity(table)
    texts = build_prompts(table, plan, QUERY)
    shared = sum(len(os.path.commonprefix([a, b])) for a, b in zip(texts[1:], texts[:-1]))
    assert char_hit_rate(table, plan, QUERY) == pytest.approx(shared / sum(map(len, texts)))


# -- tokens ---------------------------------------------------------------------------------
token_seqs = st.lists(st.lists(st.integers(0, 3), max_size=12), min_size=1, max_size=12)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(token_seqs)
def test_token_prefix_hits_equal_longest_prefix_with_any_earlier_prompt(seqs):
    expected = [
        max((len(os.path.commonprefix([s, e])) for e in seqs[:i]), default=0)
        for i, s in enumerate(seqs)
    ]
    tokens, offsets = to_csr(seqs)
    assert token_prefix_hits(tokens, offsets).tolist() == expected


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(tp=tables_and_plans(max_rows=6, max_cols=3))
def test_token_hit_rate_on_real_tokens(tp, llama3):
    table, plan = tp
    tokens, offsets = llama3.encode_batch(build_prompts(table, plan, QUERY))
    seqs = [tokens[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    shared = sum(
        max((len(os.path.commonprefix([s, e])) for e in seqs[:i]), default=0)
        for i, s in enumerate(seqs)
    )
    expected = shared / sum(map(len, seqs))
    assert token_hit_rate(table, plan, llama3, QUERY) == pytest.approx(expected, abs=1e-12)


# -- blocks ---------------------------------------------------------------------------------
def direct_block_hits(seqs: list[list[int]], block_size: int) -> list[int]:
    """vLLM's rule with a dict of token-tuple prefixes: whole blocks, last token recomputed."""
    seen: dict[tuple[int, ...], int] = {}
    hits = []
    for i, s in enumerate(seqs):
        usable = (len(s) - 1) // block_size if s else 0
        k = 0
        while k < usable and tuple(s[: (k + 1) * block_size]) in seen:
            k += 1
        hits.append(k * block_size)
        for b in range(len(s) // block_size):  # cache this prompt's full blocks afterwards
            seen.setdefault(tuple(s[: (b + 1) * block_size]), i)
    return hits


@settings(max_examples=40, deadline=None)
@given(tp=tables_and_plans(max_rows=6, max_cols=3), block_size=st.sampled_from([1, 2, 3, 5, 16]))
def test_block_hit_rate_equals_dict_recount(tp, block_size, llama3):
    table, plan = tp
    tokens, offsets = llama3.encode_batch(build_prompts(table, plan, QUERY))
    seqs = [tokens[offsets[i] : offsets[i + 1]].tolist() for i in range(len(offsets) - 1)]
    expected = sum(direct_block_hits(seqs, block_size)) / sum(map(len, seqs))
    got = block_hit_rate(table, plan, llama3, block_size, QUERY)
    assert got == pytest.approx(expected, abs=1e-12)


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(token_seqs, st.integers(1, 5))
def test_block_hits_never_exceed_whole_blocks_before_the_last_token(seqs, block_size):
    tokens, offsets = to_csr(seqs)
    hits = unbounded_prefix_hits(block_hashes(tokens, offsets, block_size))
    n = np.diff(offsets)
    assert (hits <= np.maximum(n - 1, 0) // block_size * block_size).all()
    assert hits.tolist() == direct_block_hits(seqs, block_size)


@pytest.mark.parametrize("block_size", [1, 4, 16])
def test_identical_prompts_hit_all_but_the_last_block(block_size, llama3):
    table = Table.from_frame(pd.DataFrame({"a": ["same row"] * 5, "b": ["again"] * 5}))
    plan = ReorderPlan.identity(table)
    _, offsets = encode_prompts(table, plan, llama3, QUERY)
    n = int(np.diff(offsets)[0])  # every prompt has the same length
    per_prompt = (n - 1) // block_size * block_size
    expected = 4 * per_prompt / (5 * n)  # the first prompt hits nothing
    assert block_hit_rate(table, plan, llama3, block_size, QUERY) == pytest.approx(expected)
    # the token rate has no blocks and no last-token rule: the 4 repeats count in full
    assert token_hit_rate(table, plan, llama3, QUERY) == pytest.approx(4 / 5)


# -- score ----------------------------------------------------------------------------------
def test_score_agrees_with_the_single_metrics(llama3):
    df = pd.DataFrame(
        {
            "title": ["Up", "Up", "Heat", "Up", "Heat"],
            "review": ["fun", "touching", "tense", "lovely", "long"],
            "genre": ["Animation", "Animation", "Crime", "Animation", "Crime"],
        }
    )
    table = Table.from_frame(df)
    plan = ReorderPlan(table.columns, np.array([0, 1, 3, 2, 4]), np.tile([0, 2, 1], (5, 1)))
    s = score(table, plan, query=QUERY, tokenizer=llama3, block_size=4)
    assert isinstance(s, Score)
    assert (s.rows, s.columns) == (5, 3)
    assert s.phc == phc(table, plan)
    assert s.char_hit_rate == pytest.approx(char_hit_rate(table, plan, QUERY))
    assert s.token_hit_rate == pytest.approx(token_hit_rate(table, plan, llama3, QUERY))
    assert s.block_hit_rate == pytest.approx(block_hit_rate(table, plan, llama3, 4, QUERY))
    texts = build_prompts(table, plan, QUERY)
    assert s.total_chars == sum(map(len, texts))
    assert s.prompt_tokens == int(np.diff(llama3.encode_batch(texts)[1]).sum())
    assert s.block_size == 4 and s.tokenizer == "llama3"
    for rate in (s.char_hit_rate, s.token_hit_rate, s.block_hit_rate):
        assert 0.0 <= rate <= 1.0
    assert json.loads(json.dumps(s.to_dict())) == s.to_dict()


def test_score_without_tokenizer_leaves_token_fields_empty():
    table = Table.from_frame(pd.DataFrame({"a": ["x", "x"]}))
    s = score(table, ReorderPlan.identity(table), query=QUERY)
    assert s.tokenizer is None and s.prompt_tokens is None
    assert s.token_hit_rate is None and s.block_hit_rate is None
    assert s.phc == 1


def test_score_takes_a_tokenizer_name():
    table = Table.from_frame(pd.DataFrame({"a": ["x", "x", "y"]}))
    plan = ReorderPlan.identity(table)
    by_name = score(table, plan, tokenizer="llama3")
    by_object = score(table, plan, tokenizer=load_tokenizer("llama3"))
    assert by_name == by_object
    assert by_name.block_size == 16  # vLLM's GPU default when none is given
