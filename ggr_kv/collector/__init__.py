"""Layer 5, measuring vLLM: per-step prefix-cache, KV-cache and KV-offload metrics of a
running engine or server (`VLLMMetricsCollector`), the seed pipeline's
``collect_internal_stats()`` snapshot, and a cross-check of counters against requests
(`counter_check`). See ``docs/collector.md``.

Modules: ``vllm_collector`` (the facade), ``sources`` / ``poll`` (one class per collection
method), ``stat_logger`` (permanent per-engine step logger and output tap), ``steplog``
(rows, totals, cursors), ``fields`` (strict reads of vLLM's stats objects), ``offload``
(the connector tier), ``frames`` / ``requests`` (tables), ``seed``, ``checks``.
"""

from ggr_kv.collector.checks import COUNTER_TOLERANCE, CounterCheck, counter_check
from ggr_kv.collector.fields import VLLMFieldError
from ggr_kv.collector.stat_logger import step_logger_factory
from ggr_kv.collector.vllm_collector import TIERS, StatsDisabledError, VLLMMetricsCollector

__all__ = [
    "COUNTER_TOLERANCE",
    "TIERS",
    "CounterCheck",
    "StatsDisabledError",
    "VLLMFieldError",
    "VLLMMetricsCollector",
    "counter_check",
    "step_logger_factory",
]
