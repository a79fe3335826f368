"""Layer 5, measuring vLLM: per-step prefix-cache and KV-cache metrics of a running engine
or server (`VLLMMetricsCollector`), Prometheus text parsing (`prom`)."""

from ggr_kv.collector.vllm_collector import TIERS, StatsDisabledError, VLLMMetricsCollector

__all__ = ["TIERS", "StatsDisabledError", "VLLMMetricsCollector"]
