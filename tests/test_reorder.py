"""Reorder methods: valid plans, PHC ordering, exact OPHR, FD groups, errors.

PHC is recounted here cell by cell from the paper's definition (Eq. 1-2), not with
``ggr_kv.reorder.metrics``.
"""

from __future__ import annotations

import functools
import itertools
import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.table import Table, TableError
from ggr_kv.reorder import METHODS, OPHRTooLarge, ReorderResult, reorder
from ggr_kv.reorder.fd import FDWarning

LABELS = ["manual_labels", "gpt4o", "llama3-8b", "llama3-70b", "Unnamed: 0"]
# FD groups from shared/datasets/README.md
SAMPLES = {
    "movies_small": ("movies_small.csv", [("rotten_tomatoes_link", "movie_title", "movie_info")]),
    "movies_100": (
        "movies_sampled_labelled.csv",
        [("movieinfo", "movietitle", "rottentomatoeslink")],
    ),
    "products_100": ("products_sampled_labelled.csv", [("product_title", "parent_asin")]),
    "posts_100": ("posts_sampled_labelled.csv", [("PostId", "Body")]),
    "contributions": ("contributions.csv", None),
}
GGR_VARIANTS = [
    {},
    {"preset": "paper"},
    {"split": "value"},
    {"split": "column"},
    {"split": "value", "constant_first": False},
]


def direct_phc(table: Table, plan: ReorderPlan) -> int:
    """Paper Eq. 1-2: per row, squared lengths of the leading cells equal (same column,
    same text) to the previous row's leading cells."""
    total, prev = 0, None
    for slot, r in enumerate(plan.row_order):
        cells = [(table.columns[j], table.cells[r][j]) for j in plan.field_perm[slot]]
        if prev is not None:
            for a, b in zip(cells, prev):
                if a != b:
                    break
                total += len(a[1]) ** 2
        prev = cells
    return total


def upper_bound(table: Table) -> int:
    """Each cell value can be shared at most count-1 times: sum of len^2 * (count-1)."""
    total = 0
    for j in range(table.n_cols):
        vals = pd.Series(table.cells[:, j])
        counts = vals.value_counts()
        total += sum(len(v) ** 2 * (c - 1) for v, c in counts.items())
    return total


@functools.cache
def sample(name: str) -> tuple[Table, list | None]:
    fname, fds = SAMPLES[name]
    path = shared_path(fname)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    return Table.from_frame(df.drop(columns=[c for c in LABELS if c in df.columns])), fds


def check_plan(table: Table, plan: ReorderPlan) -> None:
    n, m = table.n_rows, table.n_cols
    assert sorted(plan.row_order.tolist()) == list(range(n))
    assert plan.field_perm.shape == (n, m)
    for row in plan.field_perm:
        assert sorted(row.tolist()) == list(range(m))


# -- strategies ---------------------------------------------------------------------------
VALUES = ["", "a", "bb", "ccc", "dddddd", "a long shared value " * 3]


@st.composite
def tables(draw, max_rows: int = 12, max_cols: int = 4, min_rows: int = 1):
    m = draw(st.integers(1, max_cols))
    n = draw(st.integers(min_rows, max_rows))
    data = {}
    for j in range(m):
        palette = draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=4, unique=True))
        data[f"c{j}"] = draw(st.lists(st.sampled_from(palette), min_size=n, max_size=n))
    return Table.from_frame(pd.DataFrame(data))


# -- plans are valid ------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(tables(max_rows=30, max_cols=5))
def test_every_method_returns_permutations(table):
    for method in METHODS:
        if method == "ophr" and (table.n_rows > 8 or table.n_rows * table.n_cols > 24):
            continue
        variants = GGR_VARIANTS if method == "ggr" else [{}]
        for knobs in variants:
            res = reorder(table, method, **knobs)
            assert isinstance(res, ReorderResult) and res.method == method
            assert res.seconds >= 0
            check_plan(table, res.plan)


def test_original_is_identity():
    t = Table.from_frame(pd.DataFrame({"a": ["x", "y", "x"], "b": ["1", "2", "3"]}))
    plan = reorder(t, "original").plan
    assert plan.row_order.tolist() == [0, 1, 2]
    assert plan.field_perm.tolist() == [[0, 1]] * 3


def test_sorted_uses_one_field_order_by_column_score():
    # 'long' (len 10, 2 distinct in 4 rows) scores 100 * (4/2 - 1) = 100; 'short' (len 1,
    # 2 distinct) scores 1; 'uniq' (all distinct) scores 0 and goes last
    df = pd.DataFrame(
        {
            "uniq": ["1", "2", "3", "4"],
            "short": ["a", "b", "a", "b"],
            "long": ["x" * 10, "y" * 10, "y" * 10, "x" * 10],
        }
    )
    res = reorder(df, "sorted")
    assert res.info["field_order"] == ["long", "short", "uniq"]
    assert (res.plan.field_perm == [2, 1, 0]).all()
    seq = [tuple(df.iloc[r][["long", "short"]]) for r in res.plan.row_order]
    # equal values are adjacent (a lexicographic sort on codes)
    assert seq[0][0] == seq[1][0] and seq[2][0] == seq[3][0]


