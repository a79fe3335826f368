"""Predicted beside measured, per run: each plan's PHC and block hit rate, and the three
counts of cached prompt tokens that must agree.

- `plan_scores`: each run's plan scored again on its own rows (``ggr_kv.reorder.metrics``):
  PHC (what ``ggr`` optimizes) and the block hit rate under the run's tokenizer and KV
  block size (what vLLM caches, with an unbounded cache).
- `hit_counts`: the collector's hit counter, the requests' summed ``num_cached_tokens``
  and the simulator's predicted hits (``ggr_kv.simulate``), with a flag where they
  disagree (``ggr_kv.collector.CounterCheck``, the package's one check and tolerance).
  vLLM 0.26's counters over-count under KV pressure (a lookup is counted again on each
  scheduling retry); the flag shows such runs.

A run whose rows cannot be rebuilt (no ``dataset_info``, a changed table) gets a reason
instead of a number, never an approximation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.collector.checks import CounterCheck

__all__ = ["hit_counts", "plan_scores", "run_tokenizer"]


def run_tokenizer(meta: Mapping[str, Any]) -> str:
    """The tokenizer a run's prompts went through: its model folder when it exists here,
    else ``llama3`` for the dummy-weight shapes (all use the Llama-3 vocabulary), else the
    model name."""
    from ggr_kv.engine.models import SHAPES

    path = meta.get("model_path")
    if path and (Path(path) / "tokenizer.json").is_file():
        return str(path)
    if meta.get("model") in SHAPES:
        return "llama3"
    return str(path or meta.get("model"))


def plan_scores(runs: pd.DataFrame, *, progress: Callable[[str], None] | None = None
                ) -> pd.DataFrame:
    """PHC and predicted block hit rate of each run's plan (one scoring per distinct plan).

    Returns columns ``run_id``, ``phc`` (characters²), ``block_hit_rate`` (0-1, unbounded
    cache, the run's block size), ``tokenizer``, ``score_note`` (why a score is missing).
    """
    from ggr_kv.core.plan import ReorderPlan
    from ggr_kv.core.prompts import DEFAULT_INSTRUCTION
    from ggr_kv.core.table import Table
    from ggr_kv.reorder.metrics import score
    from ggr_kv.run.runs import load_run, run_dataset

    rows, cache = [], {}
    for r in runs.itertuples():
        run = load_run(r.path)
        m = run.meta
        key = (r.group, r.ordering)
        if key in cache:
            rows.append({**cache[key], "run_id": r.run_id})
            continue
        if progress:
            progress(f"scoring {r.ordering}")
        out = {"run_id": r.run_id, "phc": np.nan, "block_hit_rate": np.nan,
               "tokenizer": None, "score_note": ""}
        try:
            ds = run_dataset(run)
            tbl = Table.from_frame(ds.frame)
            plan = ReorderPlan.from_json(run.path / "plan.json", tbl)
            tok = run_tokenizer(m)
            s = score(tbl, plan, query=m.get("query") or "",
                      instruction=m.get("instruction") or DEFAULT_INSTRUCTION, tokenizer=tok,
                      block_size=int(m["block_size"]))
            out.update(phc=float(s.phc), block_hit_rate=s.block_hit_rate,
                       tokenizer=s.tokenizer or tok)
        except (ValueError, FileNotFoundError, KeyError, TypeError, OSError) as e:
            out["score_note"] = f"not scored: {str(e).splitlines()[0]}"
        cache[key] = out
        rows.append(out)
    return pd.DataFrame(rows)


def hit_counts(runs: pd.DataFrame, predicted: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Collector hits, summed ``num_cached_tokens`` and simulated hits per run, flagged.

    Parameters
    ----------
    runs : the runs table (``prefix_hits`` from the collector, ``cached_tokens`` from the
        requests).
    predicted : run_id or ordering -> ``SimResult`` of that run (``simulate_run``); the
        simulator's hits recorded in run.json by the runner (``counters.simulated_hits``)
        are used when no prediction is given.

    Returns columns ``run_id``, ``ordering``, ``collector_hits``, ``request_cached``,
    ``simulated_hits`` (tokens, NaN where unknown), ``agree`` (bool; NaN counts are not
    compared) and ``disagreement`` (which counts differ, and by how much).
    """
    import json

    predicted = predicted or {}
    rows = []
    for r in runs.itertuples():
        sim = predicted.get(r.run_id, predicted.get(r.ordering))
        sim_hits = np.nan
        if sim is not None:
            sim_hits = float(sim.summary.get("prefix_cache_hits", np.nan))
        else:
            meta = json.loads((Path(r.path) / "run.json").read_text())
            rec = (meta.get("counters") or {}).get("simulated_hits")
            sim_hits = float(rec) if rec is not None else np.nan
        collector = float(r.prefix_hits)
        counts = {"collector": collector, "requests": float(r.cached_tokens),
                  "simulator": sim_hits}
        known = {k: int(v) for k, v in counts.items() if not np.isnan(v)}
        check = CounterCheck.compare(known.get("collector"), int(r.prefix_queries),
                                     known.get("requests"), None,
                                     simulated_hits=known.get("simulator"))
        allowed = check.tolerance * int(r.prefix_queries)
        diffs = []
        names = list(known)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                va, vb = known[a], known[b]
                if abs(va - vb) > allowed:
                    diffs.append(f"{a} {va:,.0f} vs {b} {vb:,.0f} "
                                 f"({100 * (va - vb) / max(vb, 1.0):+.1f}%)")
        rows.append({
            "run_id": r.run_id, "ordering": r.ordering, "collector_hits": collector,
            "request_cached": counts["requests"], "simulated_hits": sim_hits,
            "agree": not check.mismatch, "disagreement": "; ".join(diffs),
        })
    return pd.DataFrame(rows)
