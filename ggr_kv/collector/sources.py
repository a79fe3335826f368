"""Where the collector's numbers come from: one small class per collection method.

Every source feeds a `ggr_kv.collector.steplog.StepLog` (``request_only`` has none) and
answers the same few questions (`Source`); `ggr_kv.collector.VLLMMetricsCollector` reads
windows and totals from it without knowing which source it is:

- `EngineSource` (``"stat_logger"``): an offline ``vllm.LLM``, ``LLMEngine`` or
  ``AsyncLLM``; a permanent per-engine step logger plus the output tap
  (`ggr_kv.collector.stat_logger`), per engine step, engine-clock times.
- `GetMetricsSource` (``"get_metrics_poll"``) and `PrometheusSource`
  (``"prometheus_url"``): counters polled from ``llm.get_metrics()`` or a server's
  ``/metrics`` (`ggr_kv.collector.poll`).
- `RequestOnlySource` (``"request_only"``): no engine statistics.
"""

from __future__ import annotations

import weakref
from typing import Any

from ggr_kv.collector.fields import check_installed_vllm, vllm_version
from ggr_kv.collector.offload import OffloadTier, tier_from_vllm_config
from ggr_kv.collector.stat_logger import install_output_tap, step_logger_cls
from ggr_kv.collector.steplog import StepLog

__all__ = [
    "TIERS",
    "EngineSource",
    "RequestOnlySource",
    "Source",
    "StatsDisabledError",
    "engine_of",
    "vllm_config_facts",
]

#: collection methods, in the order ``tier="auto"`` tries them for an offline engine
TIERS: tuple[str, ...] = ("stat_logger", "get_metrics_poll", "prometheus_url", "request_only")

STATS_OFF_MESSAGE = (
    "this vLLM engine has statistics off (vllm.LLM defaults to disable_log_stats=True), so "
    "there are no per-step metrics to collect. Create it with LLM(..., "
    "disable_log_stats=False), or pass tier='request_only' to keep only per-request "
    "num_cached_tokens."
)


class StatsDisabledError(RuntimeError):
    """The engine was built with statistics off, so there is nothing to collect."""


class Source:
    """What every collection method provides (the base does nothing).

    Attributes
    ----------
    method : one of `TIERS`.
    log : the source's `StepLog` (None for ``request_only``).
    step_time : what a row's ``t_s`` measures.
    sample_interval_s : seconds between polls; None when rows are engine steps.
    resource_pid : process whose CPU/RSS the collector samples (None: this one).
    iterations : engine iterations with output counted so far (pollers only).
    """

    method: str = ""
    log: StepLog | None = None
    step_time: str = ""
    sample_interval_s: float | None = None
    resource_pid: int | None = None
    #: engine iterations with output counted so far (pollers: from
    #: ``vllm:iteration_tokens_total``); None when rows are the steps themselves
    iterations: float | None = None

    def begin(self) -> None:
        """A collection window starts (pollers: poll now and start polling)."""

    def end(self) -> list[str]:
        """A window ends (pollers: stop, poll once more); returns warnings to show."""
        return []

    def refresh(self) -> None:
        """Bring the log up to date now (pollers poll; a step logger always is)."""

    def available(self, sched_rows: int) -> tuple[bool, str | None]:
        """Whether engine counters were really read over an interval in which
        ``sched_rows`` rows carried scheduler stats, and if not, why."""
        return False, "this source reads no engine counters"

    def facts(self) -> dict[str, Any]:
        """Engine facts: ``vllm_version``, ``block_size``, ``num_gpu_blocks``,
        ``enable_prefix_caching``, ``device_type``, ``model_name``, ``source_url``."""
        return {}

    def offload_tier(self) -> OffloadTier:
        return OffloadTier(False, False, reason="unknown: this source cannot see the engine")

    def extra_summary(self) -> dict[str, Any]:
        """Source-specific summary keys (attach route, poll counts, ...)."""
        return {}


def engine_of(llm: Any) -> Any:
    """The V1 engine behind ``llm``: ``vllm.LLM().llm_engine``, or ``llm`` itself when it
    is an ``LLMEngine`` / ``AsyncLLM``.

    Raises
    ------
    TypeError
        for anything without a ``logger_manager`` attribute (not a vLLM V1 engine).
    """
    engine = llm.llm_engine if hasattr(llm, "llm_engine") else llm
    if not hasattr(engine, "logger_manager"):
        raise TypeError(
            f"expected a vllm.LLM (V1 engine), its LLMEngine or an AsyncLLM, got "
            f"{type(llm).__name__}"
        )
    return engine


