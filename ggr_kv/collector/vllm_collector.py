"""Measure what vLLM's KV cache did during a run: one row per engine step.

`VLLMMetricsCollector` attaches to an offline ``vllm.LLM`` (created with
``disable_log_stats=False``) around ``llm.generate(...)``, or to a running server through
`VLLMMetricsCollector.from_url`, and records the prefix-cache queries and hits (tokens),
KV-cache usage, running/waiting requests, preemptions and token counts per engine step,
with process CPU/RSS and GPU counters sampled beside them::

    llm = LLM(model=path, disable_log_stats=False)
    with VLLMMetricsCollector(llm) as col:
        outputs = llm.generate(prompts, params)
    col.steps()            # DataFrame, columns ggr_kv.core.schema.STEP_COLUMNS + resources
    col.summary()          # dict: hit rate, hits, queries, peak KV usage, ...
    col.requests(outputs)  # DataFrame, columns ggr_kv.core.schema.REQUEST_COLUMNS

Ways of collecting, tried in this order and named in ``summary()["collection_method"]``:

1. ``"stat_logger"``: a vLLM ``StatLoggerBase`` appended to the engine's logger manager;
   vLLM calls it once per engine step with that step's ``SchedulerStats`` and
   ``IterationStats``. Exact, per step, negligible overhead.
2. ``"get_metrics_poll"``: ``llm.get_metrics()`` polled from a thread every
   ``poll_interval_s``; rows are counter deltas between polls, totals are exact (a last
   poll is taken at `stop`).
3. ``"prometheus_url"``: a server's ``/metrics`` page scraped every ``interval_s``
   (`from_url`), old and new metric names understood (`ggr_kv.engine.prom`).
4. ``"request_only"``: no engine statistics; only per-request ``num_cached_tokens``
   (`requests`). Chosen explicitly with ``tier="request_only"``.

Works with vLLM V1 releases 0.26 to 0.33 (renamed fields are read with fallbacks; no
V0 internals). Importing this module does not import vLLM.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Self

import numpy as np
import pandas as pd

from ggr_kv.core.jsonutil import to_jsonable
from ggr_kv.core.schema import REQUEST_COLUMNS, STEP_COLUMNS, add_running_totals
from ggr_kv.engine.config import import_vllm
from ggr_kv.engine.prom import MetricsSnapshot, parse_metrics_text, snapshot_from_vllm_metrics
from ggr_kv.engine.resources import RESOURCE_COLUMNS, ResourceSampler

__all__ = ["TIERS", "StatsDisabledError", "VLLMMetricsCollector"]

#: collection methods, in the order ``tier="auto"`` tries them for an offline engine
TIERS: tuple[str, ...] = ("stat_logger", "get_metrics_poll", "prometheus_url", "request_only")


# raw per-step record, as appended by the stat logger / pollers
_RAW = (
    "t_s",
    "engine",
    "kv_cache_usage",
    "prefix_queries",
    "prefix_hits",
    "num_running",
    "num_waiting",
    "num_preemptions",
    "prompt_tokens",
    "generation_tokens",
    "connector_queries",
    "connector_hits",
)
_DELTA_KEYS = (  # snapshot counters that become per-row deltas, in _RAW order
    "prefix_queries",
    "prefix_hits",
    "num_preemptions",
    "prompt_tokens",
    "generation_tokens",
    "connector_queries",
    "connector_hits",
)
_NAN = math.nan


class StatsDisabledError(RuntimeError):
    """The engine was built with statistics off, so there is nothing to collect."""


_LOGGER_CLS: type | None = None


def _step_logger_cls() -> type:
    """A ``StatLoggerBase`` subclass that appends one raw row per ``record`` call."""
    global _LOGGER_CLS
    if _LOGGER_CLS is not None:
        return _LOGGER_CLS
    try:
        from vllm.v1.metrics.loggers import StatLoggerBase
    except ImportError:
        import_vllm()  # says which extra installs vLLM when it is missing
        raise

    class _StepLogger(StatLoggerBase):
        """Per-engine logger: stores numbers only; all work happens after the run."""

        def __init__(
            self, vllm_config: Any, engine_index: int = 0, sink: Any = None, t0: float = 0.0
        ):
            self.engine_index = engine_index
            self.sink = sink if sink is not None else []
            self.t0 = t0

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None, engine_idx=0):
            t = time.perf_counter() - self.t0
            s = scheduler_stats
            if s is not None:
                kv = getattr(s, "kv_cache_usage", None)
                if kv is None:  # vLLM <= 0.9 name
                    kv = getattr(s, "gpu_cache_usage", _NAN)
                pcs = s.prefix_cache_stats
                q, h = pcs.queries, pcs.hits
                run = s.num_running_reqs
                wait = s.num_waiting_reqs + getattr(s, "num_skipped_waiting_reqs", 0)
                cps = getattr(s, "connector_prefix_cache_stats", None)
                cq, ch = (cps.queries, cps.hits) if cps is not None else (0, 0)
            else:
                kv, q, h, run, wait, cq, ch = _NAN, 0, 0, _NAN, _NAN, 0, 0
            it = iteration_stats
            if it is not None:
                pre = it.num_preempted_reqs
                pt = getattr(it, "num_prompt_tokens", 0)
                gt = it.num_generation_tokens
            else:
                pre = pt = gt = 0
            self.sink.append((t, engine_idx, kv, q, h, run, wait, pre, pt, gt, cq, ch))

        def log_engine_initialized(self):
            pass

    _LOGGER_CLS = _StepLogger
    return _StepLogger


class VLLMMetricsCollector:
    """Per-step KV-cache and prefix-cache metrics of a vLLM engine over one window.

    Parameters
    ----------
    llm : an offline ``vllm.LLM`` (or its ``LLMEngine``) built with
        ``disable_log_stats=False``.
    sample_resources : also sample process CPU %, RSS and GPU counters (see
        `ggr_kv.engine.resources`) in a thread; they appear in `resources` and as extra columns
        of `steps` (nearest sample in time).
    resource_interval_s : seconds between resource samples.
    tier : ``"auto"`` (first that works of ``"stat_logger"``, ``"get_metrics_poll"``), one
        of those two, or ``"request_only"`` (no engine statistics at all).
    poll_interval_s : seconds between ``llm.get_metrics()`` polls (tier 2 only).

    Raises
    ------
    StatsDisabledError
        if the engine has statistics off and ``tier`` is not ``"request_only"``.
    ImportError
        if vLLM is not installed (the message says which extra to install).

    Notes
    -----
    Each collector only counts what happens between its `start` and `stop`, so one
    ``llm`` can be measured over several runs in a row; `stop` detaches the logger.
    Use it as a context manager so it is detached even when ``generate`` raises.
    """

    def __init__(
        self,
        llm: Any,
        *,
        sample_resources: bool = True,
        resource_interval_s: float = 0.1,
        tier: str = "auto",
        poll_interval_s: float = 0.05,
    ) -> None:
        vllm = import_vllm()
        allowed = ("auto", "stat_logger", "get_metrics_poll", "request_only")
        if tier not in allowed:
            raise ValueError(
                f"unknown tier {tier!r}; choose one of {allowed} (a server's /metrics: "
                "use VLLMMetricsCollector.from_url)"
            )
        if not poll_interval_s > 0:
            raise ValueError(f"poll_interval_s must be > 0 seconds, got {poll_interval_s!r}")
        engine = getattr(llm, "llm_engine", llm)
        if not hasattr(engine, "logger_manager") and not hasattr(engine, "get_metrics"):
            raise TypeError(
                f"expected a vllm.LLM (V1 engine) or its LLMEngine, got {type(llm).__name__}"
            )
        self._llm = llm
        self._engine = engine
        self._url: str | None = None
        self._vllm_version = getattr(vllm, "__version__", None)
        self._init_common(sample_resources, resource_interval_s)
        self._poll_interval_s = float(poll_interval_s)
        self._method = self._choose_tier(tier)

    # -- construction ------------------------------------------------------------------
    def _init_common(self, sample_resources: bool, resource_interval_s: float) -> None:
        if sample_resources and not resource_interval_s > 0:
            raise ValueError(
                f"resource_interval_s must be > 0 seconds, got {resource_interval_s!r}"
            )
        self._sample_resources = bool(sample_resources)
        self._resource_interval_s = float(resource_interval_s)
        self._rows: list[tuple] = []
        self._t0: float | None = None
        self._t_end: float | None = None
        self._adapter: Any = None
        self._sampler: ResourceSampler | None = None
        self._resource_pid: int | None = None
        self._poll_thread: threading.Thread | None = None
        self._poll_stop = threading.Event()
        self._baseline: MetricsSnapshot | None = None
        self._last: MetricsSnapshot | None = None
        self._iterations = 0.0
        self._n_polls = 0
        self._poll_errors: list[str] = []
        self._counter_resets: list[str] = []
        self._last_requests: pd.DataFrame | None = None
        self._info: dict[str, Any] = {}

    def _stats_on(self) -> bool:
        lm = getattr(self._engine, "logger_manager", None)
        return lm is not None and bool(getattr(self._engine, "log_stats", True))

    def _choose_tier(self, tier: str) -> str:
        stats_on = self._stats_on()
        if tier == "request_only":
            warnings.warn(
                "tier='request_only': no per-step engine statistics are collected; only "
                "per-request num_cached_tokens from requests(outputs)"
                + ("" if stats_on else " (this engine has statistics off)"),
                stacklevel=3,
            )
            return "request_only"
        if not stats_on:
            raise StatsDisabledError(
                "this vLLM engine has statistics off (vllm.LLM defaults to "
                "disable_log_stats=True), so there are no per-step metrics to collect. "
                "Create it with LLM(..., disable_log_stats=False), or pass "
                "tier='request_only' to keep only per-request num_cached_tokens."
            )
        if tier in ("auto", "stat_logger"):
            why = self._stat_logger_problem()
            if why is None:
                return "stat_logger"
            if tier == "stat_logger":
                raise RuntimeError(f"cannot attach a stat logger to this engine: {why}")
            if not hasattr(self._llm, "get_metrics") and not hasattr(self._engine, "get_metrics"):
                raise RuntimeError(
                    f"cannot attach a stat logger ({why}) and this engine has no get_metrics()"
                )
            warnings.warn(
                f"cannot attach a stat logger ({why}); polling llm.get_metrics() every "
                f"{self._poll_interval_s} s instead",
                stacklevel=3,
            )
        return "get_metrics_poll"

    def _stat_logger_problem(self) -> str | None:
        lm = getattr(self._engine, "logger_manager", None)
        if lm is None:
            return "the engine has no logger_manager"
        if not isinstance(getattr(lm, "stat_loggers", None), list):
            return "logger_manager.stat_loggers is not a list in this vLLM version"
        try:
            from vllm.v1.metrics.loggers import PerEngineStatLoggerAdapter  # noqa: F401

            _step_logger_cls()
        except ImportError as e:
            return f"vllm.v1.metrics.loggers lacks what is needed ({e})"
        if self._vllm_config() is None:
            return "the engine exposes no vllm_config"
        return None

    def _vllm_config(self) -> Any:
        cfg = getattr(self._engine, "vllm_config", None)
        if cfg is None and hasattr(self._engine, "get_vllm_config"):
            try:
                cfg = self._engine.get_vllm_config()
            except Exception:  # noqa: BLE001 - optional accessor
                cfg = None
        return cfg

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        interval_s: float = 0.5,
        sample_resources: bool = False,
        resource_interval_s: float = 0.1,
        pid: int | None = None,
        timeout_s: float = 5.0,
    ) -> VLLMMetricsCollector:
        """Collect from a running vLLM server by scraping its ``/metrics`` page.

        Parameters
        ----------
        url : the server's base URL (``http://127.0.0.1:8000``) or its ``/metrics`` URL.
        interval_s : seconds between scrapes; rows are counter deltas between scrapes
            at which something changed. Totals are exact (a last scrape is taken at `stop`).
        sample_resources : sample CPU/RSS of process ``pid`` and its children (the server;
            default: this process) and the GPUs through NVML.
        pid : the server's process id, for resource sampling.
        timeout_s : HTTP timeout per scrape, seconds.

        Raises
        ------
        ConnectionError
            naming the URL, if the server cannot be reached (checked here, at once).
        ValueError
            if the page holds no vLLM metrics.
        """
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {url!r}")
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0 seconds, got {interval_s!r}")
        self = cls.__new__(cls)
        base = url.rstrip("/")
        base = base.removesuffix("/metrics")
        self._llm = None
        self._engine = None
        self._url = base + "/metrics"
        self._timeout_s = float(timeout_s)
        self._init_common(sample_resources, resource_interval_s)
        self._resource_pid = pid
        self._poll_interval_s = float(interval_s)
        self._method = "prometheus_url"
        snap = self._scrape()  # fail now, naming the URL, if unreachable
        if "prefix_queries" not in snap.values:
            raise ValueError(
                f"{self._url} has no vLLM prefix-cache metrics (is it a vLLM server with "
                "stats on, i.e. without --disable-log-stats?)"
            )
        self._info = dict(snap.info)
        self._vllm_version = self._server_version(base)
        return self

    def _server_version(self, base: str) -> str | None:
        try:
            with urllib.request.urlopen(base + "/version", timeout=self._timeout_s) as r:
                return json.loads(r.read().decode()).get("version")
        except (OSError, ValueError):
            return None

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def collection_method(self) -> str:
        """The tier in use (see `TIERS`)."""
        return self._method

    @property
    def running(self) -> bool:
        return self._t0 is not None and self._t_end is None

    def start(self) -> VLLMMetricsCollector:
        """Begin the window: attach the logger / start polling and resource sampling."""
        if self._t0 is not None:
            raise RuntimeError("this collector was already started; make a new one per run")
        self._t0 = time.perf_counter()
        self._start_wall = time.time()
        if self._sample_resources:
            self._sampler = ResourceSampler(
                self._resource_interval_s, pid=self._resource_pid, t0=self._t0
            )
        if self._method == "stat_logger":
            self._attach()
        elif self._method == "get_metrics_poll":
            self._start_polling(lambda: snapshot_from_vllm_metrics(self._read_get_metrics()))
        elif self._method == "prometheus_url":
            self._start_polling(self._scrape)
        if self._engine is not None:
            self._read_engine_info()
        if self._sampler is not None:
            self._sampler.start()
        return self

    def stop(self) -> VLLMMetricsCollector:
        """End the window: detach, take the last poll, stop sampling. Idempotent."""
        if self._t0 is None:
            raise RuntimeError("stop() called before start()")
        if self._t_end is not None:
            return self
        try:
            if self._method == "stat_logger":
                self._detach()
            elif self._method in ("get_metrics_poll", "prometheus_url"):
                self._stop_polling()
        finally:
            self._t_end = time.perf_counter()
            if self._sampler is not None:
                self._sampler.stop()
        if self._poll_errors:
            warnings.warn(
                f"{len(self._poll_errors)} of {self._n_polls + len(self._poll_errors)} polls "
                f"failed; first: {self._poll_errors[0]}",
                stacklevel=2,
            )
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- tier 1: stat logger -----------------------------------------------------------
    def _attach(self) -> None:
        from vllm.v1.metrics.loggers import PerEngineStatLoggerAdapter

        lm = self._engine.logger_manager
        cls = _step_logger_cls()
        sink, t0 = self._rows, self._t0
        idxs = list(getattr(lm, "engine_indexes", None) or [0])

        def factory(vllm_config: Any, engine_index: int = 0) -> Any:
            return cls(vllm_config, engine_index, sink=sink, t0=t0)

        self._adapter = PerEngineStatLoggerAdapter(self._vllm_config(), idxs, factory)
        lm.stat_loggers.append(self._adapter)

    def _detach(self) -> None:
        lm = getattr(self._engine, "logger_manager", None)
        if lm is not None and self._adapter is not None:
            lm.stat_loggers[:] = [x for x in lm.stat_loggers if x is not self._adapter]
        self._adapter = None

    # -- tiers 2 and 3: polling ----------------------------------------------------------
    def _read_get_metrics(self) -> list:
        src = self._llm if hasattr(self._llm, "get_metrics") else self._engine
        return src.get_metrics()

    def _scrape(self) -> MetricsSnapshot:
        try:
            with urllib.request.urlopen(self._url, timeout=self._timeout_s) as r:
                text = r.read().decode("utf-8", errors="replace")
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise ConnectionError(f"cannot reach vLLM metrics at {self._url}: {reason}") from e
        return parse_metrics_text(text)

    def _start_polling(self, read: Callable[[], MetricsSnapshot]) -> None:
        self._read = read
        self._baseline = self._last = read()
        self._poll_stop.clear()
        self._poll_thread = threading.Thread(
            target=self._poll_loop, name="ggr-kv-poll", daemon=True
        )
        self._poll_thread.start()

    def _stop_polling(self) -> None:
        if self._poll_thread is not None:
            self._poll_stop.set()
            self._poll_thread.join()
            self._poll_thread = None
        self._poll_once()  # the last reading makes the totals exact

    def _poll_loop(self) -> None:
        while not self._poll_stop.wait(self._poll_interval_s):
            self._poll_once()

    def _poll_once(self) -> None:
        t = time.perf_counter() - self._t0
        try:
            snap = self._read()
        except Exception as e:  # noqa: BLE001 - keep polling; reported at stop()
            self._poll_errors.append(f"{type(e).__name__}: {e}")
            return
        self._n_polls += 1
        prev = self._last
        self._last = snap
        deltas = []
        for k in (*_DELTA_KEYS, "iterations"):
            cur, old = snap.get(k, _NAN), prev.get(k, _NAN)
            if math.isnan(cur):
                d = 0.0
            elif math.isnan(old):
                d = cur
            else:
                d = cur - old
                if d < 0:  # counter restarted (engine re-created / server restarted)
                    self._counter_resets.append(k)
                    d = cur
            deltas.append(d)
        *counts, iters = deltas
        self._iterations += iters
        gauges = (snap.get("kv_cache_usage"), snap.get("num_running"), snap.get("num_waiting"))
        prev_g = (prev.get("kv_cache_usage"), prev.get("num_running"), prev.get("num_waiting"))
        changed = (
            any(counts)
            or iters
            or any(
                not (a == b or (math.isnan(a) and math.isnan(b))) for a, b in zip(gauges, prev_g)
            )
        )
        if not changed:
            return
        q, h, pre, pt, gt, cq, ch = counts
        self._rows.append((t, 0, gauges[0], q, h, gauges[1], gauges[2], pre, pt, gt, cq, ch))

    # -- engine facts --------------------------------------------------------------------
    def _read_engine_info(self) -> None:
        cfg = self._vllm_config()
        cc = getattr(cfg, "cache_config", None)
        dc = getattr(cfg, "device_config", None)
        info: dict[str, Any] = {}
        if cc is not None:
            info["block_size"] = getattr(cc, "block_size", None)
            info["num_gpu_blocks"] = getattr(cc, "num_gpu_blocks", None)
            info["enable_prefix_caching"] = getattr(cc, "enable_prefix_caching", None)
        if dc is not None:
            info["device_type"] = str(getattr(dc, "device_type", "")) or None
        mc = getattr(cfg, "model_config", None)
        if mc is not None:
            info["model_name"] = getattr(mc, "served_model_name", None) or getattr(
                mc, "model", None
            )
        self._info = info
        if info.get("enable_prefix_caching") is False and self._method != "request_only":
            warnings.warn(
                "prefix caching is off in this engine (cache_config.enable_prefix_caching="
                "False); every prefix-cache hit will be 0",
                stacklevel=3,
            )

    # -- results -------------------------------------------------------------------------
    def _raw_frame(self) -> pd.DataFrame:
        rows = list(self._rows)
        arr = np.asarray(rows, dtype=float).reshape(len(rows), len(_RAW))
        return pd.DataFrame(arr, columns=list(_RAW))

    def steps(self) -> pd.DataFrame:
        """One row per engine step (per changed poll for the polling tiers).

        Columns are `ggr_kv.core.schema.STEP_COLUMNS`: ``t_s`` (seconds since `start`),
        ``kv_cache_usage`` (0-1), prefix-cache ``prefix_queries``/``prefix_hits`` (tokens,
        this step) and their cumulative sums, ``hit_rate_cum`` (0-1, NaN before any
        query), running/waiting requests, preemptions, prompt/generation tokens and KV
        connector queries/hits (tokens). With resource sampling on, the nearest resource
        sample's `ggr_kv.engine.resources.RESOURCE_COLUMNS` are appended.
        """
        raw = self._raw_frame()
        n = len(raw)
        out = pd.DataFrame(index=pd.RangeIndex(n))
        out["t_s"] = raw["t_s"].to_numpy()
        out["step"] = np.arange(n, dtype=np.int64)
        out["kv_cache_usage"] = raw["kv_cache_usage"].to_numpy()
        for c in ("prefix_queries", "prefix_hits"):
            out[c] = raw[c].to_numpy().astype(np.int64)
        for c in ("num_running", "num_waiting"):
            v = raw[c].to_numpy()
            out[c] = v.astype(np.int64) if not np.isnan(v).any() else v
        out["num_preemptions"] = raw["num_preemptions"].to_numpy().astype(np.int64)
        for c in ("prompt_tokens", "generation_tokens", "connector_queries", "connector_hits"):
            out[c] = raw[c].to_numpy().astype(np.int64)
        out = add_running_totals(out)[list(STEP_COLUMNS)]
        if self._sampler is not None:
            res = self._sampler.samples()
            if len(res) and n:
                out = pd.merge_asof(out, res, on="t_s", direction="nearest")
            else:
                for c in RESOURCE_COLUMNS:
                    out[c] = np.nan
        return out

    def resources(self) -> pd.DataFrame:
        """Resource samples: ``t_s`` and `ggr_kv.engine.resources.RESOURCE_COLUMNS`.

        Empty when ``sample_resources=False``. GPU columns are NaN without a GPU
        (``summary()["resources"]["gpu_reason"]`` says why).
        """
        if self._sampler is None:
            return pd.DataFrame(columns=["t_s", *RESOURCE_COLUMNS], dtype=float)
        return self._sampler.samples()

    def summary(self) -> dict[str, Any]:
        """Totals of the window, JSON-ready (NaN becomes None).

        Keys: ``collection_method``, ``stats_available``, ``prefix_cache_hit_rate`` (0-1),
        ``prefix_cache_hits`` / ``prefix_cache_queries`` (tokens), ``max_kv_cache_usage``
        (0-1), ``num_preemptions``, ``num_steps`` (engine steps; for the polling tiers
        the steps that produced output, from ``vllm:iteration_tokens_total``),
        ``prompt_tokens``, ``generation_tokens``, ``connector_queries`` /
        ``connector_hits`` (tokens), ``vllm_version``, ``block_size`` (tokens),
        ``num_kv_blocks``, ``enable_prefix_caching``, ``device``, ``duration_s``,
        ``sample_interval_s`` (polling tiers; None when per step), ``num_rows`` and
        ``resources`` (see `ggr_kv.engine.resources.ResourceSampler.summary`, or None).
        """
        now = time.perf_counter()
        duration = None
        if self._t0 is not None:
            duration = (self._t_end if self._t_end is not None else now) - self._t0
        s: dict[str, Any] = {
            "collection_method": self._method,
            "stats_available": self._method != "request_only",
            "vllm_version": self._vllm_version,
            "block_size": self._info.get("block_size"),
            "num_kv_blocks": self._info.get("num_gpu_blocks"),
            "enable_prefix_caching": self._info.get("enable_prefix_caching"),
            "model_name": self._info.get("model_name"),
            "source_url": self._url,
            "duration_s": duration,
            "sample_interval_s": (
                self._poll_interval_s
                if self._method in ("get_metrics_poll", "prometheus_url")
                else None
            ),
        }
        if self._method == "request_only":
            r = self._last_requests

            def total(col: str) -> int | None:  # None when nothing was reported
                v = r[col].sum(min_count=1) if r is not None else _NAN
                return None if pd.isna(v) else int(v)

            q, h = total("prompt_tokens"), total("num_cached_tokens")
            s.update(
                prefix_cache_queries=q,
                prefix_cache_hits=h,
                prefix_cache_hit_rate=(h / q) if q and h is not None else None,
                max_kv_cache_usage=None,
                num_preemptions=None,
                num_steps=None,
                num_rows=0,
                prompt_tokens=q,
                generation_tokens=total("output_tokens"),
                connector_queries=None,
                connector_hits=None,
                note="request_only: totals come from the last requests(outputs) call"
                if r is not None
                else "request_only: call requests(outputs) for per-request cached tokens",
            )
        else:
            raw = self._raw_frame()
            q = int(raw["prefix_queries"].sum())
            h = int(raw["prefix_hits"].sum())
            kv = raw["kv_cache_usage"].to_numpy()
            s.update(
                prefix_cache_queries=q,
                prefix_cache_hits=h,
                prefix_cache_hit_rate=(h / q) if q else None,
                max_kv_cache_usage=float(np.nanmax(kv))
                if len(kv) and not np.isnan(kv).all()
                else None,
                num_preemptions=int(raw["num_preemptions"].sum()),
                num_steps=len(raw) if self._method == "stat_logger" else int(self._iterations),
                num_rows=len(raw),
                prompt_tokens=int(raw["prompt_tokens"].sum()),
                generation_tokens=int(raw["generation_tokens"].sum()),
                connector_queries=int(raw["connector_queries"].sum()),
                connector_hits=int(raw["connector_hits"].sum()),
            )
            if self._method in ("get_metrics_poll", "prometheus_url"):
                s["num_polls"] = self._n_polls
                s["poll_errors"] = len(self._poll_errors)
                if self._counter_resets:
                    s["counter_resets"] = sorted(set(self._counter_resets))
                if self._last is not None:
                    s["metric_names"] = dict(self._last.sources)
        res = self._sampler.summary() if self._sampler is not None else None
        s["resources"] = res
        gpus = (res or {}).get("gpu")
        dev = self._info.get("device_type")
        s["device"] = ", ".join(gpus) if gpus else (dev or None)
        if not gpus:
            s["gpu"] = None
            s["gpu_reason"] = (res or {}).get("gpu_reason") or "resource sampling off"
        else:
            s["gpu"] = gpus
        return to_jsonable(s)

    def requests(
        self, outputs: Iterable[Any], rows: Sequence[int] | np.ndarray | None = None
    ) -> pd.DataFrame:
        """Per-request table with `ggr_kv.core.schema.REQUEST_COLUMNS`.

        Parameters
        ----------
        outputs : vLLM ``RequestOutput`` objects in run order, or OpenAI-compatible
            completion responses from a server (dicts, or objects with ``model_dump()``),
            one prompt per response. A response dict may carry client-measured
            ``e2e_s`` / ``ttft_s`` / ``queued_s`` (seconds); the server reports none.
        rows : original row position of each output (default ``0..n-1``).

        Returns
        -------
        DataFrame: ``row``, ``slot`` (position in run order), ``request_id``,
        ``prompt_tokens``, ``num_cached_tokens``, ``output_tokens`` (tokens), ``e2e_s``,
        ``ttft_s``, ``queued_s`` (seconds; NaN where not reported). Server responses
        report cached tokens only if the server runs with
        ``--enable-prompt-tokens-details``; otherwise ``num_cached_tokens`` is NaN.
        """
        outs = list(outputs)
        n = len(outs)
        if rows is None:
            row_arr = np.arange(n, dtype=np.int64)
        else:
            row_arr = np.asarray(rows)
            if row_arr.ndim != 1 or len(row_arr) != n:
                raise ValueError(f"rows has {len(row_arr)} entries but there are {n} outputs")
            if not np.issubdtype(row_arr.dtype, np.integer):
                raise ValueError(f"rows must be integer row positions, got dtype {row_arr.dtype}")
            row_arr = row_arr.astype(np.int64)
        recs = [_request_record(o, i) for i, o in enumerate(outs)]
        df = pd.DataFrame.from_records(
            recs,
            columns=[
                "request_id",
                "prompt_tokens",
                "num_cached_tokens",
                "output_tokens",
                "e2e_s",
                "ttft_s",
                "queued_s",
            ],
        )
        df.insert(0, "slot", np.arange(n, dtype=np.int64))
        df.insert(0, "row", row_arr)
        df["request_id"] = df["request_id"].astype(object)
        for c in ("prompt_tokens", "num_cached_tokens", "output_tokens"):
            v = pd.to_numeric(df[c], errors="coerce").astype(float)
            df[c] = v.astype(np.int64) if n and v.notna().all() else v
        for c in ("e2e_s", "ttft_s", "queued_s"):
            df[c] = pd.to_numeric(df[c], errors="coerce").astype(float)
        from_server = n and all(isinstance(o, Mapping) or hasattr(o, "model_dump") for o in outs)
        if from_server and df["num_cached_tokens"].isna().all():
            warnings.warn(
                "the server reported no cached tokens (usage.prompt_tokens_details is "
                "null); start it with --enable-prompt-tokens-details",
                stacklevel=2,
            )
        df = df[list(REQUEST_COLUMNS)]
        self._last_requests = df
        return df


def _pos(x: Any) -> float:
    """A timestamp / latency, or NaN when vLLM left it unset (0 or None)."""
    if x is None:
        return _NAN
    x = float(x)
    return x if x > 0 else _NAN


def _request_record(o: Any, i: int) -> tuple:
    if hasattr(o, "model_dump") and not isinstance(o, Mapping):
        o = o.model_dump()
    if isinstance(o, Mapping):
        return _openai_record(o, i)
    if hasattr(o, "prompt_token_ids") and hasattr(o, "outputs"):
        return _request_output_record(o)
    raise TypeError(
        f"output {i} is a {type(o).__name__}; expected a vllm RequestOutput or an "
        "OpenAI-compatible completion response dict"
    )


def _request_output_record(o: Any) -> tuple:
    ptoks = o.prompt_token_ids
    prompt = len(ptoks) if ptoks is not None else _NAN
    cached = getattr(o, "num_cached_tokens", None)
    cached = _NAN if cached is None else cached
    out_toks = sum(len(c.token_ids) for c in (o.outputs or []))
    e2e = ttft = queued = _NAN
    m = getattr(o, "metrics", None)
    if m is not None:
        if hasattr(m, "first_token_latency"):  # V1 RequestStateStats (monotonic ts)
            ttft = _pos(m.first_token_latency)
            ft, lt = (
                _pos(getattr(m, "first_token_ts", None)),
                _pos(getattr(m, "last_token_ts", None)),
            )
            e2e = ttft + (lt - ft)
            qt, st = _pos(getattr(m, "queued_ts", None)), _pos(getattr(m, "scheduled_ts", None))
            queued = st - qt
        elif hasattr(m, "arrival_time"):  # older RequestMetrics (wall-clock times)
            at = _pos(m.arrival_time)
            ttft = _pos(getattr(m, "first_token_time", None)) - at
            e2e = _pos(getattr(m, "finished_time", None)) - at
            queued = _pos(getattr(m, "time_in_queue", None))
    return (str(o.request_id), prompt, cached, out_toks, e2e, ttft, queued)


def _openai_record(d: Mapping, i: int) -> tuple:
    choices = d.get("choices") or []
    if len(choices) != 1:
        raise ValueError(
            f"response {i} (id {d.get('id')!r}) has {len(choices)} choices; send one prompt "
            "per request (n=1) so usage counts belong to one row"
        )
    usage = d.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}

    def num(x: Any) -> float:
        return _NAN if x is None else float(x)

    return (
        str(d.get("id")),
        num(usage.get("prompt_tokens")),
        num(details.get("cached_tokens")),
        num(usage.get("completion_tokens")),
        num(d.get("e2e_s")),
        num(d.get("ttft_s")),
        num(d.get("queued_s")),
    )