# -- PHC ordering -----------------------------------------------------------------------------
@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables(max_rows=7, max_cols=3, min_rows=2))
def test_ophr_is_at_least_every_other_method(table):
    best = reorder(table, "ophr")
    opt = direct_phc(table, best.plan)
    assert opt == best.info["optimal_phc"]
    assert opt <= upper_bound(table)
    assert opt >= direct_phc(table, reorder(table, "sorted").plan)
    assert opt >= direct_phc(table, reorder(table, "original").plan)
    for knobs in GGR_VARIANTS:
        assert opt >= direct_phc(table, reorder(table, "ggr", **knobs).plan)


def brute_force_phc(table: Table) -> int:
    """Max PHC over every row order and every per-row field order."""
    n, m = table.n_rows, table.n_cols
    best = 0
    field_perms = list(itertools.permutations(range(m)))
    for fps in itertools.product(field_perms, repeat=n):
        for rows in itertools.permutations(range(n)):
            plan = ReorderPlan(table.columns, np.array(rows), np.array([fps[r] for r in rows]))
            best = max(best, direct_phc(table, plan))
    return best


@settings(max_examples=40, deadline=None)
@given(tables(max_rows=3, max_cols=2, min_rows=1))
def test_ophr_equals_brute_force_on_tiny_tables(table):
    assert direct_phc(table, reorder(table, "ophr").plan) == brute_force_phc(table)


def test_ophr_finds_optimum_that_needs_partial_groups():
    # The paper's OPHR only tries groups that take EVERY remaining row holding a value,
    # and stops at 127 here. The optimum (134) groups rows D, E by c0="aaaa" without
    # row C (which holds it too) and rows A, B, C by c2="ggg" without row E.
    df = pd.DataFrame(
        {
            "c0": ["b" * 10, "ccc", "aaaa", "aaaa", "aaaa"],
            "c1": ["e" * 10, "fff", "e" * 10, "fff", "dddd"],
            "c2": ["ggg", "ggg", "ggg", "hhhh", "ggg"],
        },
        index=list("ABCDE"),
    )
    t = Table.from_frame(df)
    res = reorder(t, "ophr")
    # A, B, C share "ggg" (2 * 9) and A, C then "e"*10 (100); D, E share "aaaa" (16)
    assert direct_phc(t, res.plan) == res.info["optimal_phc"] == 134


@pytest.mark.slow
@pytest.mark.parametrize("name", ["movies_100", "products_100", "contributions"])
def test_ggr_beats_sorted_beats_original_on_real_samples(name):
    table, fds = sample(name)
    orig = direct_phc(table, reorder(table, "original").plan)
    srt = direct_phc(table, reorder(table, "sorted", fds=fds).plan)
    ggr = direct_phc(table, reorder(table, "ggr", fds=fds).plan)
    paper = direct_phc(table, reorder(table, "ggr", fds=fds, preset="paper").plan)
    assert ggr > srt > orig
    assert ggr >= paper  # our defaults do at least as well as the paper's settings


@pytest.mark.parametrize("name", ["movies_small", "posts_100"])
def test_ggr_reaches_the_upper_bound_where_sorting_does(name):
    # one dominant FD group: every shared value can be shared in full; GGR must not
    # lose any of it (e.g. by scattering a group)
    table, fds = sample(name)
    ub = upper_bound(table)
    assert direct_phc(table, reorder(table, "original").plan) < ub
    assert direct_phc(table, reorder(table, "sorted", fds=fds).plan) == ub
    for knobs in GGR_VARIANTS:
        assert direct_phc(table, reorder(table, "ggr", fds=fds, **knobs).plan) == ub


