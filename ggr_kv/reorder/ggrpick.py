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
paper's knobs on the same FD units) and keeps the one with the higher character hit rate
of the paper's own metric (`ggr_kv.reorder.metrics.paper_char_hit_rate`: cell values
joined, a trie over earlier rows). Ties keep ours. Tables above `MAX_PICK_ROWS` rows
keep ours without scoring (the metric builds one string per row).
"""

from __future__ import annotations

import numpy as np

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.table import Table
from ggr_kv.reorder.ggr import GGRConfig, ggr_config, ggr_unit_order
from ggr_kv.reorder.metrics import paper_char_hit_rate
from ggr_kv.reorder.units import Units, expand_perm, sort_rows

__all__ = ["MAX_PICK_ROWS", "ggr_pick"]

#: rows above which ``pick`` keeps our variant without scoring both (s per plan ~ 1e-5 n)
MAX_PICK_ROWS = 300_000


def _plan(t: Table, units: Units, unit_perm: np.ndarray) -> ReorderPlan:
    colperm = expand_perm(units, np.ascontiguousarray(unit_perm))
    rows = sort_rows(t.codes, colperm)
    dtype = np.int16 if t.n_cols < np.iinfo(np.int16).max else np.int32
    return ReorderPlan(t.columns, rows, colperm[rows].astype(dtype))


def ggr_pick(
    t: Table, units: Units, cfg: GGRConfig, progress: bool = False
) -> tuple[np.ndarray, dict, dict]:
    """Unit orders of ``cfg`` or of the paper's preset, whichever shares more characters.

    Returns ``(unit_perm, ggr_info, pick_info)``; ``pick_info`` has each candidate's
    ``char_hit_rate`` (0-1) and the ``winner`` (``"ours"`` or ``"paper"``).
    """
    ours, info = ggr_unit_order(units, cfg, progress=progress)
    if t.n_rows > MAX_PICK_ROWS or t.n_rows < 2:
        return ours, info, {"winner": "ours", "note": f"not scored above {MAX_PICK_ROWS} rows"}
    paper, pinfo = ggr_unit_order(units, ggr_config("paper"), progress=progress)
    rates = {
        "ours": paper_char_hit_rate(t, _plan(t, units, ours)),
        "paper": paper_char_hit_rate(t, _plan(t, units, paper)),
    }
    winner = "paper" if rates["paper"] > rates["ours"] else "ours"
    pick = {"winner": winner, "char_hit_rate": rates}
    return (paper, pinfo, pick) if winner == "paper" else (ours, info, pick)
