"""OPHR: the exact maximum PHC over every row order and every per-row field order.

For fixed field orders the best row order is a lexicographic sort (`ggr_kv.reorder.units.
sort_rows`), and its PHC is the weight of the trie of the rows' cell sequences: each trie
node with k rows below it adds ``len^2 * (k - 1)``. So the optimum is the best *recursive
partition*: the rows of a sub-table (all with the same remaining fields) split into
groups, each group labelled by one (field, value) that all its rows hold; a group scores
``w * (size - 1)`` plus the optimum of the group without that field.

The paper's OPHR (``MPHC.max_prefix_hit_cnt``) only tries groups that take *every*
remaining row holding the value. That is not always optimal. Example, 5 rows x 3 fields,
values ``a..e`` with weights 16 (``c0=0``), 9 (``c2=0``), 100 (``c1=1``)::

    (c0=1, c1=1, c2=0)   (c0=2, c1=2, c2=0)   (c0=0, c1=1, c2=0)
    (c0=0, c1=2, c2=2)   (c0=0, c1=0, c2=0)

The optimum (134) groups rows 4-5 by ``c0=0`` (without row 3, which also has c0=0) and
rows 1-3 by ``c2=0`` (without row 5); every "all rows holding v" search stops at 127.
This module therefore enumerates every subset of the rows holding the first row's value
(set-partition DP: the lowest row is either alone or in a group with a subset of the
rows that share one of its cells), memoized on (row bitmask, field bitmask), with three
rules that keep the optimum:

- a field constant over the sub-table goes first (every shared prefix stays intact);
- rows that share no cell with any other row of the sub-table score 0 and leave it;
- labels of weight 0 (empty cells) are never needed.

Exponential: `ophr_unit_order` refuses tables over ``max_cells`` cells or ``max_rows``
rows.
"""

from __future__ import annotations

import sys
import time

import numpy as np

from ggr_kv.reorder.units import Units, column_scores, fixed_order

__all__ = ["DEFAULT_MAX_CELLS", "DEFAULT_MAX_ROWS", "OPHRTooLarge", "ophr_unit_order"]

#: default size limits (rows x units, and rows) of the exact search: a few seconds at most
#: on adversarial tables here (14 rows x 4 fields of 2-4 values each: ~2 s)
DEFAULT_MAX_CELLS = 56
DEFAULT_MAX_ROWS = 14


class OPHRTooLarge(ValueError):
    """The table is too large for the exact (exponential) search."""


def _popcount(x: int) -> int:
    return x.bit_count()


def _check_size(n: int, u: int, max_cells: int, max_rows: int) -> None:
    if n * u > max_cells or n > max_rows:
        raise OPHRTooLarge(
            f"ophr is exponential: the table has {n} rows x {u} fields = {n * u} cells, "
            f"limits are max_cells={max_cells} and max_rows={max_rows}; use 'ggr' or pass "
            f"larger max_cells/max_rows knobs"
        )


def _value_masks(T: list[list[int]], n: int, u: int) -> list[dict[int, int]]:
    """Per unit: code -> bit mask of the rows holding it."""
    masks: list[dict[int, int]] = [{} for _ in range(u)]
    for r in range(n):
        for c in range(u):
            masks[c][T[r][c]] = masks[c].get(T[r][c], 0) | (1 << r)
    return masks


