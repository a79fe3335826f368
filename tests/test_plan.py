"""Reorder plans: JSON round trips, inversion, and plans that do not fit their table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ggr_kv.core.plan import PlanError, ReorderPlan
from ggr_kv.core.table import Table

NAMES = ["title", "genre", "review", "col with space", 'q"k', "ü"]


@st.composite
def tables_and_plans(draw, max_rows: int = 12, max_cols: int = 5):
    m = draw(st.integers(1, max_cols))
    n = draw(st.integers(1, max_rows))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=m, max_size=m, unique=True))
    data = {c: [f"{c}-{i % 3}" for i in range(n)] for c in names}
    table = Table.from_frame(pd.DataFrame(data))
    row_order = draw(st.permutations(range(n)))
    perms = draw(st.lists(st.permutations(range(m)), min_size=n, max_size=n))
    return table, ReorderPlan(table.columns, np.array(row_order), np.array(perms))


def small_table(n: int = 3) -> Table:
    return Table.from_frame(
        pd.DataFrame({"title": [f"t{i}" for i in range(n)], "genre": ["g"] * n, "x": ["1"] * n})
    )


# -- properties -----------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(tp=tables_and_plans())
def test_json_round_trip(tp, tmp_path_factory):
    table, plan = tp
    back = ReorderPlan.from_json(plan.to_json(), table)
    np.testing.assert_array_equal(back.row_order, plan.row_order)
    np.testing.assert_array_equal(back.field_perm, plan.field_perm)
    # without the table, column names come from the first field order: same named orders
    loose = ReorderPlan.from_dict(json.loads(plan.to_json()))
    np.testing.assert_array_equal(loose.row_order, plan.row_order)
    assert [[loose.columns[j] for j in row] for row in loose.field_perm] == [
        [plan.columns[j] for j in row] for row in plan.field_perm
    ]
    path = tmp_path_factory.mktemp("plan") / "plan.json"
    plan.to_json(path)
    back = ReorderPlan.from_json(path, table)
    np.testing.assert_array_equal(back.field_perm, plan.field_perm)
    # the JSON names fields, in each run slot's order
    data = json.loads(path.read_text())
    assert data["field_orders"] == [[plan.columns[j] for j in row] for row in plan.field_perm]


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(tables_and_plans())
def test_invert_restores_the_original_order(tp):
    table, plan = tp
    run_rows = [dict(pairs) for pairs in plan.apply(table)]  # one result per run slot
    back = plan.invert(run_rows)
    assert back == [dict(zip(table.columns, row)) for row in table.cells.tolist()]
    inv = plan.inverse_order()
    assert (plan.row_order[inv] == np.arange(plan.n_rows)).all()


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(tables_and_plans())
def test_apply_keeps_each_slot_s_field_order(tp):
    table, plan = tp
    for slot, pairs in enumerate(plan.apply(table)):
        assert [k for k, _ in pairs] == [plan.columns[j] for j in plan.field_perm[slot]]
        r = plan.row_order[slot]
        assert all(table.cells[r][table.columns.index(k)] == v for k, v in pairs)


@pytest.mark.slow
@settings(max_examples=100, deadline=None)
@given(tables_and_plans(), st.data())
def test_non_permutations_are_refused(tp, data):
    _, plan = tp
    n, m = plan.field_perm.shape
    if n > 1:
        ro = plan.row_order.copy()
        i, j = data.draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
        ro[i] = ro[j]
        with pytest.raises(PlanError, match="row_order is not a permutation"):
            ReorderPlan(plan.columns, ro, plan.field_perm)
    if m > 1:
        fp = plan.field_perm.copy()
        slot = data.draw(st.integers(0, n - 1))
        fp[slot, 0] = fp[slot, 1]
        with pytest.raises(PlanError, match=f"run slot {slot} is not a permutation"):
            ReorderPlan(plan.columns, plan.row_order, fp)


# -- plans that do not fit ------------------------------------------------------------------
def test_wrong_row_count():
    plan = ReorderPlan.identity(small_table(4))
    with pytest.raises(PlanError, match="plan has 4 rows, table has 3"):
        ReorderPlan.from_json(plan.to_json(), small_table(3))
    with pytest.raises(PlanError, match="plan has 4 rows, table has 3"):
        plan.ordered_codes(small_table(3))


def test_plan_lacking_a_column():
    table = small_table()
    data = ReorderPlan.identity(table).to_dict()
    data["field_orders"] = [row[:2] for row in data["field_orders"]]
    with pytest.raises(PlanError, match=r"run slot 0 lacks columns \['x'\]"):
        ReorderPlan.from_dict(data, table)


def test_plan_naming_an_unknown_column():
    table = small_table()
    data = ReorderPlan.identity(table).to_dict()
    data["field_orders"][1][2] = "year"
    with pytest.raises(PlanError, match=r"run slot 1 names columns not in .*\['year'\]"):
        ReorderPlan.from_dict(data, table)


def test_plan_of_a_table_with_other_columns():
    table = small_table()
    other = Table.from_frame(pd.DataFrame({"title": ["a"] * 3, "genre": ["b"] * 3}))
    plan = ReorderPlan.identity(table)
    with pytest.raises(PlanError, match=r"lacks columns \['x'\]|not in"):
        ReorderPlan.from_json(ReorderPlan.identity(other).to_json(), table)
    with pytest.raises(PlanError, match=r"plan columns missing from the table \['x'\]"):
        plan.check(other)


def test_repeated_column_in_a_field_order():
    table = small_table()
    data = ReorderPlan.identity(table).to_dict()
    data["field_orders"][2] = ["title", "title", "genre"]
    with pytest.raises(PlanError, match="run slot 2"):
        ReorderPlan.from_dict(data, table)


@pytest.mark.parametrize(
    "row_order", [[0.5, 1, 2], ["0", 1, 2], [True, False, True], 3, [[0, 1, 2]]]
)
def test_row_order_must_be_integers(row_order):
    table = small_table()
    data = ReorderPlan.identity(table).to_dict()
    data["row_order"] = row_order
    with pytest.raises(PlanError, match="row_order must be a list of integer row positions"):
        ReorderPlan.from_dict(data, table)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "needs the keys 'row_order' and 'field_orders'"),
        ('{"row_order": [0, 1, 2]}', "needs the keys"),
        ('{"row_order": [0, 1, 2], "field_orders": "abc"}', "must be a list of lists"),
        ('{"row_order": [0, 1], "field_orders": [["title", "genre", "x"]]}', "2 row_order"),
    ],
)
def test_malformed_json(text, message):
    with pytest.raises(PlanError, match=message):
        ReorderPlan.from_json(text, small_table())


def test_plan_files_that_are_missing_or_broken(tmp_path):
    table = small_table()
    with pytest.raises(PlanError, match=r"nope\.json: plan file not found"):
        ReorderPlan.from_json(tmp_path / "nope.json", table)
    with pytest.raises(PlanError, match="is not a file"):
        ReorderPlan.from_json(tmp_path, table)
    bad = tmp_path / "bad.json"
    bad.write_text('{"row_order": [0, 1, 2], "field_orders": [[]]}')
    with pytest.raises(PlanError, match=r"bad\.json: plan has 3 row_order entries"):
        ReorderPlan.from_json(bad, table)


def test_invert_needs_one_result_per_row():
    plan = ReorderPlan.identity(small_table())
    with pytest.raises(PlanError, match="got 2 results for a plan of 3 rows"):
        plan.invert(["a", "b"])
