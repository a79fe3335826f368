"""Reorder a table's rows and per-row field orders so that prompts share prefixes.

Methods (`METHODS`):

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
from ggr_kv.reorder.blockmethod import BLOCKS_KNOBS, blocks_config, blocks_plan
from ggr_kv.reorder.fd import resolve_fd_groups
from ggr_kv.reorder.ggr import KNOBS as GGR_KNOBS
from ggr_kv.reorder.ggr import ggr_config, ggr_unit_order
from ggr_kv.reorder.ggrpick import ggr_pick
from ggr_kv.reorder.ophr import DEFAULT_MAX_CELLS, DEFAULT_MAX_ROWS, OPHRTooLarge, ophr_unit_order
from ggr_kv.reorder.trie import TRIE_KNOBS, trie_plan
from ggr_kv.reorder.units import build_units, column_scores, expand_perm, fixed_order, sort_rows

__all__ = ["KNOBS", "METHODS", "OPHRTooLarge", "ReorderResult", "reorder"]

METHODS: tuple[str, ...] = ("original", "sorted", "ggr", "ophr", "blocks", "trie")

#: knobs each method takes (`reorder`'s ``**knobs``)
KNOBS: dict[str, tuple[str, ...]] = {
    "original": (),
    "sorted": (),
    "ggr": ("preset", "pick", "progress", *GGR_KNOBS),
    "ophr": ("max_cells", "max_rows"),
    "blocks": BLOCKS_KNOBS,
    "trie": TRIE_KNOBS,  # baseline: rows in token-trie DFS order, fields as given
}


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


def _int_knob(knobs: dict[str, Any], name: str, default: int) -> int:
    """A positive integer knob, or a ValueError naming it and its value."""
    value = knobs.get(name, default)
    try:
        out = int(value)
    except (TypeError, ValueError):
        out = 0
    if out < 1 or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"knob {name}={value!r}: expected a positive integer")
    return out


def _check_knobs(method: str, knobs: dict[str, Any]) -> None:
    allowed = KNOBS[method]
    unknown = [k for k in knobs if k not in allowed]
    if unknown:
        valid = ", ".join(allowed) if allowed else "none"
        raise TypeError(f"unknown knob(s) {unknown} for method {method!r}; valid knobs: {valid}")


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
    method : one of `METHODS`.
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
    if method not in METHODS:
        raise ValueError(f"unknown reorder method {method!r}; valid methods: {list(METHODS)}")
    _check_knobs(method, knobs)
    bcfg = blocks_config(**knobs) if method == "blocks" else None  # bad values fail first
    t_load = time.perf_counter()
    t = load_table(table)
    load_s = time.perf_counter() - t_load

    t0 = time.perf_counter()
    info: dict[str, Any] = {"load_seconds": load_s}
    if method == "original":
        plan = ReorderPlan.identity(t)
        info["knobs"] = {}
        info["fd_groups"] = []
        if fds is not None:
            resolve_fd_groups(t, fds, warn=False)  # bad column names still raise
            info["note"] = "fds are ignored by 'original'"
        return ReorderResult(plan, method, time.perf_counter() - t0, info)

    groups, checks = resolve_fd_groups(t, fds)
    units = build_units(t, groups)
    info["fd_groups"] = [
        [t.columns[c] for c in units.members[k]]
        for k in range(units.n_units)
        if len(units.members[k]) > 1
    ]
    info["fd_checks"] = [asdict(c) for c in checks]
    n, m = t.n_rows, t.n_cols
    if method == "sorted":
        order = fixed_order(column_scores(units)).astype(np.int32)
        unit_perm = np.broadcast_to(order, (n, units.n_units))
        info["knobs"] = {}
        info["field_order"] = [t.columns[c] for c in expand_perm(units, order[None, :])[0]]
    elif method == "ggr":
        preset = knobs.pop("preset", "ours")
        progress = bool(knobs.pop("progress", False))
        pick = bool(knobs.pop("pick", preset == "ours" and not knobs))
        cfg = ggr_config(preset, **knobs)
        if pick:
            unit_perm, ginfo, info["pick"] = ggr_pick(t, units, cfg, progress=progress)
        else:
            unit_perm, ginfo = ggr_unit_order(units, cfg, progress=progress)
        info["knobs"] = {"preset": preset, "pick": pick, **asdict(cfg)}
        info["groups_found"] = ginfo.pop("groups")
        info["fallbacks"] = ginfo.pop("fallback_rows")
        info["discarded_columns"] = [
            t.columns[c] for k in ginfo.pop("discarded_units") for c in units.members[k]
        ]
        info.update(ginfo)
    elif method in ("blocks", "trie"):
        plan, binfo = blocks_plan(t, units, bcfg) if bcfg else trie_plan(t, units, **knobs)
        info.update(binfo)
        seconds = time.perf_counter() - t0
        info["solver_seconds"] = seconds
        return ReorderResult(plan, method, seconds, info)
    else:  # ophr
        max_cells = _int_knob(knobs, "max_cells", DEFAULT_MAX_CELLS)
        max_rows = _int_knob(knobs, "max_rows", DEFAULT_MAX_ROWS)
        unit_perm, best, oinfo = ophr_unit_order(units, max_cells, max_rows)
        info["knobs"] = {"max_cells": max_cells, "max_rows": max_rows}
        info["optimal_phc"] = best
        info.update(oinfo)
    col_perm = expand_perm(units, np.ascontiguousarray(unit_perm))
    row_order = sort_rows(t.codes, col_perm)
    dtype = np.int16 if m < np.iinfo(np.int16).max else np.int32
    plan = ReorderPlan(t.columns, row_order, col_perm[row_order].astype(dtype))
    seconds = time.perf_counter() - t0
    info["solver_seconds"] = seconds
    return ReorderResult(plan, method, seconds, info)
