"""Strict reading of the vLLM V1 stats objects the collector uses.

vLLM's ``SchedulerStats`` / ``IterationStats`` are not a stable interface (their
docstring says so) and fields were renamed before (``gpu_cache_usage`` ->
``kv_cache_usage``). Reading them with ``getattr(x, "f", 0)`` would turn the next rename
into silent zeros. Here every field is either *required* (missing -> `VLLMFieldError`
naming the class, the field and the installed vLLM version) or explicitly *optional*
(missing -> NaN, listed in `OPTIONAL_FIELDS` with the releases that lack it).

`check_installed_vllm` runs the readers over freshly built objects of the installed vLLM
before any engine work, so a rename fails when the collector is built, not mid-run.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

__all__ = [
    "ITERATION_FIELDS",
    "OPTIONAL_FIELDS",
    "OUTPUTS_FIELDS",
    "PREFIX_FIELDS",
    "SCHEDULER_FIELDS",
    "VLLMFieldError",
    "check_installed_vllm",
    "read_iteration_stats",
    "read_outputs",
    "read_scheduler_stats",
    "vllm_version",
]

_NAN = math.nan

#: ``SchedulerStats`` fields read every step (``connector_prefix_cache_stats`` and
#: ``kv_connector_stats`` exist in 0.26-0.33 and are ``None`` without a KV connector)
SCHEDULER_FIELDS: tuple[str, ...] = (
    "num_running_reqs",
    "num_waiting_reqs",
    "num_skipped_waiting_reqs",
    "kv_cache_usage",
    "prefix_cache_stats",
    "connector_prefix_cache_stats",
    "kv_connector_stats",
)
#: ``PrefixCacheStats`` fields (tokens): per-step deltas
PREFIX_FIELDS: tuple[str, ...] = ("queries", "hits")
#: ``IterationStats`` fields (``num_prompt_tokens`` is a property over
#: ``prompt_token_stats.total``)
ITERATION_FIELDS: tuple[str, ...] = (
    "num_generation_tokens",
    "num_preempted_reqs",
    "num_prompt_tokens",
)
#: ``EngineCoreOutputs`` fields: ``timestamp`` is the engine core's ``time.monotonic()``
#: when it built this step's outputs
OUTPUTS_FIELDS: tuple[str, ...] = ("timestamp", "scheduler_stats", "outputs", "engine_index")
#: fields that legitimately may be absent -> read as NaN, never 0
OPTIONAL_FIELDS: dict[str, str] = {
    "PrefixCacheStats.preempted_queries": "lookups of re-admitted preempted requests",
    "PrefixCacheStats.preempted_hits": "hits of re-admitted preempted requests",
    "PrefixCacheStats.hits_by_source": "connector hits by tier; added after vLLM 0.26",
}


class VLLMFieldError(AttributeError):
    """A vLLM stats object lacks a field ggr-kv reads (renamed or removed upstream)."""


def vllm_version() -> str:
    """The installed vLLM's version, or ``"unknown"`` (never imports a missing vLLM)."""
    try:
        import vllm
    except ImportError:
        return "unknown (vllm not importable)"
    return str(vllm.__version__) if hasattr(vllm, "__version__") else "unknown"


def _missing(obj: Any, cls_name: str, fields: Iterable[str], purpose: str) -> VLLMFieldError:
    """The error for the first of ``fields`` that ``obj`` lacks."""
    for f in fields:
        if not hasattr(obj, f):
            return VLLMFieldError(
                f"vLLM {vllm_version()}: {cls_name} has no field {f!r} (read for {purpose}); "
                "this vLLM release renamed or removed it. ggr-kv reads vLLM V1 0.26-0.33; "
                "update ggr_kv/collector/fields.py for this release"
            )
    return VLLMFieldError(f"vLLM {vllm_version()}: {cls_name}: an attribute read failed")


def _first_missing(*checks: tuple[Any, str, tuple[str, ...]]) -> VLLMFieldError:
    """The error for the first object (of ``(obj, class name, fields)``) lacking a field;
    ``None`` objects are skipped (absent connector stats)."""
    for obj, cls_name, fields in checks:
        if obj is not None and not all(hasattr(obj, f) for f in fields):
            return _missing(obj, cls_name, fields, "per-step KV metrics")
    return VLLMFieldError(f"vLLM {vllm_version()}: reading SchedulerStats failed")


