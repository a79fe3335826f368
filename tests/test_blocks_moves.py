"""Refinement moves scored without a sort (`ggr_kv.reorder.blockmoves`) give exactly the
node totals that sorting the moved rows gives, on real and generated tables, at every
level, for every unit and both kinds of move; and the range minima are right.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import shared_path
from hypothesis import given, settings
from hypothesis import strategies as st

from ggr_kv.core.table import Table
from ggr_kv.core.tokenizer import load_tokenizer
from ggr_kv.datasets import load_dataset
from ggr_kv.reorder import blockaware as ba
from ggr_kv.reorder.blockmoves import (
    RangeMin,
    _reorder_runs,
    move_cols,
    move_totals,
    move_totals_many,
)
from ggr_kv.reorder.blockscore import BlockScorer
from ggr_kv.reorder.fragments import PromptPieces
from ggr_kv.reorder.ggr import ggr_config, ggr_unit_order
from ggr_kv.reorder.units import build_units, column_scores, expand_perm, fixed_order


@pytest.fixture(scope="module")
def llama3():
    return load_tokenizer("llama3")


def _levels(units, uv, perm):
    """``(j, node, rows)`` of each refinement level of the unit orders ``perm``: the node
    of every row (rows equal in their first ``j`` units) and the rows in nodes of 2+."""
    n, u = units.codes.shape
    node = np.zeros(n, dtype=np.int64)
    for j in range(u - 1):
        if j:
            node = pd.factorize(node * (int(uv.max()) + 1) + uv[np.arange(n), perm[:, j - 1]])
            node = node[0].astype(np.int64)
        rows = np.flatnonzero(np.bincount(node)[node] >= 2)
        if not len(rows):
            return
        yield j, node, rows


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 50), min_size=1, max_size=60), st.data())
def test_range_min_matches_python_min(a, data):
    lo = data.draw(st.integers(0, len(a) - 1))
    hi = data.draw(st.integers(lo, len(a) - 1))
    got = RangeMin(np.array(a)).query(np.array([lo]), np.array([hi]))
    assert got.tolist() == [min(a[lo : hi + 1])]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-(2**40), 2**40) | st.integers(-40_000, 40_000), min_size=1, max_size=80),
    st.data(),
)
def test_range_min_batches_and_wide_values(a, data):
    """Several batches of ranges on one table (levels built as later batches need them),
    values beyond 16 and 32 bits."""
    rm = RangeMin(np.array(a, dtype=np.int64))
    for _ in range(3):
        lo = np.array(data.draw(st.lists(st.integers(0, len(a) - 1), min_size=0, max_size=6)))
        hi = np.array([data.draw(st.integers(x, len(a) - 1)) for x in lo.tolist()])
        got = rm.query(lo.astype(np.int64), hi.astype(np.int64))
        assert got.tolist() == [min(a[x : y + 1]) for x, y in zip(lo.tolist(), hi.tolist())]


def _check_levels(table: Table, groups, tok, block_size: int, query: str) -> int:
    """Compare both scorings of every move of every level; returns moves compared."""
    scorer = BlockScorer(PromptPieces.build(table, tok, query), block_size)
    units = build_units(table, groups)
    n, u = units.codes.shape
    uv = ba._unit_value_ids(units)
    seeds = [
        np.broadcast_to(fixed_order(column_scores(units)).astype(np.int32), (n, u)),
        ggr_unit_order(units, ggr_config())[0],
    ]
    compared = 0
    for seed in seeds:
        perm = np.ascontiguousarray(seed, dtype=np.int32)
        cols = expand_perm(units, perm)
        for j, node, rows in _levels(units, uv, perm):
            lv = ba._Level.of(units, rows, node[rows], perm[rows], cols[rows], j)
            base = ba._NodeScores.of(scorer, rows, lv.cols, lv.nidx, lv.n_nodes, lv.start)
            # the level's sort, taken from the sort of all rows, is the level's own sort
            derived = ba._grouped_sort(scorer, scorer.sorted_hits(None, cols), rows, lv.cols,
                                       lv.nidx)  # fmt: skip
            own = scorer.sorted_hits(rows, lv.cols, lv.nidx, lv.start)
            assert [x.tolist() for x in derived] == [x.tolist() for x in own], j
            masks, ks, singles = [], [], []
            for k in range(u):
                movable = lv.pos[:, k] > j
                key = lv.nidx * (int(units.n_distinct[k]) + 1) + units.codes[rows, k]
                kid = pd.factorize(key)[0]
                shared = np.bincount(kid)[kid] >= 2
                tots = []
                for mask in (movable, movable & shared):
                    if not mask.any():
                        continue
                    got = base.totals_with(scorer, lv, mask, k, uv)
                    masks.append(mask)
                    ks.append(k)
                    singles.append(got)
                    want = base._sorted_totals(scorer, lv, mask, k)
                    assert got.tolist() == want.tolist(), (j, k)
                    tots.append(got)
                    compared += 1
                if len(tots) == 2:  # the bound on "shared" from "all" holds in every node
                    bound = ba._shared_bound(scorer, base, movable & ~shared, tots[0])
                    assert (bound >= tots[1]).all(), (j, k)
            _check_stacked(scorer, lv, base, masks, ks, uv, singles)
    return compared


def _check_stacked(scorer, lv, base, masks, ks, uv, singles) -> None:
    """All of a level's moves scored in one stacked pass equal each scored alone."""
    many = move_totals_many(scorer, lv, base.moves, masks, ks, uv)
    assert len(many) == len(masks)
    for (done, tot), mask, k in zip(many, masks, ks):
        done1, tot1 = move_totals(scorer, lv, base.moves, mask, k, uv)
        assert done.tolist() == done1.tolist(), (lv.j, k)
        assert (tot is None) == (tot1 is None or not done1.any()), (lv.j, k)
        if tot is not None:
            assert tot[done].tolist() == tot1[done].tolist(), (lv.j, k)
    got = base.totals_many(scorer, lv, masks, ks, uv)
    assert [t.tolist() for t in got] == [t.tolist() for t in singles], lv.j


