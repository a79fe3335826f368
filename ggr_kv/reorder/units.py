"""Reorder units: columns, with each FD group merged into one unit that travels together.

The reorder methods work on *units* instead of columns. A unit is one column, or one
declared FD group (several columns that always stay next to each other, in a fixed
internal order). Each unit has

- integer codes per row (equal code = all member cells equal, column by column),
- a weight per code: the sum of the squared member lengths (characters^2), which is what
  one shared unit adds to the paper's PHC (Eq. 2) when every member matches.

This module also holds the two ordering primitives every method shares:

- `column_scores` / `fixed_order`: the statistics order of the paper's fallback
  (``fixed_reorder``): score = avg_len^2 * (n / n_distinct - 1), 0 if every value is
  distinct, descending;
- `sort_rows`: the row order that maximizes PHC for given per-row field orders. Rows are
  sorted lexicographically by their sequence of (column, code) cells. Codes come from
  ``pd.factorize`` (first-appearance order, not alphabetical): sorting by them puts equal
  sequences, and equal prefixes, next to each other, which is all prefix sharing needs.
  For fixed field orders this order is optimal: a row can only share its prefix with the
  previous row, so every trie node of the sequences with k rows below it gives at most
  k-1 hits, and a lexicographic order (a depth-first walk of that trie) gets exactly k-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ggr_kv.core.table import Table
from ggr_kv.reorder.blockscore import _lexsort_rows

__all__ = ["Units", "build_units", "column_scores", "expand_perm", "fixed_order", "sort_rows"]


@dataclass(frozen=True)
class Units:
    """A table seen as reorder units (columns, FD groups merged).

    Attributes
    ----------
    members : original column indices of each unit, in the unit's internal order.
    codes : ``(n, u)`` int64 unit codes; equal code = every member cell equal.
    weights : per unit, ``(n_distinct,)`` int64 weight of each code (characters^2).
    row_chars : ``(n, u)`` int64 characters of each unit cell (sum over members).
    n_distinct : ``(u,)`` distinct codes per unit.
    """

    members: tuple[tuple[int, ...], ...]
    codes: np.ndarray
    weights: tuple[np.ndarray, ...]
    row_chars: np.ndarray
    n_distinct: np.ndarray

    @property
    def n_rows(self) -> int:
        return self.codes.shape[0]

    @property
    def n_units(self) -> int:
        return self.codes.shape[1]

    def cell_weights(self) -> np.ndarray:
        """``(n, u)`` int64 weight of every unit cell."""
        out = np.empty(self.codes.shape, dtype=np.int64)
        for j, w in enumerate(self.weights):
            out[:, j] = w[self.codes[:, j]]
        return out


def _combine_codes(cols: np.ndarray) -> np.ndarray:
    """Dense codes of the row tuples of ``cols`` (``(n, k)`` non-negative ints)."""
    code = cols[:, 0].astype(np.int64)
    for j in range(1, cols.shape[1]):
        nxt = cols[:, j].astype(np.int64)
        width = int(nxt.max()) + 1 if len(nxt) else 1
        code = pd.factorize(code * width + nxt)[0].astype(np.int64)
    return code


def _weight_by_code(codes: np.ndarray, per_row: np.ndarray, n_codes: int) -> np.ndarray:
    w = np.zeros(n_codes, dtype=np.int64)
    w[codes] = per_row  # every row with one code has the same cells, hence the same weight
    return w


def build_units(table: Table, groups: Sequence[Sequence[int]] = ()) -> Units:
    """Merge each FD group (column indices) into one unit; other columns stay single.

    Members of a group are ordered by their `column_scores` (descending; ties keep the
    declared order), as the paper's column merging does. Units are listed in the table's
    column order, a group at the position of its first column.
    """
    n, m = table.codes.shape
    in_group = {}
    for gi, g in enumerate(groups):
        for c in g:
            in_group[c] = gi
    col_score = _scores_from(
        table.codes.astype(np.int64),
        table.lengths,
        np.array([int(table.codes[:, j].max()) + 1 for j in range(m)]),
    )
    members: list[tuple[int, ...]] = []
    seen: set[int] = set()
    for j in range(m):
        if j in in_group:
            gi = in_group[j]
            if gi in seen:
                continue
            seen.add(gi)
            g = list(groups[gi])
            members.append(tuple(sorted(g, key=lambda c: (-col_score[c], g.index(c)))))
        else:
            members.append((j,))
    u = len(members)
    codes = np.empty((n, u), dtype=np.int64)
    row_chars = np.empty((n, u), dtype=np.int64)
    weights = []
    n_distinct = np.empty(u, dtype=np.int64)
    sq = table.lengths.astype(np.int64) ** 2
    for k, mem in enumerate(members):
        idx = list(mem)
        c = _combine_codes(table.codes[:, idx]) if len(idx) > 1 else table.codes[:, idx[0]]
        codes[:, k] = c
        nd = int(c.max()) + 1 if n else 0
        n_distinct[k] = nd
        row_chars[:, k] = table.lengths[:, idx].sum(axis=1)
        weights.append(_weight_by_code(codes[:, k], sq[:, idx].sum(axis=1), nd))
    return Units(tuple(members), codes, tuple(weights), row_chars, n_distinct)


def _scores_from(codes: np.ndarray, chars: np.ndarray, n_distinct: np.ndarray) -> np.ndarray:
    n = codes.shape[0]
    avg = chars.mean(axis=0) if n else np.zeros(codes.shape[1])
    nd = np.maximum(np.asarray(n_distinct, dtype=float), 1.0)
    score = avg**2 * (n / nd - 1.0)
    return np.where(np.asarray(n_distinct) >= n, 0.0, score)


def column_scores(units: Units) -> np.ndarray:
    """The paper's column statistics score of each unit.

    Returns
    -------
    ``(u,)`` float: avg_len^2 * (n / n_distinct - 1) with avg_len in characters, or 0
    where every value is distinct.
    """
    return _scores_from(units.codes, units.row_chars, units.n_distinct)


def fixed_order(scores: np.ndarray) -> np.ndarray:
    """Unit indices by descending score; ties keep the table's order."""
    return np.argsort(-np.asarray(scores, dtype=float), kind="stable")


