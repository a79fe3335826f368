"""The built-in orderings' functions, as `ggr_kv.reorder.registry` calls them:
``fn(table, units, knobs) -> (plan or per-row unit order, info)``.

- ``original``: the input order, columns as given.
- ``sorted``: one field order for every row from column statistics (the paper's
  fallback), rows sorted lexicographically in that order.
- ``ggr``: Greedy Group Recursion (`ggr_kv.reorder.ggr`).
- ``ophr``: the exact optimum of PHC (`ggr_kv.reorder.ophr`; small tables only).
- ``blocks``: the prompt tokens vLLM's prefix cache serves (`ggr_kv.reorder.blockmethod`).
- ``trie``: a baseline: rows in the prompts' token-trie DFS order (`ggr_kv.reorder.trie`).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.table import Table
from ggr_kv.reorder.blockmethod import blocks_config, blocks_plan
from ggr_kv.reorder.ggr import ggr_config, ggr_unit_order
from ggr_kv.reorder.ggrpick import ggr_pick
from ggr_kv.reorder.ophr import DEFAULT_MAX_CELLS, DEFAULT_MAX_ROWS, ophr_unit_order
from ggr_kv.reorder.trie import trie_plan
from ggr_kv.reorder.units import Units, column_scores, expand_perm, fixed_order

__all__ = ["blocks", "ggr", "ophr", "original", "sorted_order", "trie"]


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


def original(t: Table, units: Units, knobs: dict[str, Any]) -> tuple[ReorderPlan, dict]:
    """The input order, columns as given."""
    return ReorderPlan.identity(t), {"knobs": {}}


def sorted_order(t: Table, units: Units, knobs: dict[str, Any]) -> tuple[np.ndarray, dict]:
    """The statistics field order for every row (rows are sorted by `reorder`)."""
    order = fixed_order(column_scores(units)).astype(np.int32)
    fields = [t.columns[c] for c in expand_perm(units, order[None, :])[0]]
    return np.broadcast_to(order, (t.n_rows, units.n_units)), {"knobs": {}, "field_order": fields}


def ggr(t: Table, units: Units, knobs: dict[str, Any]) -> tuple[np.ndarray, dict]:
    """Greedy Group Recursion; knobs: ``preset``, ``pick``, ``progress`` and `GGRConfig`'s.

    ``pick`` (default: True with ``preset="ours"`` and no other GGR knob) also solves
    with the paper's preset and keeps the plan sharing more characters (`ggr_pick`)."""
    knobs = dict(knobs)
    preset = knobs.pop("preset", "ours")
    progress = bool(knobs.pop("progress", False))
    pick = bool(knobs.pop("pick", preset == "ours" and not knobs))
    cfg = ggr_config(preset, **knobs)
    info: dict[str, Any] = {}
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
    return unit_perm, info


def ophr(t: Table, units: Units, knobs: dict[str, Any]) -> tuple[np.ndarray, dict]:
    """The exact PHC optimum; knobs ``max_cells``, ``max_rows`` (size limits)."""
    max_cells = _int_knob(knobs, "max_cells", DEFAULT_MAX_CELLS)
    max_rows = _int_knob(knobs, "max_rows", DEFAULT_MAX_ROWS)
    unit_perm, best, oinfo = ophr_unit_order(units, max_cells, max_rows)
    info = {"knobs": {"max_cells": max_cells, "max_rows": max_rows}, "optimal_phc": best}
    return unit_perm, {**info, **oinfo}


def trie(t: Table, units: Units, knobs: dict[str, Any]) -> tuple[ReorderPlan, dict]:
    """Rows in token-trie DFS order, fields as given (`ggr_kv.reorder.trie`)."""
    return trie_plan(t, units, **knobs)


def blocks(t: Table, units: Units, knobs: dict[str, Any]) -> tuple[ReorderPlan, dict]:
    """Block-aware search (knobs: `blockmethod.BLOCKS_KNOBS`)."""
    return blocks_plan(t, units, blocks_config(**knobs))