@pytest.mark.parametrize("block_size", [4, 16, 128])
def test_moves_on_real_samples(block_size, llama3):
    for name in ("movies_sampled_labelled.csv", "products_sampled_labelled.csv"):
        ds = load_dataset(shared_path(name))
        cols = list(ds.table().columns)
        groups = [[cols.index(c) for c in g] for g in ds.fds]
        assert _check_levels(ds.table(), groups, llama3, block_size, "Q?") > 20


@pytest.mark.slow
@pytest.mark.parametrize("name", ["beer", "rag"])
def test_moves_on_generated_tables(name, llama3):
    ds = load_dataset(name)
    cols = list(ds.table().columns)
    groups = [[cols.index(c) for c in g] for g in ds.fds]
    assert _check_levels(ds.table(), groups, llama3, 16, "Is this row relevant?") > 20


@pytest.mark.parametrize("name", ["movies_sampled_labelled.csv", "products_sampled_labelled.csv"])
def test_resorting_changed_nodes_equals_sorting_all_rows(name, llama3):
    """`_resort_nodes` (the check after a refinement level: only the changed nodes' rows
    sorted again, in their runs of the token order) equals the sort of all rows."""
    ds = load_dataset(shared_path(name))
    table = ds.table()
    cols = list(table.columns)
    units = build_units(table, [[cols.index(c) for c in g] for g in ds.fds])
    scorer = BlockScorer(PromptPieces.build(table, llama3, "Q?"), 16)
    uv = ba._unit_value_ids(units)
    perm = np.ascontiguousarray(ggr_unit_order(units, ggr_config())[0], dtype=np.int32)
    rng = np.random.default_rng(0)
    checked = 0
    cp = expand_perm(units, perm)
    every = scorer.sorted_hits(None, cp)
    for j, node, rows in _levels(units, uv, perm):
        lv = ba._Level.of(units, rows, node[rows], perm[rows], cp[rows], j)
        for frac in (0.05, 0.3, 1.0):  # changed nodes; all of them: one sort of all rows
            ch = (rng.random(lv.n_nodes) < frac)[lv.nidx]
            new = perm.copy()
            tail = new[rows[ch], j:]
            new[rows[ch], j:] = tail[:, rng.permutation(tail.shape[1])]
            ncp = expand_perm(units, new)
            got = ba._resort_nodes(scorer, every, rows[ch], ncp, lv.nidx[ch], lv.start)
            want = scorer.sorted_hits(None, ncp)
            assert [x.tolist() for x in got] == [x.tolist() for x in want], (j, frac)
            checked += 1
    assert checked >= 6


