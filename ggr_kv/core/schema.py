"""Column names shared by the collector (measured) and the simulator (predicted).

Both produce one row per engine step with these columns, so a figure can overlay a
prediction on a measurement without renaming anything.
"""

from __future__ import annotations

__all__ = ["STEP_COLUMNS", "REQUEST_COLUMNS"]

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
