"""The permanent per-engine step logger (a vLLM ``AggregateStatLoggerBase``) and the
output tap that stamps each step with the engine's own clock.

Both feed one `ggr_kv.collector.steplog.StepLog` per engine:

- ``record(scheduler_stats, iteration_stats, ...)`` is vLLM's stat-logger interface,
  called once per ``EngineCoreOutputs`` the frontend processes;
- `install_output_tap` wraps the engine-core client's ``get_output`` (``LLMEngine``) or
  ``get_output_async`` (``AsyncLLM``) so every ``EngineCoreOutputs`` is read before the
  frontend handles it: its ``timestamp`` (the engine core's ``time.monotonic()`` when it
  built the step's outputs) and its ``SchedulerStats``, including steps vLLM 0.26/0.27's
  offline ``LLMEngine.step()`` never passes to ``record`` (steps without request outputs,
  e.g. non-final prefill chunks). vLLM has no public hook for this; the client's
  ``get_output`` is what ``LLMEngine.step()`` (and ``AsyncLLM``'s output handler) calls
  first in 0.26-0.33.

The class is built on first use, so importing this module does not import vLLM.
"""

from __future__ import annotations

from typing import Any

from ggr_kv.collector.fields import read_iteration_stats, read_outputs, read_scheduler_stats
from ggr_kv.collector.offload import read_connector_payload
from ggr_kv.collector.steplog import StepLog

__all__ = ["install_output_tap", "step_logger_cls", "step_logger_factory"]

_CLS: type | None = None
_TAP_ATTR = "_ggr_kv_step_log"
_NO_PAYLOAD = read_connector_payload(None)


def _sched_values(s: Any) -> tuple[tuple | None, tuple]:
    if s is None:
        return None, _NO_PAYLOAD
    return read_scheduler_stats(s), read_connector_payload(s.kv_connector_stats)


def step_logger_cls() -> type:
    """The ``AggregateStatLoggerBase`` subclass ``GgrKvStepLogger`` (one per process).

    ``GgrKvStepLogger(vllm_config, engine_indexes=None)`` keeps a `StepLog` in
    ``.step_log`` that every engine index of that frontend appends to (not ``.log``:
    that name is vLLM's periodic-logging method).
    """
    global _CLS
    if _CLS is not None:
        return _CLS
    from vllm.v1.metrics.loggers import AggregateStatLoggerBase

    class GgrKvStepLogger(AggregateStatLoggerBase):
        """ggr-kv's per-step recorder: stores numbers only, work happens after the run."""

        def __init__(self, vllm_config: Any, engine_indexes: list[int] | None = None):
            self.engine_indexes = list(engine_indexes or [0])
            self.step_log = StepLog("stat_logger")

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
            it = None if iteration_stats is None else read_iteration_stats(iteration_stats)
            if self.step_log.merge_iteration(scheduler_stats, it):
                return  # the output tap already read this step's scheduler stats
            sched, offload = _sched_values(scheduler_stats)
            self.step_log.add_record(engine_idx, sched, offload, it)

        def log_engine_initialized(self):
            pass

    _CLS = GgrKvStepLogger
    return _CLS


def step_logger_factory() -> type:
    """What to pass to vLLM's documented ``stat_loggers`` argument.

    ``LLMEngine.from_engine_args(args, stat_loggers=[step_logger_factory()])`` or
    ``AsyncLLM.from_engine_args(args, stat_loggers=[step_logger_factory()])``; a
    `ggr_kv.collector.VLLMMetricsCollector` built on that engine then reads this logger
    instead of adding one. (``vllm.LLM`` takes no ``stat_loggers`` in vLLM 0.26-0.33.)
    """
    return step_logger_cls()


def install_output_tap(engine: Any, log: StepLog, asynchronous: bool) -> None:
    """Make ``engine``'s engine-core client report every ``EngineCoreOutputs`` to ``log``.

    ``asynchronous``: wrap ``get_output_async`` (``AsyncLLM``) instead of ``get_output``
    (``LLMEngine``). Idempotent per client.
    """
    client = engine.engine_core
    if getattr(client, _TAP_ATTR, None) is log:
        return

    def seen(outs: Any) -> None:
        ts, sched_obj, n_out, idx = read_outputs(outs)
        if sched_obj is None and not n_out:
            return  # no step ran (an empty poll of the engine core)
        sched, offload = _sched_values(sched_obj)
        log.add_step(float(ts), int(idx), n_out, sched, offload, sched_obj)

    if asynchronous:
        original_async = client.get_output_async

        async def get_output_async() -> Any:
            outs = await original_async()
            seen(outs)
            return outs

        client.get_output_async = get_output_async
    else:
        original = client.get_output

        def get_output() -> Any:
            outs = original()
            seen(outs)
            return outs

        client.get_output = get_output
    setattr(client, _TAP_ATTR, log)