@pytest.mark.parametrize("name", ["movies_sampled_labelled.csv", "products_sampled_labelled.csv"])
def test_token_scores_equal_their_definition(name, llama3):
    """`token_scores` (slots, one hash pass, or one per candidate; rows alone in their
    group dropped) equals ``sum over (group, value) of (count - 1) * tokens``."""
    ds = load_dataset(shared_path(name))
    table = ds.table()
    cols = list(table.columns)
    units = build_units(table, [[cols.index(c) for c in g] for g in ds.fds])
    scorer = BlockScorer(PromptPieces.build(table, llama3, "Q?"), 16)
    n = table.n_rows
    rng = np.random.default_rng(0)
    cand = list(range(units.n_units))
    for n_groups in (1, 5, n // 4, n):  # few groups to mostly singletons
        rows = np.sort(rng.choice(n, size=3 * n // 4, replace=False))
        group = np.unique(rng.integers(0, n_groups, len(rows)), return_inverse=True)[1].ravel()
        want = []
        for k in cand:
            mm = list(units.members[k])
            tl = scorer.v_len[0][rows][:, mm].sum(1) + int(scorer.k_len[0][mm].sum())
            key = pd.Series(group * (int(units.n_distinct[k]) + 1) + units.codes[rows, k])
            want.append(int(tl.sum()) - int(tl[~key.duplicated().to_numpy()].sum()))
        for hash_all in (0, 1 << 20):
            got = ba.token_scores(scorer, units, rows, group, cand, hash_all=hash_all)
            assert got.tolist() == want, (n_groups, hash_all)


@pytest.mark.parametrize("block_size", [16, 128])
def test_bounded_refine_equals_unbounded(block_size, llama3):
    """`refine` skipping the "shared" moves `_shared_bound` rules out returns the same
    orders, hits and levels as scoring every move, on the real samples."""
    for name in ("movies_sampled_labelled.csv", "products_sampled_labelled.csv",
                 "contributions.csv"):  # fmt: skip
        ds = load_dataset(shared_path(name))
        table = ds.table()
        cols = list(table.columns)
        units = build_units(table, [[cols.index(c) for c in g] for g in ds.fds])
        scorer = BlockScorer(PromptPieces.build(table, llama3, "Q?"), block_size)
        seed = ggr_unit_order(units, ggr_config())[0]
        a = ba.refine(scorer, units, seed, bound=True)
        b = ba.refine(scorer, units, seed, bound=False)
        assert a.hits == b.hits and a.levels == b.levels, name
        assert np.array_equal(a.unit_perm, b.unit_perm), name


@pytest.mark.parametrize("m", [1, 3, 8, 60])  # 60: past the shared maps (one per row)
def test_move_cols_moves_each_rows_block(m):
    """`move_cols` puts each row's ``w`` columns from ``src`` at ``at``, the columns
    between shifted right in order, whatever ``w`` is (one, or one per row)."""
    rng = np.random.default_rng(m)
    r = 50
    cols = np.argsort(rng.random((r, m)), axis=1).astype(np.int32)
    w = rng.integers(1, m + 1, r)
    src = rng.integers(0, m - w + 1)
    at = rng.integers(0, src + 1)
    for width in (w, 1):
        s = src if np.ndim(width) else rng.integers(0, m, r)
        a = at if np.ndim(width) else rng.integers(0, s + 1)
        want = []
        for row, ai, si, wi in zip(cols.tolist(), a, s, np.broadcast_to(width, (r,))):
            block = row[si : si + wi]
            rest = row[:si] + row[si + wi :]
            want.append(rest[:ai] + block + rest[ai:])
        assert move_cols(cols, a, s, width).tolist() == want
    assert move_cols(cols[:0], at[:0], src[:0], 1).shape == (0, m)


@pytest.mark.parametrize("seed", range(6))
def test_reorder_runs_equals_sorting_again(seed):
    """`_reorder_runs` (new ranks for some subgroups' rows) gives the order that sorting
    every row again by (node, block, rank) gives."""
    rng = np.random.default_rng(seed)
    r = 200
    node = rng.integers(0, 6, r)
    block = rng.integers(0, 4, r)
    sg = pd.factorize(node * 4 + block)[0].astype(np.int64)
    within = rng.permutation(r).astype(np.int64)
    o = np.lexsort((within, block, node))
    mixed = rng.random(sg.max() + 1)[sg] < 0.5
    new = within.copy()  # mixed rows: ranks grouped by subgroup, any order inside
    rows_m = np.flatnonzero(mixed)
    ranked = rows_m[np.lexsort((rng.random(len(rows_m)), sg[rows_m]))]
    new[ranked] = np.arange(len(ranked))
    got = _reorder_runs(o, o, sg, mixed, new)  # ``s`` = ``o`` (every row selected)
    assert got.tolist() == np.lexsort((new, block, node)).tolist()
