"""The one serializer: field order kept, valid JSON, batch equals one-by-one."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.prompts import (
    DEFAULT_INSTRUCTION,
    build_prompt,
    build_prompts,
    prompt_head,
    prompt_parts,
)
from ggr_kv.core.table import Table

QUERY = "Is the review positive?"
_DATA = re.compile(r"\n\nData: (\{.*\})\n\nAnswer:\Z", re.DOTALL)


def row_json(prompt: str) -> str:
    match = _DATA.search(prompt)
    assert match, prompt
    return match.group(1)


def test_reversed_field_order_gives_reversed_keys():
    table = Table.from_frame(
        pd.DataFrame({"zeta": ["1", "2"], "alpha": ["3", "4"], "mid": ["5", "6"]})
    )
    plan = ReorderPlan(table.columns, np.array([1, 0]), np.array([[2, 1, 0], [0, 1, 2]]))
    first, second = build_prompts(table, plan, QUERY)
    # slot 0 runs original row 1 with the reversed order; slot 1 runs row 0 as given
    assert list(json.loads(row_json(first)).items()) == [
        ("mid", "6"),
        ("alpha", "4"),
        ("zeta", "2"),
    ]
    assert list(json.loads(row_json(second)).items()) == [
        ("zeta", "1"),
        ("alpha", "3"),
        ("mid", "5"),
    ]
    # never sorted: the text itself lists the keys in plan order
    assert row_json(first).index('"mid"') < row_json(first).index('"alpha"')


def test_prompt_layout():
    table = Table.from_frame(pd.DataFrame({"title": ["Up"]}))
    (prompt,) = build_prompts(table, ReorderPlan.identity(table), QUERY, "Be brief.")
    assert prompt == (
        'Be brief.\n\nQuery: Is the review positive?\n\nData: {"title": "Up"}\n\nAnswer:'
    )
    assert prompt.startswith(prompt_head("Be brief.", QUERY))


text_values = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12
)


@st.composite
def tables_and_plans(draw):
    m = draw(st.integers(1, 4))
    n = draw(st.integers(1, 6))
    names = draw(st.lists(text_values, min_size=m, max_size=m, unique=True))
    data = {c: draw(st.lists(text_values, min_size=n, max_size=n)) for c in names}
    table = Table.from_frame(pd.DataFrame(data))
    row_order = draw(st.permutations(range(n)))
    perms = draw(st.lists(st.permutations(range(m)), min_size=n, max_size=n))
    return table, ReorderPlan(table.columns, np.array(row_order), np.array(perms))


@pytest.mark.slow
@settings(max_examples=150, deadline=None)
@given(tp=tables_and_plans(), query=text_values, instruction=text_values)
def test_any_text_makes_valid_json_in_plan_order(tp, query, instruction):
    # quotes, backslashes, control characters, emoji and other scripts, in names and values
    table, plan = tp
    prompts = build_prompts(table, plan, query, instruction)
    assert len(prompts) == table.n_rows
    for slot, prompt in enumerate(prompts):
        assert prompt.startswith(prompt_head(instruction, query))
        obj = json.loads(prompt[len(prompt_head(instruction, query)) - 1 : -len("\n\nAnswer:")])
        r = plan.row_order[slot]
        expected = [(table.columns[j], table.cells[r][j]) for j in plan.field_perm[slot]]
        assert list(obj.items()) == expected


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(tp=tables_and_plans(), query=text_values)
def test_build_prompts_equals_build_prompt_per_row(tp, query):
    table, plan = tp
    one_by_one = [build_prompt(DEFAULT_INSTRUCTION, query, pairs) for pairs in plan.apply(table)]
    assert build_prompts(table, plan, query) == one_by_one


def test_prompt_parts_are_the_fragments_of_each_prompt():
    df = pd.DataFrame({"a": ["x", 'q"', "x"], "b": ["ü", "", "z"]})
    table = Table.from_frame(df)
    plan = ReorderPlan(table.columns, np.array([2, 0, 1]), np.array([[1, 0], [0, 1], [1, 0]]))
    parts = prompt_parts(table, plan)
    for prompt, row in zip(build_prompts(table, plan, QUERY), parts):
        body = row_json(prompt)
        assert body == "{" + ", ".join(row) + "}"
        assert all(len(json.loads("{" + frag + "}")) == 1 for frag in row)


def test_non_ascii_stays_readable():
    table = Table.from_frame(pd.DataFrame({"名前": ["café ☕"]}))
    (prompt,) = build_prompts(table, ReorderPlan.identity(table), QUERY)
    assert '"名前": "café ☕"' in prompt
