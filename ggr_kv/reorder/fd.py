"""Functional dependencies (FDs) between columns: declared groups, discovery, checks.

An FD ``A -> B`` holds when each value of A comes with one value of B. Its *confidence*
is the fraction (0-1) of rows that agree with the majority mapping: for each value of A,
the rows holding A's most common B value count as consistent; the others are
*violations*. Columns that determine each other (``title <-> link <-> info``) form an
*FD group*: the reorder methods keep a group's fields next to each other and score a
group's value with all its cells (see `ggr_kv.reorder`).

Everything is counted on the table's integer codes (``bincount`` / ``factorize`` over
code pairs), never on strings.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ggr_kv.core.table import Table, TableError, load_table

__all__ = [
    "FD",
    "FDGroupCheck",
    "FDWarning",
    "check_fd_group",
    "discover_fd_groups",
    "discover_fds",
    "fd_confidence",
    "fd_groups",
    "resolve_fd_groups",
]


class FDWarning(UserWarning):
    """A declared FD group does not hold exactly in the data."""


@dataclass(frozen=True)
class FD:
    """One functional dependency ``determinant -> dependent``.

    Attributes
    ----------
    determinant, dependent : column names.
    confidence : fraction (0-1) of rows consistent with the majority mapping.
    violations : rows inconsistent with it (``n_rows * (1 - confidence)``).
    n_distinct : distinct values of the determinant.
    n_distinct_dependent : distinct values of the dependent.
    """

    determinant: str
    dependent: str
    confidence: float
    violations: int
    n_distinct: int
    n_distinct_dependent: int


@dataclass(frozen=True)
class FDGroupCheck:
    """How well a group of columns determine each other.

    Attributes
    ----------
    columns : the group's columns.
    violations : rows to change so that EVERY member determines all the others (the
        worst member counts).
    confidence : ``1 - violations / n_rows`` (0-1).
    holds : True when there are no violations (a 1:1 group).
    """

    columns: tuple[str, ...]
    violations: int
    confidence: float
    holds: bool


def _pair_consistent(a: np.ndarray, b: np.ndarray, na: int, nb: int) -> int:
    """Rows whose ``b`` is the most common ``b`` of their ``a`` value."""
    key = a.astype(np.int64) * nb + b.astype(np.int64)
    if na * nb <= 4 * len(key) + 1024:
        cnt = np.bincount(key, minlength=na * nb)
        return int(cnt.reshape(na, nb).max(axis=1).sum())
    kid, uniq = pd.factorize(key)
    cnt = np.bincount(kid)
    best = np.zeros(na, dtype=np.int64)
    np.maximum.at(best, np.asarray(uniq, dtype=np.int64) // nb, cnt)
    return int(best.sum())


def _n_distinct(table: Table) -> np.ndarray:
    return table.codes.max(axis=0).astype(np.int64) + 1


def fd_confidence(table: Table | pd.DataFrame | str, determinant: str, dependent: str) -> FD:
    """Measure ``determinant -> dependent`` in ``table``.

    Returns
    -------
    `FD` with the confidence (0-1) and the violation count (rows).
    """
    t = load_table(table)
    i, j = t.col_index(determinant), t.col_index(dependent)
    nd = _n_distinct(t)
    ok = _pair_consistent(t.codes[:, i], t.codes[:, j], int(nd[i]), int(nd[j]))
    n = t.n_rows
    return FD(determinant, dependent, ok / n, n - ok, int(nd[i]), int(nd[j]))


def discover_fds(
    table: Table | pd.DataFrame | str,
    min_confidence: float = 1.0,
    *,
    max_distinct_fraction: float = 0.7,
    min_distinct: int = 2,
    columns: Sequence[str] | None = None,
) -> list[FD]:
    """Find FDs ``A -> B`` between columns with confidence >= ``min_confidence``.

    Parameters
    ----------
    table : a `Table`, DataFrame or CSV/Parquet path.
    min_confidence : 0-1; 1.0 keeps exact FDs only.
    max_distinct_fraction : skip determinants with more distinct values than this
        fraction (0-1) of the rows: a near-unique column determines everything.
    min_distinct : skip columns with fewer distinct values (a constant column is
        determined by anything).
    columns : only consider these columns (default: all).

    Returns
    -------
    FDs sorted by descending confidence, then determinant and dependent names.
    """
    if not 0.0 <= min_confidence <= 1.0:
        raise ValueError(f"min_confidence must be a fraction in [0, 1], got {min_confidence!r}")
    t = load_table(table)
    idx = [t.col_index(c) for c in columns] if columns is not None else range(t.n_cols)
    idx = list(idx)
    n = t.n_rows
    nd = _n_distinct(t)
    out = []
    for i in idx:
        if nd[i] < min_distinct or nd[i] > max_distinct_fraction * n:
            continue
        for j in idx:
            if j == i or nd[j] < min_distinct:
                continue
            if nd[j] > nd[i] and min_confidence >= 1.0:
                continue  # A cannot determine a column with more distinct values
            ok = _pair_consistent(t.codes[:, i], t.codes[:, j], int(nd[i]), int(nd[j]))
            conf = ok / n
            if conf >= min_confidence:
                out.append(FD(t.columns[i], t.columns[j], conf, n - ok, int(nd[i]), int(nd[j])))
    out.sort(key=lambda f: (-f.confidence, f.determinant, f.dependent))
    return out


def fd_groups(fds: Iterable[FD], columns: Sequence[str] | None = None) -> list[tuple[str, ...]]:
    """Groups of columns joined by FDs in BOTH directions (connected components).

    ``columns`` (e.g. ``table.columns``) sets the order inside each group and of the
    groups; by default names are sorted.
    """
    fds = list(fds)
    pairs = {(f.determinant, f.dependent) for f in fds}
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in pairs:
        if (b, a) in pairs:
            parent[find(a)] = find(b)
    comps: dict[str, list[str]] = {}
    for x in parent:
        comps.setdefault(find(x), []).append(x)
    pos = {c: i for i, c in enumerate(columns)} if columns is not None else None
    key = (lambda c: pos.get(c, len(pos))) if pos is not None else (lambda c: c)
    groups = [tuple(sorted(g, key=key)) for g in comps.values() if len(g) > 1]
    groups.sort(key=lambda g: key(g[0]))
    return groups


def discover_fd_groups(
    table: Table | pd.DataFrame | str, min_confidence: float = 1.0, **kwargs: object
) -> list[tuple[str, ...]]:
    """FD groups (columns that determine each other) found by `discover_fds`."""
    t = load_table(table)
    return fd_groups(discover_fds(t, min_confidence, **kwargs), t.columns)


def check_fd_group(table: Table | pd.DataFrame | str, group: Sequence[str]) -> FDGroupCheck:
    """Count how far ``group``'s columns are from determining each other.

    Returns
    -------
    `FDGroupCheck`: violations (rows) = max over members A of the rows whose group
    tuple is not the most common tuple of their A value.
    """
    t = load_table(table)
    idx = [t.col_index(c) for c in group]
    codes = t.codes[:, idx].astype(np.int64)
    tup = codes[:, 0]
    for k in range(1, codes.shape[1]):
        width = int(codes[:, k].max()) + 1
        tup = pd.factorize(tup * width + codes[:, k])[0].astype(np.int64)
    nt = int(tup.max()) + 1
    n = t.n_rows
    worst = 0
    for k in range(codes.shape[1]):
        na = int(codes[:, k].max()) + 1
        worst = max(worst, n - _pair_consistent(codes[:, k], tup, na, nt))
    return FDGroupCheck(tuple(t.columns[i] for i in idx), worst, 1 - worst / n, worst == 0)


def resolve_fd_groups(
    table: Table,
    fds: Sequence[Sequence[str]] | str | None,
    *,
    warn: bool = True,
) -> tuple[list[tuple[int, ...]], list[FDGroupCheck]]:
    """Validate declared FD groups (or discover them with ``fds="auto"``).

    Parameters
    ----------
    table : the table.
    fds : a list of column-name groups, ``"auto"`` (exact groups found by
        `discover_fd_groups`) or None.
    warn : emit an `FDWarning` for each declared group that is not an exact FD.

    Returns
    -------
    groups as column indices (groups of one column are dropped) and their checks.

    Raises
    ------
    TableError
        a column is not in the table (the message lists the available ones), or a
        column appears in two groups.
    """
    if fds is None:
        return [], []
    if isinstance(fds, str):
        if fds != "auto":
            raise ValueError(f"fds must be a list of column groups, 'auto' or None, got {fds!r}")
        named = discover_fd_groups(table)
    else:
        named = []
        for g in fds:
            if isinstance(g, str):
                raise TableError(
                    f"{table.source}: FD group {g!r} is a single name; pass groups as "
                    f"tuples of column names, e.g. fds=[('title', 'info')]"
                )
            named.append(tuple(g))
    groups: list[tuple[int, ...]] = []
    checks: list[FDGroupCheck] = []
    owner: dict[str, tuple[str, ...]] = {}
    for g in named:
        idx = tuple(table.col_index(c) for c in g)  # TableError names a missing column
        if len(set(idx)) != len(idx):
            raise TableError(f"{table.source}: FD group {g} repeats a column")
        for c in g:
            if c in owner:
                raise TableError(
                    f"{table.source}: column {c!r} is in two FD groups: {owner[c]} and {g}"
                )
            owner[c] = g
        if len(idx) < 2:
            continue
        chk = check_fd_group(table, g)
        if warn and not chk.holds:
            warnings.warn(
                f"{table.source}: declared FD group {chk.columns} is not an exact FD: "
                f"{chk.violations} of {table.n_rows} rows violate it "
                f"(confidence {chk.confidence:.3f}); it is used as declared",
                FDWarning,
                stacklevel=3,
            )
        groups.append(idx)
        checks.append(chk)
    return groups, checks
