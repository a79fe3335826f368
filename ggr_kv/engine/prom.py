"""vLLM metrics as Prometheus exposes them: text parsing and names across versions.

vLLM renamed its KV-cache metrics over time (``gpu_cache_usage_perc`` ->
``kv_cache_usage_perc``, ``gpu_prefix_cache_*`` -> ``prefix_cache_*`` in 0.9.2; the old
names were hidden in 0.11 and removed in 0.12), and counters appear with a ``_total``
suffix in ``/metrics`` text but without it in ``LLM.get_metrics()``. This module maps all
of those spellings onto one set of canonical keys (`CANONICAL`), so the collector reads
the same numbers from a server's ``/metrics`` page and from an offline engine.

Some canonical keys select one label value of a labelled family, written
``name{label=value}`` in `CANONICAL`: the cached prompt tokens a tier supplied,
``prompt_tokens_cached_by_source{source=host}`` (vLLM 0.32+, absent in 0.26), or the CPU
offload tier's transfer counters under their deprecated ``transfer_type`` spelling.

Text is parsed with ``prometheus_client.parser.text_string_to_metric_families``.
Nothing here imports vLLM.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CANONICAL",
    "COUNTERS",
    "OFFLOAD_KEYS",
    "MetricsSnapshot",
    "base_name",
    "parse_metrics_text",
    "snapshot_from_samples",
    "snapshot_from_vllm_metrics",
]

#: canonical key -> metric names (without ``vllm:`` and ``_total``, optionally with one
#: ``{label=value}`` selector), preferred first. When a page exposes several spellings
#: (vLLM 0.10; 0.32's new and deprecated offload names), only the first one found is
#: read, so nothing is counted twice.
CANONICAL: dict[str, tuple[str, ...]] = {
    "kv_cache_usage": ("kv_cache_usage_perc", "gpu_cache_usage_perc"),  # gauge, 0-1
    "num_running": ("num_requests_running",),  # gauge
    "num_waiting": ("num_requests_waiting",),  # gauge
    "prefix_queries": ("prefix_cache_queries", "gpu_prefix_cache_queries"),  # tokens
    "prefix_hits": ("prefix_cache_hits", "gpu_prefix_cache_hits"),  # tokens
    # KV connector tier (the CPU offload tier when kv_offloading_size is set); vLLM
    # registers these even without a connector (value 0): see `OFFLOAD_KEYS`
    "connector_queries": ("external_prefix_cache_queries",),  # tokens
    "connector_hits": ("external_prefix_cache_hits",),  # tokens
    "host_hits": ("prompt_tokens_cached_by_source{source=host}",),  # tokens, 0.32+
    "device_hits": ("prompt_tokens_cached_by_source{source=device}",),  # tokens, 0.32+
    "external_kv_transfer_tokens": ("prompt_tokens_by_source{source=external_kv_transfer}",),
    "offload_load_bytes": (
        "kv_offload_load_bytes",
        "kv_offload_total_bytes{transfer_type=CPU_to_GPU}",
    ),
    "offload_store_bytes": (
        "kv_offload_store_bytes",
        "kv_offload_total_bytes{transfer_type=GPU_to_CPU}",
    ),
    "offload_load_time_s": (
        "kv_offload_load_time",
        "kv_offload_total_time{transfer_type=CPU_to_GPU}",
    ),
    "offload_store_time_s": (
        "kv_offload_store_time",
        "kv_offload_total_time{transfer_type=GPU_to_CPU}",
    ),
    "offload_allocation_failures": ("kv_offload_allocation_failure",),
    "cpu_cache_usage": ("kv_offload_cpu_cache_usage_perc",),  # gauge, 0-1
    "num_preemptions": ("num_preemptions",),  # requests
    "prompt_tokens": ("prompt_tokens",),  # tokens
    "generation_tokens": ("generation_tokens",),  # tokens
    # number of engine iterations that produced output: count of this histogram
    "iterations": ("iteration_tokens_total",),
}

#: canonical keys that are monotone counters (the rest are gauges)
COUNTERS: frozenset[str] = frozenset(
    {
        "prefix_queries",
        "prefix_hits",
        "connector_queries",
        "connector_hits",
        "host_hits",
        "device_hits",
        "external_kv_transfer_tokens",
        "offload_load_bytes",
        "offload_store_bytes",
        "offload_load_time_s",
        "offload_store_time_s",
        "offload_allocation_failures",
        "num_preemptions",
        "prompt_tokens",
        "generation_tokens",
        "iterations",
    }
)

#: keys that exist only when an offload tier (KV connector) is configured: their presence
#: on a page shows the tier (``external_prefix_cache_*`` are registered without one)
OFFLOAD_KEYS: frozenset[str] = frozenset(
    {
        "offload_load_bytes",
        "offload_store_bytes",
        "offload_load_time_s",
        "offload_store_time_s",
        "offload_allocation_failures",
        "cpu_cache_usage",
    }
)

_GAUGES_AVERAGED = frozenset({"kv_cache_usage", "cpu_cache_usage"})  # fractions: mean
_HISTOGRAM_COUNT_KEYS = frozenset({"iterations"})
_INFO_INT_LABELS = ("block_size", "num_gpu_blocks")
#: ``vllm:cache_config_info`` labels kept as text
_INFO_TEXT_LABELS = ("prefix_caching_hash_algo", "cache_dtype", "kv_offloading_backend")
_SELECTOR = re.compile(r"^([\w:]+)\{(\w+)=([^}]*)\}$")


def base_name(name: str) -> str:
    """``"vllm:prefix_cache_hits_total"`` -> ``"prefix_cache_hits"``.

    Drops the ``vllm:`` namespace and one trailing ``_total`` (the counter suffix
    Prometheus text adds and ``LLM.get_metrics()`` omits).
    """
    name = name.removeprefix("vllm:")
    name = name.removesuffix("_total")
    return name


def _alias(alias: str) -> tuple[str, str | None, str | None]:
    """``"a{l=v}"`` -> ``("a", "l", "v")``; ``"a"`` -> ``("a", None, None)``."""
    m = _SELECTOR.match(alias)
    return (m.group(1), m.group(2), m.group(3)) if m else (alias, None, None)


@dataclass(frozen=True)
class MetricsSnapshot:
    """One reading of a vLLM engine's metrics, under canonical keys.

    Attributes
    ----------
    values : canonical key (see `CANONICAL`) -> value. Counters are cumulative since the
        engine started (tokens, requests, bytes or seconds), summed over engines;
        ``kv_cache_usage`` and ``cpu_cache_usage`` are 0-1 fractions averaged over
        engines. Keys the source does not expose are absent (never 0).
    sources : canonical key -> the metric name it was read from, with its label selector
        (shows which vLLM naming generation the source uses).
    info : facts from ``vllm:cache_config_info`` labels (``block_size``,
        ``num_gpu_blocks`` as ints, ``enable_prefix_caching`` as bool,
        ``kv_offloading_size`` in GiB as float or None, ``prefix_caching_hash_algo``,
        ``cache_dtype`` and ``kv_offloading_backend`` as text) and the ``model_name``
        label, where present.
    """

    values: dict[str, float]
    sources: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: float = math.nan) -> float:
        return self.values.get(key, default)


def snapshot_from_samples(samples: Iterable[tuple[str, dict[str, str], float]]) -> MetricsSnapshot:
    """Build a snapshot from ``(name, labels, value)`` triples.

    ``name`` may carry ``vllm:`` and ``_total``; histogram counts are passed with the
    ``_count`` suffix. Values of one name (and label selector) are summed over label sets
    (engines), except the usage fractions (averaged).
    """
    by_base: dict[str, list[tuple[dict[str, str], float]]] = {}
    info: dict[str, Any] = {}
    for name, labels, value in samples:
        if not name.startswith("vllm:"):
            continue
        b = base_name(name)
        if b == "cache_config_info":
            _read_info(labels, info)
            continue
        by_base.setdefault(b, []).append((labels, float(value)))
        if "model_name" in labels and "model_name" not in info:
            info["model_name"] = labels["model_name"]
    values: dict[str, float] = {}
    sources: dict[str, str] = {}
    for key, aliases in CANONICAL.items():
        for alias in aliases:
            base, label, want = _alias(alias)
            lookup = base + "_count" if key in _HISTOGRAM_COUNT_KEYS else base
            found = [
                v for lab, v in by_base.get(lookup, ()) if label is None or lab.get(label) == want
            ]
            if found:
                v = sum(found)
                values[key] = v / len(found) if key in _GAUGES_AVERAGED else v
                sources[key] = "vllm:" + alias
                break
    return MetricsSnapshot(values, sources, info)


def _read_info(labels: dict[str, str], info: dict[str, Any]) -> None:
    for k in _INFO_INT_LABELS:
        v = labels.get(k)
        if v is not None and v.strip().lstrip("-").isdigit():
            info.setdefault(k, int(v))
    for k in _INFO_TEXT_LABELS:
        if labels.get(k):
            info.setdefault(k, labels[k])
    epc = labels.get("enable_prefix_caching")
    if epc in ("True", "False"):
        info.setdefault("enable_prefix_caching", epc == "True")
    size = labels.get("kv_offloading_size")
    if size is not None:
        try:
            info.setdefault("kv_offloading_size", float(size))
        except ValueError:  # "None": no offload tier
            info.setdefault("kv_offloading_size", None)


def parse_metrics_text(text: str) -> MetricsSnapshot:
    """Parse a ``/metrics`` page (Prometheus text format) into a `MetricsSnapshot`.

    Understands every naming generation in `CANONICAL`, counters with or without the
    ``_total`` suffix, and ignores ``_created`` timestamps and non-vLLM metrics.

    Raises
    ------
    ValueError
        if the text is not Prometheus exposition format.
    """
    from prometheus_client.parser import text_string_to_metric_families

    triples: list[tuple[str, dict[str, str], float]] = []
    try:
        for fam in text_string_to_metric_families(text):
            if not fam.name.startswith("vllm:") or fam.name.endswith("_created"):
                continue
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                if fam.type == "histogram":
                    if s.name.endswith("_count"):
                        triples.append((s.name, s.labels, s.value))
                    continue
                if fam.type in ("summary", "gaugehistogram"):
                    continue
                triples.append((s.name, s.labels, s.value))
    except ValueError as e:
        head = text[:120].replace("\n", "\\n")
        raise ValueError(
            f"not Prometheus text exposition format ({e}); starts with {head!r}"
        ) from e
    return snapshot_from_samples(triples)


def snapshot_from_vllm_metrics(metrics: Iterable[Any]) -> MetricsSnapshot:
    """Convert ``LLM.get_metrics()`` output (vLLM ``reader.Metric`` objects).

    Counters and gauges have ``.value``; histograms have ``.count``; vectors are skipped.
    Duck-typed, so vLLM need not be imported here.
    """
    triples: list[tuple[str, dict[str, str], float]] = []
    for m in metrics:
        labels = dict(getattr(m, "labels", {}) or {})
        if hasattr(m, "value"):
            triples.append((m.name, labels, float(m.value)))
        elif hasattr(m, "count") and hasattr(m, "buckets"):
            triples.append((m.name + "_count", labels, float(m.count)))
    return snapshot_from_samples(triples)
