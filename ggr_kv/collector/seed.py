"""The seed pipeline's snapshot interface, ``collect_internal_stats()``, on vLLM V1.

The seed pipeline (written for vLLM V0) read ``Stats.gpu_cache_usage_sys``,
``gpu_prefix_cache_hit_rate``, ``cpu_cache_usage_sys`` and ``cpu_prefix_cache_hit_rate``
from ``llm_engine._get_stats()``. None of those exist in V1 (removed with V0 in 0.11;
the ``vllm:gpu_prefix_cache_hit_rate`` / ``vllm:cpu_prefix_cache_hit_rate`` /
``vllm:cpu_cache_usage_perc`` gauges were removed in 0.9). `SEED_SOURCES` maps each key
to what it is computed from now; ``docs/collector.md`` has the full table.
"""

from __future__ import annotations

import time
from typing import Any

from ggr_kv.collector.frames import rate
from ggr_kv.collector.sources import Source
from ggr_kv.collector.steplog import Totals

__all__ = ["SEED_KEYS", "SEED_SOURCES", "internal_stats"]

#: the keys the seed pipeline's users look for
SEED_KEYS: tuple[str, ...] = (
    "collection_method",
    "stats_available",
    "gpu_cache_usage_sys",
    "gpu_prefix_cache_hit_rate",
    "cpu_cache_usage_sys",
    "cpu_prefix_cache_hit_rate",
    "num_preemptions",
    "timestamp",
)
#: seed key -> its vLLM V1 source
SEED_SOURCES: dict[str, str] = {
    "gpu_cache_usage_sys": "SchedulerStats.kv_cache_usage of the latest step "
    "(vllm:kv_cache_usage_perc), 0-1",
    "gpu_prefix_cache_hit_rate": "sum of SchedulerStats.prefix_cache_stats.hits / .queries "
    "(vllm:prefix_cache_hits / vllm:prefix_cache_queries) over the interval",
    "cpu_cache_usage_sys": "vllm:kv_offload_cpu_cache_usage_perc from the offloading "
    "connector's SchedulerStats.kv_connector_stats, latest step, 0-1",
    "cpu_prefix_cache_hit_rate": "sum of SchedulerStats.connector_prefix_cache_stats.hits / "
    ".queries (vllm:external_prefix_cache_hits / _queries) over the interval",
    "num_preemptions": "sum of IterationStats.num_preempted_reqs (vllm:num_preemptions)",
}


def _int(x: float | None) -> int | None:
    return None if x is None else round(x)


def internal_stats(source: Source, totals: Totals | None, since: str) -> dict[str, Any]:
    """The snapshot for ``totals`` (counters since the cursor named by ``since``).

    Every seed key is present; values the engine did not report are None, never 0,
    with a ``*_reason`` saying why.
    """
    ok, why = source.available(totals.sched_rows if totals is not None else 0)
    v = totals.values if totals is not None else {}
    tier = source.offload_tier()
    out: dict[str, Any] = {
        "collection_method": source.method,
        "stats_available": ok,
        "gpu_cache_usage_sys": totals.last_kv_cache_usage if ok else None,
        "gpu_prefix_cache_hit_rate": rate(v.get("prefix_hits"), v.get("prefix_queries"))
        if ok
        else None,
        "cpu_cache_usage_sys": None,
        "cpu_prefix_cache_hit_rate": None,
        "num_preemptions": _int(v.get("num_preemptions")) if ok else None,
        "timestamp": time.time(),
        "since": since,
        "interval_s": totals.since_s if totals is not None else None,
        "num_steps": totals.sched_rows if totals is not None else None,
        "gpu_prefix_cache_hits": _int(v.get("prefix_hits")) if ok else None,
        "gpu_prefix_cache_queries": _int(v.get("prefix_queries")) if ok else None,
        "cpu_prefix_cache_hits": None,
        "cpu_prefix_cache_queries": None,
        "cpu_host_hits": None,
    }
    if not ok:
        out["stats_reason"] = why
    if not tier.cpu:
        out["cpu_tier_reason"] = tier.reason
        return out
    if not ok:
        out["cpu_tier_reason"] = why
        return out
    cq, ch = v.get("connector_queries"), v.get("connector_hits")
    out.update(
        cpu_cache_usage_sys=totals.last_cpu_cache_usage,
        cpu_prefix_cache_hit_rate=rate(ch, cq),
        cpu_prefix_cache_hits=_int(ch),
        cpu_prefix_cache_queries=_int(cq),
        cpu_host_hits=_int(v.get("host_hits")),
    )
    if out["cpu_prefix_cache_hit_rate"] is None:
        out["cpu_tier_reason"] = (
            f"{tier.connector} is configured but saw no lookups in this interval"
        )
    return out