# -- GGR details ------------------------------------------------------------------------------
def reference_value_greedy(table: Table) -> tuple[np.ndarray, np.ndarray]:
    """The paper's greedy written the plain way (one Python step per group, no caps, no
    early stop), with the same tie-breaking as ggr_kv: score, then count, then column
    statistics score, then first-coded value. Returns (row order, field orders)."""
    from ggr_kv.reorder.units import build_units, column_scores, fixed_order, sort_rows

    units = build_units(table)
    n = table.n_rows
    gscore = column_scores(units)
    order = [int(c) for c in fixed_order(gscore)]
    dropped = [c for c in order if units.n_distinct[c] >= n]
    active = [c for c in order if c not in dropped]
    perms = {}

    def rec(rows: list[int], cols: list[int], prefix: list[int]) -> None:
        rows = list(rows)
        while rows:
            best = None
            for c in cols:
                vals = pd.Series([units.codes[r, c] for r in rows]).value_counts()
                for v, k in vals.items():
                    w = int(units.weights[c][v])
                    if k < 2 or w == 0:
                        continue
                    key = (w * (k - 1), k, gscore[c], -v)
                    if best is None or key > best[0]:
                        best = (key, c, v)
            if best is None:
                for r in rows:  # nothing left to share: any order of the rest
                    perms[r] = prefix + cols + dropped
                return
            _, c, v = best
            group = [r for r in rows if units.codes[r, c] == v]
            rows = [r for r in rows if units.codes[r, c] != v]
            rec(group, [x for x in cols if x != c], prefix + [c])

    rec(list(range(n)), active, [])
    fp = np.array([perms[r] for r in range(n)])
    ro = sort_rows(table.codes, fp)
    return ro, fp[ro]


# distinct prime lengths: no two (value, count) pairs can tie on len^2 * (count - 1)
PRIMES = [11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53]


@st.composite
def tie_free_tables(draw):
    m = draw(st.integers(1, 4))
    n = draw(st.integers(2, 20))
    data = {}
    for j in range(m):
        k = draw(st.integers(1, 3))
        palette = [chr(97 + j) * PRIMES[3 * j + i] for i in range(k)]
        data[f"c{j}"] = draw(st.lists(st.sampled_from(palette), min_size=n, max_size=n))
    return Table.from_frame(pd.DataFrame(data))


@pytest.mark.slow
@settings(max_examples=80, deadline=None)
@given(tie_free_tables())
def test_vectorized_value_greedy_equals_sequential_greedy(table):
    ro, fp = reference_value_greedy(table)
    ref = direct_phc(table, ReorderPlan(table.columns, ro, fp))
    got = reorder(table, "ggr", split="value", constant_first=False).plan
    assert direct_phc(table, got) == ref


@pytest.mark.parametrize("knobs", [{}, {"preset": "paper"}, {"row_stop": 1, "col_stop": 1}])
def test_groups_stay_contiguous_with_many_groups(knobs):
    # 300 groups of a long value: more groups than any depth cap; each value's rows
    # must run back to back (a depth cap on the remaining-rows branch scattered them)
    rng = np.random.default_rng(0)
    n = 3000
    key = rng.integers(0, 300, n)
    df = pd.DataFrame(
        {
            "title": [f"movie {k:03d} " + "x" * 300 for k in key],
            "flag": rng.choice(["yes", "no"], n),
            "review": [f"review {i}" for i in range(n)],
        }
    )
    res = reorder(df, "ggr", **knobs)
    run = key[res.plan.row_order]
    changes = int((run[1:] != run[:-1]).sum())
    assert changes == len(np.unique(key)) - 1


def test_fd_group_columns_stay_together_and_lead_when_grouped():
    table, fds = sample("movies_small")
    group = set(fds[0])
    idx = {table.col_index(c) for c in group}
    movie = pd.Series(table.cells[:, table.col_index("movie_title")])
    shared_movie = movie.map(movie.value_counts()).to_numpy() >= 2
    for method in ("sorted", "ggr"):
        plan = reorder(table, method, fds=fds).plan
        for slot, r in enumerate(plan.row_order):
            row = plan.field_perm[slot].tolist()
            pos = sorted(row.index(c) for c in idx)
            assert pos == list(range(pos[0], pos[0] + len(idx)))  # contiguous
            if shared_movie[r]:
                assert set(row[: len(idx)]) == idx  # in front


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(tables(max_rows=10, max_cols=4))
def test_declared_fd_group_is_contiguous_in_every_method(table):
    if table.n_cols < 2:
        return
    group = (table.columns[-1], table.columns[0])
    idx = {table.col_index(c) for c in group}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random data: the group is rarely an exact FD
        for method, knobs in [
            ("sorted", {}),
            ("ggr", {}),
            ("ggr", {"preset": "paper"}),
            ("ophr", {"max_cells": 40}),
            ("blocks", {"block_size": 4}),
        ]:
            plan = reorder(table, method, fds=[group], **knobs).plan
            for row in plan.field_perm.tolist():
                pos = sorted(row.index(c) for c in idx)
                assert pos[1] == pos[0] + 1


