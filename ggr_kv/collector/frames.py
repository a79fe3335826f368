"""Tables and totals of one collection window, from raw `StepLog` rows.

`steps_frame` gives one row per engine step (per changed poll for the polling sources)
with `ggr_kv.core.schema.STEP_COLUMNS` first and `EXTRA_STEP_COLUMNS` beside them;
`window_totals` gives the sums a summary reports. Both are vectorized over the rows.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.collector.steplog import RAW_FIELDS
from ggr_kv.core.schema import STEP_COLUMNS, add_running_totals

__all__ = ["EXTRA_STEP_COLUMNS", "empty_steps", "rate", "raw_frame", "steps_frame", "window_totals"]

#: per-step columns beside STEP_COLUMNS (before the resource columns)
EXTRA_STEP_COLUMNS: tuple[str, ...] = (
    "t_recv_s",  # when the frontend received the step, s since the window start
    "engine",  # engine index
    "num_outputs",  # requests with output this step (NaN for pollers)
    "prefix_preempted_queries",  # tokens looked up by re-admitted preempted requests
    "prefix_preempted_hits",
    "host_hits",  # offload-tier hits supplied by host memory (tokens; NaN: not reported)
    "cpu_cache_usage",  # offload tier's CPU usage, 0-1 (NaN: no tier)
    "offload_load_bytes",  # host -> GPU this step
    "offload_store_bytes",  # GPU -> host this step
)
_INT_COLS = (
    "prefix_queries", "prefix_hits", "num_preemptions", "prompt_tokens",
    "generation_tokens", "connector_queries", "connector_hits",
)  # fmt: skip


def raw_frame(rows: list[list[float]]) -> pd.DataFrame:
    """The raw rows as a float frame with columns `RAW_FIELDS`."""
    arr = np.asarray(rows, dtype=float).reshape(len(rows), len(RAW_FIELDS))
    return pd.DataFrame(arr, columns=list(RAW_FIELDS))


def empty_steps() -> pd.DataFrame:
    """A step table with no rows (STEP_COLUMNS + EXTRA_STEP_COLUMNS)."""
    return steps_frame([], 0.0)


def steps_frame(rows: list[list[float]], t0: float) -> pd.DataFrame:
    """Step table of a window that started at monotonic time ``t0`` (s).

    ``t_s`` is the engine's time of the step (``EngineCoreOutputs.timestamp``) minus
    ``t0`` where known, else the receive / poll time; ``t_recv_s`` is always the
    receive / poll time. Counters without a value in a row (e.g. connector hits when no
    connector is configured) are 0 in the STEP_COLUMNS (as the simulator writes them)
    and NaN in the extra columns.
    """
    raw = raw_frame(rows)
    n = len(raw)
    t_eng = raw["t_engine"].to_numpy() - t0
    t_recv = raw["t_recv"].to_numpy() - t0
    out = pd.DataFrame(index=pd.RangeIndex(n))
    out["t_s"] = np.where(np.isnan(t_eng), t_recv, t_eng)
    out["step"] = np.arange(n, dtype=np.int64)
    out["kv_cache_usage"] = raw["kv_cache_usage"].to_numpy()
    for c in _INT_COLS:
        out[c] = np.nan_to_num(raw[c].to_numpy(), nan=0.0).astype(np.int64)
    for c in ("num_running", "num_waiting"):
        v = raw[c].to_numpy()
        out[c] = v.astype(np.int64) if not np.isnan(v).any() else v
    out = add_running_totals(out)[list(STEP_COLUMNS)]
    out["t_recv_s"] = t_recv
    out["engine"] = raw["engine"].to_numpy().astype(np.int64) if n else np.zeros(0, np.int64)
    for c in EXTRA_STEP_COLUMNS[2:]:
        out[c] = raw[c].to_numpy()
    return out


def _total(col: np.ndarray) -> float | None:
    """Sum over the finite values; None when there are none (not reported)."""
    ok = ~np.isnan(col)
    return float(col[ok].sum()) if ok.any() else None


def _int(x: float | None) -> int | None:
    return None if x is None else round(x)


def window_totals(rows: list[list[float]], t0: float) -> dict[str, Any]:
    """Sums and peaks of a window's rows (tokens, bytes, requests; usage 0-1).

    Keys: ``prefix_cache_queries``/``hits``, ``prefix_preempted_queries``/``hits``,
    ``num_preemptions``, ``prompt_tokens``, ``generation_tokens``,
    ``connector_queries``/``hits``, ``host_hits``, ``offload_load_bytes``/
    ``store_bytes`` (None where no row reported them), ``max_kv_cache_usage``,
    ``max_cpu_cache_usage``, ``num_rows``, ``steps_with_stats``,
    ``steps_without_outputs`` (steps vLLM 0.26's offline ``LLMEngine.step`` passes to no
    stat logger), ``first_step_s`` and ``max_receive_lag_s`` (receive minus engine
    time, s).
    """
    raw = raw_frame(rows)

    def col(c: str) -> np.ndarray:
        return raw[c].to_numpy()

    def peak(c: str) -> float | None:
        v = col(c)
        return float(np.nanmax(v)) if len(v) and not np.isnan(v).all() else None

    lag = col("t_recv") - col("t_engine")
    t_first = col("t_engine") - t0
    t_first = np.where(np.isnan(t_first), col("t_recv") - t0, t_first)
    n_out = col("num_outputs")
    sums = {
        k: _int(_total(col(c)))
        for k, c in (
            ("prefix_cache_queries", "prefix_queries"),
            ("prefix_cache_hits", "prefix_hits"),
            ("prefix_preempted_queries", "prefix_preempted_queries"),
            ("prefix_preempted_hits", "prefix_preempted_hits"),
            ("num_preemptions", "num_preemptions"),
            ("prompt_tokens", "prompt_tokens"),
            ("generation_tokens", "generation_tokens"),
            ("connector_queries", "connector_queries"),
            ("connector_hits", "connector_hits"),
            ("host_hits", "host_hits"),
            ("offload_load_bytes", "offload_load_bytes"),
            ("offload_store_bytes", "offload_store_bytes"),
        )
    }
    return {
        **sums,
        "max_kv_cache_usage": peak("kv_cache_usage"),
        "max_cpu_cache_usage": peak("cpu_cache_usage"),
        "num_rows": len(raw),
        "steps_with_stats": int(np.nansum(col("has_sched"))),
        "steps_without_outputs": int(((n_out == 0) & (col("has_sched") > 0)).sum()),
        "first_step_s": float(t_first[0]) if len(raw) else None,
        "max_receive_lag_s": float(np.nanmax(lag))
        if len(lag) and not np.isnan(lag).all()
        else None,
    }


def rate(hits: float | None, queries: float | None) -> float | None:
    """``hits / queries`` (0-1), None when either is unknown or there were no queries."""
    if hits is None or queries is None or not queries or math.isnan(queries):
        return None
    return hits / queries