def vllm_config_facts(cfg: Any) -> dict[str, Any]:
    """Cache/device/model facts of a ``VllmConfig`` (None where it has no such part)."""
    info: dict[str, Any] = {"vllm_version": vllm_version()}
    cc = cfg.cache_config if cfg is not None else None
    if cc is not None:
        info["block_size"] = cc.block_size
        info["num_gpu_blocks"] = cc.num_gpu_blocks
        info["enable_prefix_caching"] = cc.enable_prefix_caching
    dc = cfg.device_config if cfg is not None else None
    if dc is not None:
        info["device_type"] = str(dc.device_type) or None
    mc = cfg.model_config if cfg is not None else None
    if mc is not None:
        info["model_name"] = mc.served_model_name or mc.model
    return info


#: engine -> its permanent StepLog (weak: the engine's lifetime decides)
_ENGINE_LOGS: weakref.WeakKeyDictionary[Any, tuple[StepLog, str]] = weakref.WeakKeyDictionary()


def _attach(engine: Any) -> tuple[StepLog, str]:
    """The engine's permanent step logger and output tap, attached on first use.

    Returns the log and the route used. The documented route is vLLM's ``stat_loggers``
    argument (`ggr_kv.collector.stat_logger.step_logger_factory`); for ``vllm.LLM``,
    which has none in vLLM 0.26-0.33, the logger is appended to
    ``llm_engine.logger_manager.stat_loggers`` once.
    """
    if engine in _ENGINE_LOGS:
        return _ENGINE_LOGS[engine]
    check_installed_vllm()  # a renamed stats field fails here, before any engine work
    cls = step_logger_cls()
    lm = engine.logger_manager
    if not isinstance(lm.stat_loggers, list):
        raise RuntimeError(  # noqa: TRY004 - an unsupported vLLM, not a caller's wrong type
            f"vLLM {vllm_version()}: logger_manager.stat_loggers is a "
            f"{type(lm.stat_loggers).__name__}, not a list; build the engine with "
            "stat_loggers=[ggr_kv.collector.step_logger_factory()] or use tier='get_metrics_poll'"
        )
    mine = [x for x in lm.stat_loggers if isinstance(x, cls)]
    if mine:
        log, route = mine[0].step_log, "stat_loggers argument (vLLM's documented route)"
    else:
        indexes = list(lm.engine_indexes) if hasattr(lm, "engine_indexes") else [0]
        logger = cls(engine.vllm_config, indexes)
        lm.stat_loggers.append(logger)
        log, route = (
            logger.step_log,
            "appended to logger_manager.stat_loggers (vllm.LLM has no stat_loggers argument)",
        )
    install_output_tap(engine, log, asynchronous=not hasattr(engine, "step"))
    _ENGINE_LOGS[engine] = (log, route)
    return log, route


class EngineSource(Source):
    """Per-step metrics of an in-process engine through its permanent step logger.

    Parameters
    ----------
    llm : a ``vllm.LLM`` built with ``disable_log_stats=False``, an ``LLMEngine`` or an
        ``AsyncLLM`` (stats on; ideally built with ``stat_loggers=[step_logger_factory()]``).

    Raises
    ------
    StatsDisabledError
        if the engine has statistics off.
    ggr_kv.collector.fields.VLLMFieldError
        if the installed vLLM lacks a stats field the logger reads.
    """

    method = "stat_logger"
    step_time = "engine clock (EngineCoreOutputs.timestamp)"

    def __init__(self, llm: Any) -> None:
        engine = engine_of(llm)
        if engine.logger_manager is None or not engine.log_stats:
            raise StatsDisabledError(STATS_OFF_MESSAGE)
        self._engine_ref = weakref.ref(engine)
        self.log, self.route = _attach(engine)
        self._facts = vllm_config_facts(engine.vllm_config)
        self._tier = tier_from_vllm_config(engine.vllm_config)

    def available(self, sched_rows: int) -> tuple[bool, str | None]:
        if sched_rows == 0:
            return False, "no engine step has run in this interval, so no counter was read"
        return True, None

    def facts(self) -> dict[str, Any]:
        return dict(self._facts)

    def offload_tier(self) -> OffloadTier:
        return self._tier

    def extra_summary(self) -> dict[str, Any]:
        log = self.log
        return {
            "attach_route": self.route,
            "tap_steps": log.n_tapped,
            "records_merged": log.n_merged,
            "records_unmatched": log.n_unmatched,
        }


class RequestOnlySource(Source):
    """No engine statistics; the collector reports per-request cached tokens only."""

    method = "request_only"

    def __init__(self, llm: Any | None = None) -> None:
        cfg = engine_of(llm).vllm_config if llm is not None else None
        self._facts = vllm_config_facts(cfg) if cfg is not None else {}
        self._tier = tier_from_vllm_config(cfg) if cfg is not None else super().offload_tier()

    def available(self, sched_rows: int) -> tuple[bool, str | None]:
        return False, "tier='request_only': no engine counters are read"

    def facts(self) -> dict[str, Any]:
        return dict(self._facts)

    def offload_tier(self) -> OffloadTier:
        return self._tier
