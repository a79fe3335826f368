"""Column names shared by the collector (measured) and the simulator (predicted).

Both produce one row per engine step with these columns, so a figure can overlay a
prediction on a measurement without renaming anything.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["REQUEST_COLUMNS", "STEP_COLUMNS", "add_running_totals"]

#: per-step rows of ``VLLMMetricsCollector.steps()`` and ``simulate(...).steps``
STEP_COLUMNS: tuple[str, ...] = (
    "t_s",  # seconds since the collector started (simulator: step index, no clock)
    "step",  # engine step number, from 0
    "kv_cache_usage",  # 0-1 fraction of KV blocks referenced by live requests
    "prefix_queries",  # prompt tokens looked up in the prefix cache this step
    "prefix_hits",  # of those, tokens found cached this step
    "prefix_queries_cum",
    "prefix_hits_cum",
    "hit_rate_cum",  # prefix_hits_cum / prefix_queries_cum, 0-1 (NaN before any query)
    "num_running",  # requests running after this step
    "num_waiting",  # requests waiting after this step
    "num_preemptions",  # requests preempted this step
    "num_preemptions_cum",
    "prompt_tokens",  # prompt tokens of requests that produced output this step
    "generation_tokens",  # tokens generated this step
    "connector_queries",  # KV connector / CPU offload tier lookups (tokens), 0 if none
    "connector_hits",
)

#: per-request rows of ``VLLMMetricsCollector.requests(outputs)``
REQUEST_COLUMNS: tuple[str, ...] = (
    "row",  # original row position in the input table
    "slot",  # position in run order
    "request_id",
    "prompt_tokens",
    "num_cached_tokens",
    "output_tokens",
    "e2e_s",  # arrival to last token, seconds (NaN where not reported)
    "ttft_s",  # arrival to first token, seconds
    "queued_s",  # time waiting before first scheduled, seconds
)


def add_running_totals(steps: pd.DataFrame) -> pd.DataFrame:
    """Set the running-total columns of a step table from its per-step columns, in place.

    ``prefix_queries_cum``, ``prefix_hits_cum`` (tokens), ``hit_rate_cum`` (0-1, NaN before
    any query) and ``num_preemptions_cum``. Returns ``steps``.
    """
    q = steps["prefix_queries"].to_numpy(dtype=np.int64).cumsum()
    h = steps["prefix_hits"].to_numpy(dtype=np.int64).cumsum()
    steps["prefix_queries_cum"] = q
    steps["prefix_hits_cum"] = h
    with np.errstate(invalid="ignore", divide="ignore"):
        steps["hit_rate_cum"] = np.where(q > 0, h / np.maximum(q, 1), np.nan)
    steps["num_preemptions_cum"] = steps["num_preemptions"].to_numpy(dtype=np.int64).cumsum()
    return steps