def test_caller_dataframe_is_unchanged():
    df = pd.DataFrame(
        {"a": ["x", "y", "x", None], "b": [1.5, 2.0, None, 4.0], "c": [True, False, True, True]}
    )
    before = df.copy(deep=True)
    for method in METHODS:
        if method == "original":
            reorder(df, method)
            continue
        with pytest.warns(FDWarning, match=r"\('a', 'b'\) is not an exact FD: 1 of 4 rows"):
            reorder(df, method, fds=[("a", "b")])
    pd.testing.assert_frame_equal(df, before)
    assert list(df.dtypes) == list(before.dtypes)


def test_path_input_gives_the_same_plan_as_a_table():
    path = shared_path("movies_small.csv")
    table, fds = sample("movies_small")
    a = reorder(path, "ggr", fds=fds).plan
    b = reorder(table, "ggr", fds=fds).plan
    assert a.to_dict() == b.to_dict()


def test_info_records_knobs_groups_and_fallbacks():
    table, fds = sample("contributions")
    ours = reorder(table, "ggr", fds=fds)
    assert ours.info["knobs"]["split"] == "hybrid"
    assert ours.info["knobs"]["row_stop"] is None
    assert ours.info["groups_found"] > 0
    assert ours.info["fallbacks"] == {"early_stop": 0, "row_stop": 0, "col_stop": 0}
    paper = reorder(table, "ggr", preset="paper", early_stop=0)
    assert paper.info["knobs"]["row_stop"] == 4 and paper.info["knobs"]["early_stop"] == 0
    assert paper.info["fallbacks"]["row_stop"] > 0  # the caps were hit
    json.dumps(paper.info)  # run folders store it as JSON
    movies, mfds = sample("movies_small")
    res = reorder(movies, "ggr", fds=mfds)
    assert [sorted(g) for g in res.info["fd_groups"]] == [sorted(mfds[0])]
    assert res.info["fd_checks"][0]["holds"] is True


# -- errors -------------------------------------------------------------------------------------
def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown reorder method 'fast'.*original.*ophr"):
        reorder(pd.DataFrame({"a": ["x"]}), "fast")


def test_unknown_knob_is_named():
    df = pd.DataFrame({"a": ["x", "y"]})
    with pytest.raises(TypeError, match="row_stpo.*valid knobs"):
        reorder(df, "ggr", row_stpo=3)
    with pytest.raises(TypeError, match="early_stop.*'sorted'"):
        reorder(df, "sorted", early_stop=3)


@pytest.mark.parametrize(
    "knobs,match",
    [
        ({"row_stop": 0}, "row_stop must be a positive integer"),
        ({"distinct_value_threshold": 1.5}, "distinct_value_threshold"),
        ({"split": "best"}, "unknown split 'best'"),
        ({"preset": "fast"}, "unknown GGR preset 'fast'"),
        ({"early_stop": -1}, "early_stop must be >= 0"),
    ],
)
def test_bad_knob_values_are_named(knobs, match):
    with pytest.raises(ValueError, match=match):
        reorder(pd.DataFrame({"a": ["x", "y"]}), "ggr", **knobs)


def test_fd_column_not_in_table():
    df = pd.DataFrame({"title": ["a", "b"], "info": ["x", "y"]})
    with pytest.raises(
        TableError, match=r"no column 'movie'.*Available columns: \['title', 'info'\]"
    ):
        reorder(df, "ggr", fds=[("title", "movie")])


def test_ophr_refuses_large_tables_with_size_and_limit():
    df = pd.DataFrame({"a": ["x"] * 20, "b": ["y"] * 20, "c": ["z"] * 20})
    with pytest.raises(OPHRTooLarge, match=r"20 rows x 3 fields = 60 cells.*max_cells=56"):
        reorder(df, "ophr")
    with pytest.raises(ValueError, match="max_rows=5"):
        reorder(df.head(6), "ophr", max_rows=5)
    assert reorder(df.head(6), "ophr").info["optimal_phc"] == 5 * 3  # 3 one-char cells


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40),
    st.lists(st.integers(1, 3000), min_size=1, max_size=6),
    st.booleans(),
    st.integers(0, 2**32 - 1),
)
def test_sort_rows_is_the_lexicographic_order_of_its_cells(n, card, one, seed):
    """`sort_rows` orders rows by their (column, code) sequence, ties in row order, with one
    field order for every row or one per row."""
    from ggr_kv.reorder.units import sort_rows

    rng = np.random.default_rng(seed)
    m = len(card)
    codes = np.stack([rng.integers(0, c, n) for c in card], axis=1).astype(np.int32)
    if one:
        perm = np.broadcast_to(rng.permutation(m).astype(np.int32), (n, m))
    else:
        perm = np.argsort(rng.random((n, m)), axis=1).astype(np.int32)
    cells = [tuple((int(c), int(codes[r, c])) for c in perm[r]) for r in range(n)]
    assert sort_rows(codes, perm).tolist() == sorted(range(n), key=lambda r: (cells[r], r))
