"""Numbers per ordering that figures and reports share: job time over repeats, latency
percentiles, the ideal speedup from hit rates, and which objective each method optimizes
(`objective_of`, from ``ggr_kv.reorder.registry``).

Everything is computed from what the run folders recorded (``ggr_kv.run.runs``); nothing
is estimated. A table here has one row per (comparison group, ordering).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.reorder.registry import NO_CACHE, ORIGINAL, objective_of

__all__ = [
    "ideal_speedups",
    "job_samples",
    "job_time_stats",
    "latency_percentiles",
    "objective_of",
]

_KEYS = ["group", "group_label", "ordering"]


def _repeat_times(path: Any, job_s: float) -> list[float]:
    """Every repeat's job time recorded in a run folder's run.json (``repeats.job_s``),
    else the run's one job time."""
    import json
    from pathlib import Path

    if path is not None:
        rj = Path(str(path)) / "run.json"
        if rj.is_file():
            reps = (json.loads(rj.read_text()).get("repeats") or {}).get("job_s")
            if isinstance(reps, list) and len(reps) > 1:
                return [float(x) for x in reps]
    return [job_s]  # one job: the runs table's own number


def job_samples(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per timed job: ``group``, ``group_label``, ``ordering``, ``run_id``, ``job_s``.

    A run folder that recorded several repeats (``repeats.job_s`` in run.json)
    contributes one row per repeat; other folders one row each (several folders of one
    ordering in a group are repeats too).
    """
    cols = [*_KEYS, "run_id"]
    paths = runs["path"] if "path" in runs else pd.Series([None] * len(runs), index=runs.index)
    out = runs[cols].assign(job_s=[_repeat_times(p, j) for p, j in zip(paths, runs["job_s"])])
    out = out.explode("job_s")
    out["job_s"] = pd.to_numeric(out["job_s"], errors="coerce")
    return out.reset_index(drop=True)


def job_time_stats(runs: pd.DataFrame) -> pd.DataFrame:
    """Job time per (group, ordering): median, min, max and count of the timed jobs (s),
    and speedups = median job time of the baseline / median of this ordering.

    Columns: ``group``, ``group_label``, ``ordering``, ``n``, ``job_s`` (median),
    ``job_min_s``, ``job_max_s``, ``speedup_vs_original``, ``speedup_vs_no_cache``
    (NaN without that baseline in the group).
    """
    s = job_samples(runs)
    agg = (
        s.groupby(_KEYS, sort=False)["job_s"]
        .agg(n="count", job_s="median", job_min_s="min", job_max_s="max")
        .reset_index()
    )
    for base in (ORIGINAL, NO_CACHE):
        med = agg[agg["ordering"] == base].set_index("group")["job_s"]
        agg[f"speedup_vs_{base}"] = agg["group"].map(med) / agg["job_s"]
    return agg


def ideal_speedups(runs: pd.DataFrame) -> pd.DataFrame:
    """The speedup over ``original`` that hit rates alone allow, beside the measured one.

    If a job's time is its uncached prefill, the job of hit rate ``h`` takes
    ``(1 - h) / (1 - h_original)`` of the original's: ideal speedup
    ``(1 - h_original) / (1 - h)``. ``measured / ideal`` near 1 says the job is
    prefill-bound and the cache's savings arrived; well below 1, something else (decode,
    engine overhead) takes the time.

    Columns: ``group``, ``ordering``, ``hit_rate`` (median), ``ideal_speedup``,
    ``speedup_vs_original`` (median jobs), ``measured_over_ideal``.
    """
    stats = job_time_stats(runs)
    hits = runs.groupby(["group", "ordering"], sort=False)["hit_rate"].median()
    out = stats[["group", "group_label", "ordering", "speedup_vs_original"]].copy()
    out["hit_rate"] = [hits.get((g, o), np.nan) for g, o in zip(out["group"], out["ordering"])]
    h0 = out[out["ordering"] == ORIGINAL].set_index("group")["hit_rate"]
    with np.errstate(divide="ignore", invalid="ignore"):
        ideal = (1 - out["group"].map(h0)) / (1 - out["hit_rate"])
    out["ideal_speedup"] = ideal.where(out["ordering"] != NO_CACHE)
    out["measured_over_ideal"] = out["speedup_vs_original"] / out["ideal_speedup"]
    return out


def _pct(x: pd.Series, q: float) -> float:
    x = pd.to_numeric(x, errors="coerce").dropna()
    return float(np.percentile(x, q)) if len(x) else np.nan


def latency_percentiles(
    runs: pd.DataFrame, requests: Iterable[tuple[str, pd.DataFrame]]
) -> pd.DataFrame:
    """TTFT and end-to-end latency p50 / p99 per (group, ordering), seconds.

    Parameters
    ----------
    runs : the runs table (``run_id``, ``group``, ``group_label``, ``ordering``).
    requests : ``(run_id, requests table)`` pairs (``ttft_s``, ``e2e_s`` per request, as
        the collector recorded them); the requests of repeated runs are pooled.

    Columns: ``group``, ``group_label``, ``ordering``, ``requests``, ``ttft_p50_s``,
    ``ttft_p99_s``, ``e2e_p50_s``, ``e2e_p99_s`` (NaN where not recorded).
    """
    frames = []
    for run_id, req in requests:
        cols = [c for c in ("ttft_s", "e2e_s") if c in req]
        frames.append(req[cols].assign(run_id=run_id))
    info = runs[[*_KEYS, "run_id"]]
    if not frames:
        return info.drop(columns="run_id").drop_duplicates().assign(requests=0)
    req = pd.concat(frames, ignore_index=True).merge(info, on="run_id")
    for c in ("ttft_s", "e2e_s"):
        if c not in req:
            req[c] = np.nan
    rows = []
    for (g, label, o), d in req.groupby(_KEYS, sort=False):
        rows.append({
            "group": g, "group_label": label, "ordering": o, "requests": len(d),
            "ttft_p50_s": _pct(d["ttft_s"], 50), "ttft_p99_s": _pct(d["ttft_s"], 99),
            "e2e_p50_s": _pct(d["e2e_s"], 50), "e2e_p99_s": _pct(d["e2e_s"], 99),
        })
    return pd.DataFrame(rows)
