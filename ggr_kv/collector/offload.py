"""The KV-offload tier beside the GPU prefix cache: is there one, and what it reported.

With ``kv_offloading_size`` (GiB; vLLM 0.26+, GPU only) vLLM configures a KV connector
(``OffloadingConnector``, or ``SimpleCPUOffloadConnector`` with
``VLLM_USE_SIMPLE_KV_OFFLOAD``; ``LMCacheMPConnector`` for the ``lmcache`` backend) and
blocks evicted from the GPU come back from host memory. vLLM reports that tier through:

- ``SchedulerStats.connector_prefix_cache_stats`` (a per-step ``PrefixCacheStats``:
  tokens looked up in / found by the connector after the GPU lookup), exported as
  ``vllm:external_prefix_cache_{queries,hits}``; with ``hits_by_source`` (after 0.26) the
  host share is exported as ``vllm:prompt_tokens_cached_by_source{source="host"}``;
- ``SchedulerStats.kv_connector_stats``: the connector's own payload (a dict). For the
  offloading connector it is ``{"types": {name: kind}, "data": {name: {labels: value}}}``
  with ``vllm:kv_offload_{load,store}_{bytes,time}`` counters and the CPU manager's
  ``vllm:kv_offload_cpu_cache_usage_perc`` gauge (0-1); a ``MultiConnector`` nests one such
  payload per connector.

Nothing here imports vLLM.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CPU_CONNECTORS",
    "OffloadTier",
    "read_connector_payload",
    "tier_from_metrics",
    "tier_from_vllm_config",
]

_NAN = math.nan
#: connectors whose tier is host (CPU) memory
CPU_CONNECTORS: frozenset[str] = frozenset(
    {"OffloadingConnector", "SimpleCPUOffloadConnector", "LMCacheMPConnector", "LMCacheConnectorV1"}
)
_LOAD_BYTES = ("vllm:kv_offload_load_bytes",)
_STORE_BYTES = ("vllm:kv_offload_store_bytes",)
_CPU_USAGE = "vllm:kv_offload_cpu_cache_usage_perc"


@dataclass(frozen=True)
class OffloadTier:
    """The engine's KV-offload (connector) tier, or why there is none.

    Attributes
    ----------
    present : a KV connector is configured.
    cpu : that connector keeps KV blocks in host (CPU) memory.
    connector : its class name (``"OffloadingConnector"``), None when unknown.
    size_gib : ``kv_offloading_size`` (GiB), None when not set.
    backend : ``kv_offloading_backend`` (``"native"`` / ``"lmcache"``), None when unknown.
    reason : why there is no CPU tier (None when ``cpu``).
    """

    present: bool
    cpu: bool
    connector: str | None = None
    size_gib: float | None = None
    backend: str | None = None
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "present": self.present,
            "cpu": self.cpu,
            "connector": self.connector,
            "size_gib": self.size_gib,
            "backend": self.backend,
            "reason": self.reason,
        }


def _tier(connector: str | None, size: float | None, backend: str | None) -> OffloadTier:
    if connector is None:
        return OffloadTier(
            False, False, None, size, backend,
            reason="no KV connector: the engine was built without kv_offloading_size "
            "(or kv_transfer_config), so there is no CPU offload tier",
        )  # fmt: skip
    cpu = connector in CPU_CONNECTORS
    why = None if cpu else f"KV connector {connector} is not a host-memory (CPU) offload tier"
    return OffloadTier(True, cpu, connector, size, backend, why)


def tier_from_vllm_config(cfg: Any) -> OffloadTier:
    """The tier of an engine's ``VllmConfig`` (``kv_transfer_config.kv_connector``,
    ``cache_config.kv_offloading_size`` / ``kv_offloading_backend``)."""
    if cfg is None:
        return OffloadTier(False, False, reason="the engine exposes no vllm_config")
    ktc = cfg.kv_transfer_config
    cc = cfg.cache_config
    size = cc.kv_offloading_size if hasattr(cc, "kv_offloading_size") else None
    backend = cc.kv_offloading_backend if hasattr(cc, "kv_offloading_backend") else None
    connector = None if ktc is None else ktc.kv_connector
    return _tier(connector, None if size is None else float(size), backend)


def tier_from_metrics(info: Mapping[str, Any], keys: set[str] | frozenset[str]) -> OffloadTier:
    """The tier as a ``/metrics`` page shows it: ``kv_offloading_size`` of
    ``vllm:cache_config_info``, or offload-only families on the page (``keys``: canonical
    keys present, see `ggr_kv.engine.prom.OFFLOAD_KEYS`)."""
    from ggr_kv.engine.prom import OFFLOAD_KEYS

    size = info.get("kv_offloading_size")
    backend = info.get("kv_offloading_backend")
    if size is None and not (OFFLOAD_KEYS & set(keys)):
        return _tier(None, None, backend)
    if backend == "lmcache":
        return _tier("LMCacheMPConnector", size, backend)
    # the page does not name the connector; native offloading uses OffloadingConnector
    return _tier("OffloadingConnector", size, backend)


def _sum_values(v: Any) -> float:
    if isinstance(v, Mapping):
        return float(sum(x for x in v.values() if isinstance(x, (int, float))))
    return float(v) if isinstance(v, (int, float)) else _NAN


def _one(payload: Mapping[str, Any]) -> tuple[float, float, float] | None:
    data = payload.get("data") if "types" in payload else None
    if not isinstance(data, Mapping):
        return None
    load = sum(_sum_values(data[k]) for k in _LOAD_BYTES if k in data)
    store = sum(_sum_values(data[k]) for k in _STORE_BYTES if k in data)
    usage = _NAN
    if _CPU_USAGE in data and isinstance(data[_CPU_USAGE], Mapping) and data[_CPU_USAGE]:
        vals = [float(x) for x in data[_CPU_USAGE].values()]
        usage = sum(vals) / len(vals)
    return (float(load), float(store), usage)


def read_connector_payload(payload: Any) -> tuple[float, float, float]:
    """``(load_bytes, store_bytes, cpu_cache_usage)`` of one step's ``kv_connector_stats``.

    Bytes moved host -> GPU (loads) and GPU -> host (stores) this step, and the CPU
    tier's usage gauge (0-1). NaN for what the payload does not carry: ``None`` (no
    connector, or nothing to report this step), or a payload shape other than the
    offloading connector's (other connectors, or another vLLM release's format).
    A ``MultiConnector`` payload (one payload per connector) is summed.
    """
    if not isinstance(payload, Mapping) or not payload:
        return (_NAN, _NAN, _NAN)
    got = _one(payload)
    if got is not None:
        return got
    parts = [p for p in (_one(v) for v in payload.values() if isinstance(v, Mapping)) if p]
    if not parts:
        return (_NAN, _NAN, _NAN)
    usages = [u for _, _, u in parts if not math.isnan(u)]
    return (
        sum(p[0] for p in parts),
        sum(p[1] for p in parts),
        sum(usages) / len(usages) if usages else _NAN,
    )
