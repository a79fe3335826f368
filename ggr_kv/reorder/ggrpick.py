"""``ggr``'s final pick: our GGR and the paper's, keep the one that shares more characters.

Why (numbers: benchmarks/RESULTS-orderings.md)
----------------------------------------------
Neither GGR variant wins on every real table. Our ``split="hybrid"`` greedy, with no
depth caps, wins by 5-15 points of block hits on the FEC ``contributions`` table and by
up to 2 on the 100-row movies sample, but on the real 28,479-row ``beer`` ratings table
it loses 3-11 points to the paper's settings: inside a beer's group it keeps picking the
value with the best ``len^2 * (count - 1)`` (an ``overall`` of ``16/20``), a myopic
choice that splits the group over a 20-value field before the 5-value ``palate`` and
``appearance`` fields, while the paper's ``col_stop=2`` falls back to the statistics
order (which divides by the number of distinct values) two levels down and keeps the
low-cardinality ratings first, so more rows share longer prompt prefixes. On the
products sample the paper's order keeps the long ``description`` first in every row and
wins at 128-token blocks, ours wins at 16-64.

So ``ggr`` computes both field-order sets (the second with ``preset="paper"``, the
paper's knobs on the same FD units) and keeps ours only if it shares at least as many
characters as the paper's by both character measures: the paper's own metric
(`ggr_kv.reorder.metrics.paper_char_hit_rate`: cell values joined, a trie over earlier
rows) and the same trie over the rendered prompts (keys included, which is what the
tokens and blocks of vLLM follow). Either measure alone picks wrong on some table: on a
beer-like table ours shares more joined values but fewer prompt characters and blocks;
on the products sample the reverse. Tables above `PICK_ROWS` rows are scored on every
k-th row (both measures build one string per row).
"""

from __future__ import annotations

import numpy as np

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.table import Table
from ggr_kv.reorder.ggr import GGRConfig, ggr_config, ggr_unit_order
from ggr_kv.reorder.metrics import trie_char_hits
from ggr_kv.reorder.units import Units, expand_perm, sort_rows

__all__ = ["PICK_ROWS", "ggr_pick"]

#: rows scored by the pick; larger tables are scored on every k-th row (s ~ 2e-5 rows)
PICK_ROWS = 30_000


def _plan(t: Table, units: Units, unit_perm: np.ndarray) -> ReorderPlan:
    colperm = expand_perm(units, np.ascontiguousarray(unit_perm))
    rows = sort_rows(t.codes, colperm)
    dtype = np.int16 if t.n_cols < np.iinfo(np.int16).max else np.int32
    return ReorderPlan(t.columns, rows, colperm[rows].astype(dtype))


def _texts(t: Table, plan: ReorderPlan, keep: np.ndarray | None, keys: bool) -> list[str]:
    """Run-order texts of the kept rows: values joined, or ``"key": value, `` pieces."""
    rows, cols = plan.row_order, plan.ordered_columns()
    if keep is not None:
        sel = keep[rows]
        rows, cols = rows[sel], cols[sel]
    cells = t.cells[rows[:, None], cols]
    if keys:
        cells = np.array([f'"{c}": ' for c in t.columns], dtype=object)[cols] + cells + ", "
    return ["".join(r) for r in cells.tolist()]


def ggr_pick(
    t: Table, units: Units, cfg: GGRConfig, progress: bool = False
) -> tuple[np.ndarray, dict, dict]:
    """Unit orders of ``cfg``, or of the paper's preset where ours shares fewer characters.

    Returns ``(unit_perm, ggr_info, pick_info)``; ``pick_info`` has the characters each
    candidate shares by each measure (``prompt``, ``values``; the second only when the
    first keeps ours), the rows scored and the ``winner`` (``"ours"`` or ``"paper"``).
    """
    ours, info = ggr_unit_order(units, cfg, progress=progress)
    n = t.n_rows
    if n < 2:
        return ours, info, {"winner": "ours"}
    paper, pinfo = ggr_unit_order(units, ggr_config("paper"), progress=progress)
    keep = None
    if n > PICK_ROWS:  # every k-th row: the comparison, not the rate, is what counts
        keep = np.zeros(n, dtype=bool)
        keep[:: -(-n // PICK_ROWS)] = True
    plans = {"ours": _plan(t, units, ours), "paper": _plan(t, units, paper)}
    pick: dict = {"rows_scored": int(n if keep is None else keep.sum())}
    winner = "ours"
    for measure, keys in (("prompt", True), ("values", False)):
        hits = {k: trie_char_hits(_texts(t, p, keep, keys)) for k, p in plans.items()}
        pick[measure] = hits
        if hits["paper"] > hits["ours"]:
            winner = "paper"
            break
    pick["winner"] = winner
    return (paper, pinfo, pick) if winner == "paper" else (ours, info, pick)