def _solver(T: list[list[int]], W: list[list[int]], n: int, u: int):
    """The memoized search ``f(rows S, units C) -> best PHC``, its memo and its choices."""
    masks = _value_masks(T, n, u)
    memo: dict[tuple[int, int], int] = {}
    choice: dict[tuple[int, int], tuple] = {}

    def f(S: int, C: int) -> int:
        if S & (S - 1) == 0 or C == 0:
            return 0
        key = (S, C)
        got = memo.get(key)
        if got is not None:
            return got
        k = _popcount(S)
        rows = [r for r in range(n) if S >> r & 1]
        cols = [c for c in range(u) if C >> c & 1]
        r0 = rows[0]
        # constant fields first
        const = [c for c in cols if masks[c][T[r0][c]] & S == S]
        if const:
            cm = 0
            for c in const:
                cm |= 1 << c
            best = sum(W[c][T[r0][c]] for c in const) * (k - 1) + f(S, C & ~cm)
            memo[key] = best
            choice[key] = ("const", const)
            return best
        # rows that share nothing with the others leave
        lonely = 0
        for r in rows:
            if not any(masks[c][T[r][c]] & S & ~(1 << r) for c in cols):
                lonely |= 1 << r
        if lonely:
            best = f(S & ~lonely, C)
            memo[key] = best
            choice[key] = ("drop", lonely)
            return best
        bit0 = 1 << r0
        best = f(S & ~bit0, C)
        arg: tuple = ("alone", r0)
        for c in cols:
            v = T[r0][c]
            w = W[c][v]
            M = masks[c][v] & S & ~bit0
            if w == 0 or M == 0:
                continue
            Cc = C & ~(1 << c)
            sub = M
            while sub:
                G = sub | bit0
                val = w * _popcount(sub) + f(G, Cc) + f(S & ~G, C)
                if val > best:
                    best, arg = val, ("group", c, G)
                sub = (sub - 1) & M
        memo[key] = best
        choice[key] = arg
        return best

    return f, memo, choice


def _prefixes(choice: dict, n: int, u: int) -> list[list[int]]:
    """Walk the optimal choices from the full table: each row's leading units."""
    prefix: list[list[int]] = [[] for _ in range(n)]
    stack = [((1 << n) - 1, (1 << u) - 1)]
    while stack:
        S, C = stack.pop()
        if S == 0:
            continue
        ch = choice.get((S, C))
        if ch is None:  # terminal: nothing more to share
            continue
        if ch[0] == "const":
            cm = 0
            for c in ch[1]:
                cm |= 1 << c
                for r in range(n):
                    if S >> r & 1:
                        prefix[r].append(c)
            stack.append((S, C & ~cm))
        elif ch[0] == "drop":
            stack.append((S & ~ch[1], C))
        elif ch[0] == "alone":
            stack.append((S & ~(1 << ch[1]), C))
        else:
            _, c, G = ch
            for r in range(n):
                if G >> r & 1:
                    prefix[r].append(c)
            stack.append((G, C & ~(1 << c)))
            stack.append((S & ~G, C))
    return prefix


def ophr_unit_order(
    units: Units, max_cells: int = DEFAULT_MAX_CELLS, max_rows: int = DEFAULT_MAX_ROWS
) -> tuple[np.ndarray, int, dict]:
    """Per-row unit orders of an optimal plan.

    Parameters
    ----------
    units : the table as reorder units.
    max_cells : refuse tables with more than this many cells (rows x units).
    max_rows : refuse tables with more rows than this.

    Returns
    -------
    ``(n, u)`` int32 unit orders, the optimal PHC (characters^2, each unit scoring the
    sum of its members' squared lengths) and an info dict (``states``: memo entries).

    Steps: `_check_size`, `_solver` (the memoized search over row and unit subsets),
    `_prefixes` (the optimal choices as leading units per row), then the statistics
    order for the rest of each row.
    """
    n, u = units.codes.shape
    _check_size(n, u, max_cells, max_rows)
    f, memo, choice = _solver(units.codes.tolist(), [w.tolist() for w in units.weights], n, u)
    t0 = time.perf_counter()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        best = f((1 << n) - 1, (1 << u) - 1)
    finally:
        sys.setrecursionlimit(limit)
    base = [int(c) for c in fixed_order(column_scores(units))]
    prefix = _prefixes(choice, n, u)
    order = np.empty((n, u), dtype=np.int32)
    for r in range(n):
        head = prefix[r]
        order[r] = head + [c for c in base if c not in head]
    info = {"states": len(memo), "search_seconds": time.perf_counter() - t0}
    return order, int(best), info