def one_order(perm: np.ndarray) -> bool:
    """Whether ``(n, k)`` orders are one row broadcast to every row (stride 0, n > 1)."""
    return perm.ndim == 2 and len(perm) > 1 and perm.strides[0] == 0


def expand_perm(units: Units, unit_perm: np.ndarray) -> np.ndarray:
    """Turn ``(n, u)`` unit orders into ``(n, m)`` int32 column orders (members expanded).

    One order broadcast to every row (stride 0) is expanded once and copied.
    """
    unit_perm = np.asarray(unit_perm)
    n = unit_perm.shape[0]
    m = sum(len(mm) for mm in units.members)
    if one_order(unit_perm):
        out = np.empty((n, m), dtype=np.int32)
        out[:] = expand_perm(units, unit_perm[:1])
        return out
    if all(len(mm) == 1 for mm in units.members):
        lut = np.array([mm[0] for mm in units.members], dtype=np.int32)
        return lut[unit_perm]
    width = max(len(mm) for mm in units.members)
    lut = np.full((units.n_units, width), -1, dtype=np.int32)
    for k, mm in enumerate(units.members):
        lut[k, : len(mm)] = mm
    wide = lut[unit_perm].reshape(n, -1)
    return wide[wide >= 0].reshape(n, m)


def sort_rows(codes: np.ndarray, perm: np.ndarray) -> np.ndarray:
    """Row order that sorts rows by their (column, code) sequences under ``perm``.

    Parameters
    ----------
    codes : ``(n, m)`` per-column codes (non-negative).
    perm : ``(n, m)`` column order of each row.

    Returns
    -------
    ``(n,)`` int64 row indices; rows with equal leading cells end up adjacent, which
    maximizes PHC for these field orders (see the module docstring).
    """
    n, m = codes.shape
    if n <= 1:
        return np.arange(n, dtype=np.int64)
    perm = perm.astype(np.intp)
    seq = np.take_along_axis(codes, perm, 1).astype(np.int64)
    width = int(codes.max()) + 1
    # (column, code) as one int per position; `_lexsort_rows` packs each position in the
    # bits its range needs (one column's codes where every row has the same order)
    return _lexsort_rows(perm.astype(np.int64) * width + seq)