def _optional(obj: Any, name: str) -> Any:
    """An `OPTIONAL_FIELDS` entry: the value, or None when this vLLM lacks the field."""
    return getattr(obj, name) if hasattr(obj, name) else None


def read_scheduler_stats(s: Any) -> tuple[float, ...]:
    """One step's ``SchedulerStats`` as numbers.

    Returns
    -------
    (kv_cache_usage 0-1, num_running, num_waiting (incl. deferred), prefix queries,
    prefix hits, preempted-request queries, preempted-request hits, connector queries,
    connector hits, connector host-tier hits (tokens)); NaN where a field is optional and
    absent. Connector values are NaN when no connector is configured (their stats are
    ``None``), host hits NaN where ``hits_by_source`` does not exist (vLLM 0.26).

    Raises
    ------
    VLLMFieldError
        if a required field (`SCHEDULER_FIELDS`, `PREFIX_FIELDS`) is missing.
    """
    try:
        usage = float(s.kv_cache_usage)
        running = s.num_running_reqs
        waiting = s.num_waiting_reqs + s.num_skipped_waiting_reqs
        pcs = s.prefix_cache_stats
        q, h = pcs.queries, pcs.hits
        cps = s.connector_prefix_cache_stats
        if cps is not None:
            cq, ch = cps.queries, cps.hits
    except AttributeError:
        raise _first_missing(
            (s, "SchedulerStats", SCHEDULER_FIELDS),
            (getattr(s, "prefix_cache_stats", None), "PrefixCacheStats", PREFIX_FIELDS),
            (getattr(s, "connector_prefix_cache_stats", None), "PrefixCacheStats", PREFIX_FIELDS),
        ) from None
    pq, ph = _optional(pcs, "preempted_queries"), _optional(pcs, "preempted_hits")
    pq = _NAN if pq is None else pq
    ph = _NAN if ph is None else ph
    if cps is None:
        cq = ch = host = _NAN
    else:
        by_source = _optional(cps, "hits_by_source")
        host = _NAN if by_source is None else _host_hits(by_source)
    return (usage, running, waiting, q, h, pq, ph, cq, ch, host)


def _host_hits(by_source: dict) -> int:
    """Tokens of ``hits_by_source`` supplied by host memory (``CacheHitSource.HOST``)."""
    return sum(n for src, n in by_source.items() if getattr(src, "value", src) == "host")


def read_iteration_stats(it: Any) -> tuple[int, int, int]:
    """``(num_preemptions, prompt_tokens, generation_tokens)`` of one ``IterationStats``.

    Raises
    ------
    VLLMFieldError
        if a field of `ITERATION_FIELDS` is missing.
    """
    try:
        return (it.num_preempted_reqs, it.num_prompt_tokens, it.num_generation_tokens)
    except AttributeError:
        raise _missing(it, "IterationStats", ITERATION_FIELDS, "per-step token counts") from None


def read_outputs(o: Any) -> tuple[float, Any, int, int]:
    """``(timestamp, scheduler_stats, num_outputs, engine_index)`` of ``EngineCoreOutputs``.

    ``timestamp`` is the engine core's monotonic clock when it built the outputs (same
    clock as ``time.monotonic()`` in every process of the host).

    Raises
    ------
    VLLMFieldError
        if a field of `OUTPUTS_FIELDS` is missing.
    """
    try:
        return (o.timestamp, o.scheduler_stats, len(o.outputs), o.engine_index)
    except AttributeError:
        raise _missing(o, "EngineCoreOutputs", OUTPUTS_FIELDS, "engine step times") from None


def check_installed_vllm() -> None:
    """Read freshly built ``SchedulerStats``, ``PrefixCacheStats``, ``IterationStats``
    and ``EngineCoreOutputs`` of the installed vLLM with the readers above.

    Raises
    ------
    VLLMFieldError
        naming the first missing field and the vLLM version.
    """
    from vllm.v1.engine import EngineCoreOutputs
    from vllm.v1.metrics.stats import IterationStats, PrefixCacheStats, SchedulerStats

    s = SchedulerStats()
    read_scheduler_stats(s)
    s.connector_prefix_cache_stats = PrefixCacheStats()
    read_scheduler_stats(s)
    read_iteration_stats(IterationStats())
    read_outputs(EngineCoreOutputs())
