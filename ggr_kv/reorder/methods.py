"""Reorder a table's rows and per-row field orders so that prompts share prefixes.

Methods (`METHODS`; each one is an entry of `ggr_kv.reorder.registry`, where a new one
is registered):

- ``original``: the input order, columns as given (`ReorderPlan.identity`).
- ``sorted``: one field order for every row from column statistics (the paper's
  fallback: score = avg_len^2 * (n / n_distinct - 1), 0 if all distinct, descending),
  rows sorted lexicographically in that order. The sort uses ``pd.factorize`` codes, so
  values are not in alphabetical order: equal values, and equal prefixes, are adjacent,
  which is all that prefix sharing needs.
- ``ggr``: Greedy Group Recursion (paper Algorithm 1), see `ggr_kv.reorder.ggr` for the
  algorithm, its knobs (``preset="paper"`` gives the paper's settings) and what differs;
  by default both our settings and the paper's run and the plan sharing more characters
  wins (`ggr_kv.reorder.ggrpick`).
- ``ophr``: the exact optimum (exponential; small tables only), see `ggr_kv.reorder.ophr`.
- ``blocks``: the prompt tokens vLLM's prefix cache really serves (real tokenizer, whole
  KV blocks, the last-token rule, the shared head), searched from the ``original``,
  ``sorted`` and ``ggr`` plans and a greedy fixed order by exact scoring, so it is never
  below them under the same settings; with ``kv_blocks`` the row order is also chosen
  for a finite cache with the simulator. See `ggr_kv.reorder.blockaware` and
  `ggr_kv.reorder.cacheaware`.
- ``trie`` (baseline): fields as given, rows in the depth-first order of the prompts'
  token trie (BatchLLM / SGLang style), see `ggr_kv.reorder.trie`.

Objectives: ``sorted``, ``ggr`` and ``ophr`` maximize PHC (the paper's squared shared
characters, a proxy); ``blocks`` maximizes the block hit rate (what vLLM caches).

FD groups (``fds=[("movie_title", "movie_info"), ...]`` or ``fds="auto"``) keep their
columns next to each other in every row; see `ggr_kv.reorder.fd`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.table import Table, load_table
from ggr_kv.reorder.fd import resolve_fd_groups
from ggr_kv.reorder.ophr import OPHRTooLarge
from ggr_kv.reorder.registry import Ordering, get_ordering, method_names
from ggr_kv.reorder.units import build_units, expand_perm, sort_rows

__all__ = ["METHODS", "OPHRTooLarge", "ReorderResult", "knobs_of", "reorder"]

#: the built-in methods (`ggr_kv.reorder.registry.method_names` also lists ones
#: registered later)
METHODS: tuple[str, ...] = method_names()


def knobs_of(method: str) -> tuple[str, ...]:
    """Knobs ``reorder(table, method, ...)`` declares (empty for an unknown method)."""
    o = get_ordering(method)
    return o.knobs if o is not None else ()


@dataclass
class ReorderResult:
    """What `reorder` returns.

    Attributes
    ----------
    plan : the row order and per-row field orders.
    method : the method's name.
    seconds : wall time of the solver (s), without loading the table.
    info : knobs used, FD groups used and their checks, groups formed, fallbacks taken,
        solver details.
    """

    plan: ReorderPlan
    method: str
    seconds: float
    info: dict = field(default_factory=dict)


def _ordering(method: str) -> Ordering:
    o = get_ordering(method)
    if o is None or o.order is None:
        raise ValueError(f"unknown reorder method {method!r}; valid methods: {list(method_names())}")
    return o


def _check_knobs(o: Ordering, knobs: dict[str, Any]) -> None:
    unknown = [k for k in knobs if k not in o.knobs]
    if unknown:
        valid = ", ".join(o.knobs) if o.knobs else "none"
        raise TypeError(f"unknown knob(s) {unknown} for method {o.name!r}; valid knobs: {valid}")


def reorder(
    table: Table | pd.DataFrame | str | Path,
    method: str,
    fds: list[tuple[str, ...]] | str | None = None,
    **knobs: Any,
) -> ReorderResult:
    """Compute a reorder plan for ``table`` with ``method``.

    Parameters
    ----------
    table : a `Table`, a DataFrame (not modified) or a CSV/Parquet path.
    method : a registered method (`ggr_kv.reorder.registry.method_names`).
    fds : FD groups (tuples of column names) that travel together, ``"auto"`` to
        discover exact ones, or None. A declared group that is not an exact FD in the
        data is used anyway, with an `ggr_kv.reorder.fd.FDWarning` giving its violation count.
    **knobs : method options. ``ggr``: ``preset`` (``"ours"`` or ``"paper"``), ``pick``
        (default: True with ``preset="ours"`` and no other GGR knob: also solve with the
        paper's preset and keep the plan with the higher `paper_char_hit_rate`, see
        `ggr_kv.reorder.ggrpick`),
        ``early_stop``, ``distinct_value_threshold``, ``row_stop``, ``col_stop``,
        ``chunk_rows``, ``constant_first``, ``progress``. ``ophr``: ``max_cells``,
        ``max_rows``. ``blocks``: ``tokenizer`` (name, model folder or tokenizer object;
        default ``"llama3"``), ``block_size`` (tokens, default 16; the CPU backend uses
        128), ``query``, ``instruction`` (the prompts' shared text, as the run will use
        it), ``kv_blocks`` (KV blocks of the engine; None = unbounded cache) with
        ``max_num_seqs``, ``output_len``, ``max_num_batched_tokens`` (the simulated
        engine), ``refine_seeds``, ``progress``.

    Returns
    -------
    `ReorderResult`.

    Raises
    ------
    ValueError
        unknown method (the message lists the valid ones); `OPHRTooLarge` (a
        ValueError) for a table too large for ``ophr``.
    TypeError
        unknown knob (named in the message).
    TableError
        bad table, or an FD column that is not in the table.
    """
    o = _ordering(method)
    _check_knobs(o, knobs)
    if o.check is not None:
        o.check(**knobs)  # bad values fail before the table loads
    t_load = time.perf_counter()
    t = load_table(table)
    load_s = time.perf_counter() - t_load

    t0 = time.perf_counter()
    info: dict[str, Any] = {"load_seconds": load_s}
    if o.uses_fds:
        groups, checks = resolve_fd_groups(t, fds)
    else:
        groups, checks = [], []
        if fds is not None:
            resolve_fd_groups(t, fds, warn=False)  # bad column names still raise
            info["note"] = f"fds are ignored by {method!r}"
    units = build_units(t, groups)
    info["fd_groups"] = [
        [t.columns[c] for c in units.members[k]]
        for k in range(units.n_units)
        if len(units.members[k]) > 1
    ]
    info["fd_checks"] = [asdict(c) for c in checks]
    out, extra = o.order(t, units, dict(knobs))
    info.update(extra)
    if isinstance(out, ReorderPlan):
        plan = out
    else:
        col_perm = expand_perm(units, np.ascontiguousarray(out))
        row_order = sort_rows(t.codes, col_perm)
        dtype = np.int16 if t.n_cols < np.iinfo(np.int16).max else np.int32
        plan = ReorderPlan(t.columns, row_order, col_perm[row_order].astype(dtype))
    seconds = time.perf_counter() - t0
    info["solver_seconds"] = seconds
    return ReorderResult(plan, method, seconds, info)
