"""Measure what vLLM's KV cache did during a run: one row per engine step.

`VLLMMetricsCollector` reads an offline ``vllm.LLM`` (created with
``disable_log_stats=False``), an ``LLMEngine`` / ``AsyncLLM``, or a running server
(`VLLMMetricsCollector.from_url`), and records the prefix-cache queries and hits
(tokens), KV-cache usage, running/waiting requests, preemptions, token counts and the
KV-offload (connector) tier per engine step, with process CPU/RSS and GPU counters
sampled beside them::

    llm = LLM(model=path, disable_log_stats=False)
    with VLLMMetricsCollector(llm) as col:
        outputs = llm.generate(prompts, params)
    col.steps()            # DataFrame: STEP_COLUMNS + EXTRA_STEP_COLUMNS + resources
    col.summary()          # dict: hit rate, hits, queries, peak KV usage, offload tier...
    col.requests(outputs)  # DataFrame: REQUEST_COLUMNS + first_token_s
    col.counter_check()    # collector counters vs the requests' own numbers

    seed = VLLMMetricsCollector(llm)   # built once, asked at any time:
    seed.collect_internal_stats()      # the seed pipeline's snapshot dict

The numbers come from one *source* per collector (`ggr_kv.collector.sources`), named in
``summary()["collection_method"]`` (`TIERS`):

1. ``"stat_logger"``: a permanent step logger attached once per engine and an output tap
   that stamps every step with the engine core's clock (`ggr_kv.collector.stat_logger`).
   Exact, per step, negligible overhead. vLLM's documented route for custom loggers is
   ``LLMEngine.from_engine_args(..., stat_loggers=[step_logger_factory()])`` /
   ``AsyncLLM.from_engine_args(..., stat_loggers=[...])``; an engine built that way is
   read through its own logger. ``vllm.LLM`` has no such argument in vLLM 0.26-0.33, so
   for it the logger is appended to ``llm.llm_engine.logger_manager.stat_loggers``
   (once per engine; later collectors reuse it).
2. ``"get_metrics_poll"``: ``llm.get_metrics()`` polled every ``poll_interval_s``.
3. ``"prometheus_url"``: a server's ``/metrics`` scraped every ``interval_s``.
4. ``"request_only"``: no engine statistics; only per-request ``num_cached_tokens``.

Windows and totals: a collector collects from its construction. `start` ... `stop` (or
``with``) is its one *window*: `steps`, `summary` and `counter_check` describe that window;
a collector whose window never ran refuses to report (``stats_available`` False and a
warning). `collect_internal_stats` is cumulative since the last `start`, or since
construction when the collector was never started, up to the moment it is called.

Works with vLLM V1 releases 0.26 to 0.33; fields of vLLM's stats objects are read
strictly (`ggr_kv.collector.fields`). Importing this module does not import vLLM.
"""

from __future__ import annotations

import time
import warnings
import weakref
from collections.abc import Iterable, Sequence
from typing import Any, Self

import numpy as np
import pandas as pd

from ggr_kv.collector import live
from ggr_kv.collector.checks import COUNTER_TOLERANCE, CounterCheck, counter_check
from ggr_kv.collector.fields import VLLMFieldError
from ggr_kv.collector.frames import empty_steps, rate, steps_frame, window_totals
from ggr_kv.collector.poll import GetMetricsSource, PrometheusSource
from ggr_kv.collector.requests import requests_frame
from ggr_kv.collector.seed import internal_stats
from ggr_kv.collector.sources import (
    TIERS,
    EngineSource,
    RequestOnlySource,
    Source,
    StatsDisabledError,
)
from ggr_kv.collector.steplog import Cursor
from ggr_kv.core.jsonutil import to_jsonable
from ggr_kv.engine.config import import_vllm
from ggr_kv.engine.resources import RESOURCE_COLUMNS, ResourceSampler

__all__ = ["TIERS", "StatsDisabledError", "VLLMMetricsCollector"]

_NEVER_RAN = (
    "this collector's window never ran (start() was not called, or it is not used as a "
    "context manager), so it has no numbers for a window; use `with collector: ...`, or "
    "collect_internal_stats() for totals since construction"
)


def _choose_source(llm: Any, tier: str, poll_interval_s: float) -> Source:
    allowed = ("auto", "stat_logger", "get_metrics_poll", "request_only")
    if tier not in allowed:
        raise ValueError(
            f"unknown tier {tier!r}; choose one of {allowed} (a server's /metrics: "
            "use VLLMMetricsCollector.from_url)"
        )
    if not poll_interval_s > 0:
        raise ValueError(f"poll_interval_s must be > 0 seconds, got {poll_interval_s!r}")
    if tier == "request_only":
        src = RequestOnlySource(llm)
        engine = llm.llm_engine if hasattr(llm, "llm_engine") else llm
        off = engine.logger_manager is None
        warnings.warn(
            "tier='request_only': no per-step engine statistics are collected; only "
            "per-request num_cached_tokens from requests(outputs)"
            + (" (this engine has statistics off)" if off else ""),
            stacklevel=4,
        )
        return src
    if tier == "get_metrics_poll":
        return GetMetricsSource(llm, poll_interval_s)
    try:
        return EngineSource(llm)
    except StatsDisabledError:
        raise
    except (RuntimeError, VLLMFieldError) as e:  # auto: poll instead, saying why
        if tier == "stat_logger":
            raise RuntimeError(f"cannot attach a stat logger to this engine: {e}") from e
        warnings.warn(
            f"cannot attach a stat logger ({e}); polling llm.get_metrics() every "
            f"{poll_interval_s} s instead",
            stacklevel=4,
        )
        return GetMetricsSource(llm, poll_interval_s)


class VLLMMetricsCollector:
    """Per-step KV-cache and prefix-cache metrics of a vLLM engine over one window.

    Parameters
    ----------
    llm : an offline ``vllm.LLM`` built with ``disable_log_stats=False``, its
        ``LLMEngine``, an ``AsyncLLM``, or a `ggr_kv.collector.sources.Source`.
    sample_resources : also sample process CPU %, RSS and GPU counters (see
        `ggr_kv.engine.resources`) in a thread during the window; they appear in
        `resources` and as extra columns of `steps` (nearest sample in time).
    resource_interval_s : seconds between resource samples.
    tier : ``"auto"`` (``"stat_logger"``, falling back to ``"get_metrics_poll"`` with a
        warning naming the reason when no logger can be attached, e.g. a vLLM release
        that renamed a stats field), one of those two, or ``"request_only"``.
    poll_interval_s : seconds between ``llm.get_metrics()`` polls (that tier only).

    Raises
    ------
    StatsDisabledError
        if the engine has statistics off and ``tier`` is not ``"request_only"``.
    ggr_kv.collector.fields.VLLMFieldError
        with ``tier="stat_logger"``, if the installed vLLM lacks a stats field the
        collector reads.
    ImportError
        if vLLM is not installed (the message says which extra to install).
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
        if sample_resources and not resource_interval_s > 0:
            raise ValueError(
                f"resource_interval_s must be > 0 seconds, got {resource_interval_s!r}"
            )
        if isinstance(llm, Source):
            self._source = llm
        else:
            import_vllm()
            self._source = _choose_source(llm, tier, poll_interval_s)
        self._sample_resources = bool(sample_resources)
        self._resource_interval_s = float(resource_interval_s)
        log = self._source.log
        self._cursor: Cursor | None = log.cursor() if log is not None else None
        self._since = "construction"
        self._t_built = time.monotonic()
        self._window: Cursor | None = None
        self._t0: float | None = None
        self._t_end: float | None = None
        self._rows: list[list[float]] | None = None  # the window's rows, copied at stop
        self._unpin: weakref.finalize | None = None
        self._sampler: ResourceSampler | None = None
        self._last_requests: pd.DataFrame | None = None
        self._iters0: float | None = None

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
        interval_s : seconds between scrapes; rows are counter deltas between scrapes.
        sample_resources : sample CPU/RSS of ``pid`` (and its children) and the GPUs.
        resource_interval_s : seconds between resource samples.
        pid : the server's process id (default: this process).
        timeout_s : seconds to wait for one scrape.

        Raises
        ------
        ConnectionError
            if the URL cannot be reached now (the message names it).
        ValueError
            if the URL is not http(s) or serves no vLLM prefix-cache metrics.
        """
        src = PrometheusSource(url, interval_s=interval_s, timeout_s=timeout_s, pid=pid)
        return cls(src, sample_resources=sample_resources, resource_interval_s=resource_interval_s)

    # -- lifecycle ---------------------------------------------------------------------
    @property
    def collection_method(self) -> str:
        """The tier in use (see `TIERS`)."""
        return self._source.method

    @property
    def source(self) -> Source:
        return self._source

    @property
    def running(self) -> bool:
        return self._t0 is not None and self._t_end is None

    @property
    def t0_monotonic(self) -> float | None:
        """``time.monotonic()`` at the window start (s), the zero of ``t_s``; None before."""
        return self._t0

    def start(self) -> VLLMMetricsCollector:
        """Begin the window (one per collector): read from here on, start sampling."""
        if self._t0 is not None:
            raise RuntimeError("this collector was already started; make a new one per run")
        src = self._source
        src.begin()
        if src.log is not None:
            self._window = src.log.cursor()
            src.log.pin(id(self), self._window)
            self._unpin = weakref.finalize(self, src.log.unpin, id(self))
            self._cursor = self._window
        self._since = "start"
        self._iters0 = src.iterations
        self._t0 = self._window.t if self._window is not None else time.monotonic()
        if self._sample_resources:
            self._sampler = ResourceSampler(
                self._resource_interval_s, pid=src.resource_pid, t0=self._t0
            )
            self._sampler.start()
        live.collector_started(self)
        if src.facts().get("enable_prefix_caching") is False and src.method != "request_only":
            warnings.warn(
                "prefix caching is off in this engine (cache_config.enable_prefix_caching="
                "False); every prefix-cache hit will be 0",
                stacklevel=2,
            )
        return self

    def stop(self) -> VLLMMetricsCollector:
        """End the window: last poll, keep this window's rows, stop sampling. Idempotent."""
        if self._t0 is None:
            raise RuntimeError("stop() called before start()")
        if self._t_end is not None:
            return self
        try:
            problems = self._source.end()
        finally:
            self._t_end = time.monotonic()
            if self._window is not None:
                self._rows = self._source.log.rows_since(self._window)
                self._unpin()
            if self._sampler is not None:
                self._sampler.stop()
            live.collector_stopped(self)
        for p in problems:
            warnings.warn(p, stacklevel=2)
        return self

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- results -------------------------------------------------------------------------
    def _window_rows(self) -> list[list[float]]:
        if self._rows is not None:
            return self._rows
        if self._window is None:
            return []
        return self._source.log.rows_since(self._window)

    def steps(self) -> pd.DataFrame:
        """One row per engine step of the window (per changed poll for pollers).

        Columns: `ggr_kv.core.schema.STEP_COLUMNS` (``t_s``: seconds since `start` on the
        engine's clock for ``stat_logger``, else the poll time), then
        `ggr_kv.collector.frames.EXTRA_STEP_COLUMNS` (``t_recv_s`` receive time, engine
        index, outputs per step, offload-tier columns), then, with resource sampling on,
        the nearest resource sample's `ggr_kv.engine.resources.RESOURCE_COLUMNS`.
        Empty (with a warning) when the window never ran.
        """
        if self._t0 is None:
            warnings.warn(_NEVER_RAN, stacklevel=2)
            return empty_steps()
        out = steps_frame(self._window_rows(), self._t0)
        if self._sampler is not None:
            res = self._sampler.samples()
            if len(res) and len(out):
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

        Keys: ``collection_method``, ``stats_available`` (False, with
        ``stats_reason``, when no counter was read in the window or it never ran),
        ``window_ran``, ``prefix_cache_hit_rate`` (0-1), ``prefix_cache_hits`` /
        ``prefix_cache_queries`` (tokens), ``prefix_preempted_queries`` / ``_hits``,
        ``max_kv_cache_usage`` (0-1), ``num_preemptions``, ``num_steps`` (engine steps;
        for pollers the steps that produced output, from ``vllm:iteration_tokens_total``),
        ``steps_without_outputs``, ``prompt_tokens``, ``generation_tokens``,
        ``connector_queries`` / ``connector_hits`` (tokens; None without a connector),
        the offload tier (``offload_tier``, ``offload_tier_reason``, ``offload_queries``,
        ``offload_hits``, ``offload_hit_rate``, ``offload_host_hits``,
        ``offload_load_bytes``, ``offload_store_bytes``, ``max_cpu_cache_usage``: None
        when there is no tier), ``step_time_source``, ``first_step_s``,
        ``max_receive_lag_s``, ``t0_monotonic``, ``vllm_version``, ``block_size``
        (tokens), ``num_kv_blocks``, ``enable_prefix_caching``, ``model_name``,
        ``source_url``, ``device``, ``duration_s``, ``sample_interval_s`` (pollers; None
        when per step), ``num_rows``, ``resources`` and source-specific keys (attach
        route; poll counts).
        """
        src = self._source
        facts = src.facts()
        s: dict[str, Any] = {
            "collection_method": src.method,
            "window_ran": self._t0 is not None,
            "step_time_source": src.step_time or None,
            "vllm_version": facts.get("vllm_version"),
            "block_size": facts.get("block_size"),
            "num_kv_blocks": facts.get("num_gpu_blocks"),
            "enable_prefix_caching": facts.get("enable_prefix_caching"),
            "model_name": facts.get("model_name"),
            "source_url": facts.get("source_url"),
            "sample_interval_s": src.sample_interval_s,
            "t0_monotonic": self._t0,
            "duration_s": None,
        }
        if self._t0 is None:
            warnings.warn(_NEVER_RAN, stacklevel=2)
            s.update(_empty_counts(), stats_available=False, stats_reason=_NEVER_RAN)
        else:
            end = self._t_end if self._t_end is not None else time.monotonic()
            s["duration_s"] = end - self._t0
            if src.method == "request_only":
                s.update(self._request_only_counts())
            else:
                s.update(self._window_counts())
            s.update(src.extra_summary())
            if src.iterations is not None:
                s["num_steps"] = int(src.iterations - self._iters0)
        s.update(self._device_keys(facts))
        return to_jsonable(s)

    def _window_counts(self) -> dict[str, Any]:
        tot = window_totals(self._window_rows(), self._t0)
        ok, why = self._source.available(tot["steps_with_stats"])
        tier = self._source.offload_tier()
        q, h = tot["prefix_cache_queries"], tot["prefix_cache_hits"]
        out = {
            **tot,
            "stats_available": ok,
            "prefix_cache_queries": q if q is not None else 0,
            "prefix_cache_hits": h if h is not None else 0,
            "prefix_cache_hit_rate": rate(h, q),
            "num_steps": tot["num_rows"],
            "offload_tier": tier.as_dict(),
            "offload_tier_reason": tier.reason,
        }
        if not ok:
            out["stats_reason"] = why
        off = dict.fromkeys(
            ("offload_queries", "offload_hits", "offload_hit_rate", "offload_host_hits",
             "offload_load_bytes", "offload_store_bytes", "max_cpu_cache_usage"),
        )  # fmt: skip
        if tier.present:
            cq, ch = tot["connector_queries"], tot["connector_hits"]
            off.update(
                offload_queries=cq,
                offload_hits=ch,
                offload_hit_rate=rate(ch, cq),
                offload_host_hits=tot["host_hits"],
                offload_load_bytes=tot["offload_load_bytes"],
                offload_store_bytes=tot["offload_store_bytes"],
                max_cpu_cache_usage=tot["max_cpu_cache_usage"],
            )
        else:
            out["connector_queries"] = out["connector_hits"] = None
        out.update(off)
        for k in ("host_hits", "steps_with_stats"):
            out.pop(k)
        return out

    def _request_only_counts(self) -> dict[str, Any]:
        r = self._last_requests

        def total(col: str) -> int | None:  # None when nothing was reported
            v = r[col].sum(min_count=1) if r is not None else float("nan")
            return None if pd.isna(v) else int(v)

        q, h = total("prompt_tokens"), total("num_cached_tokens")
        out = _empty_counts()
        out.update(
            stats_available=False,
            stats_reason="tier='request_only': no engine counters are read",
            prefix_cache_queries=q,
            prefix_cache_hits=h,
            prefix_cache_hit_rate=rate(h, q),
            prompt_tokens=q,
            generation_tokens=total("output_tokens"),
            num_rows=0,
            note="request_only: totals come from the last requests(outputs) call"
            if r is not None
            else "request_only: call requests(outputs) for per-request cached tokens",
        )
        return out

    def _device_keys(self, facts: dict[str, Any]) -> dict[str, Any]:
        res = self._sampler.summary() if self._sampler is not None else None
        gpus = (res or {}).get("gpu")
        dev = facts.get("device_type")
        out: dict[str, Any] = {
            "resources": res,
            "device": ", ".join(gpus) if gpus else (dev or None),
            "gpu": gpus or None,
        }
        if not gpus:
            out["gpu_reason"] = (res or {}).get("gpu_reason") or "resource sampling off"
        return out

    def collect_internal_stats(self) -> dict[str, Any]:
        """The seed pipeline's snapshot, cumulative since the last `start` (or since
        construction if never started), up to now.

        Keys (see `ggr_kv.collector.seed.SEED_KEYS`): ``collection_method``,
        ``stats_available`` (True only when engine counters were read in the interval),
        ``gpu_cache_usage_sys`` (0-1, latest ``kv_cache_usage``),
        ``gpu_prefix_cache_hit_rate`` (hits / queries, 0-1), ``cpu_cache_usage_sys`` and
        ``cpu_prefix_cache_hit_rate`` (the CPU KV-offload tier; None plus
        ``cpu_tier_reason`` when there is none), ``num_preemptions``, ``timestamp``
        (``time.time()``), plus ``since``, ``interval_s``, ``num_steps`` and the hit /
        query counts behind the rates. Values not read are None, never 0.
        """
        src = self._source
        src.refresh()
        totals = src.log.totals_since(self._cursor) if src.log is not None else None
        return to_jsonable(internal_stats(src, totals, self._since))

    def requests(
        self, outputs: Iterable[Any], rows: Sequence[int] | np.ndarray | None = None
    ) -> pd.DataFrame:
        """Per-request table: `ggr_kv.core.schema.REQUEST_COLUMNS` + ``first_token_s``.

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
        ``ttft_s``, ``queued_s`` (seconds; NaN where not reported) and
        ``first_token_s`` (engine time of the first token, s since `start`, or since
        construction if never started; the clock of ``steps()["t_s"]``). Server
        responses report cached tokens only with ``--enable-prompt-tokens-details``;
        otherwise ``num_cached_tokens`` is NaN.
        """
        t0 = self._t0 if self._t0 is not None else self._t_built
        df = requests_frame(outputs, rows, t0)
        self._last_requests = df
        return df

    def counter_check(
        self, requests: pd.DataFrame | None = None, tolerance: float = COUNTER_TOLERANCE
    ) -> CounterCheck:
        """`ggr_kv.collector.checks.counter_check` of this window's summary against
        ``requests`` (default: the last `requests` table)."""
        req = requests if requests is not None else self._last_requests
        if req is None:
            raise ValueError("no requests to compare: call requests(outputs) first")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a never-run window is in the check's note
            s = self.summary()
        return counter_check(s, req, tolerance)


def _empty_counts() -> dict[str, Any]:
    keys = (
        "prefix_cache_hit_rate", "prefix_cache_hits", "prefix_cache_queries",
        "prefix_preempted_queries", "prefix_preempted_hits", "max_kv_cache_usage",
        "num_preemptions", "num_steps", "steps_without_outputs", "prompt_tokens",
        "generation_tokens", "connector_queries", "connector_hits", "offload_tier",
        "offload_tier_reason", "offload_queries", "offload_hits", "offload_hit_rate",
        "offload_host_hits", "offload_load_bytes", "offload_store_bytes",
        "max_cpu_cache_usage", "first_step_s", "max_receive_lag_s", "num_rows",
    )  # fmt: skip
    return dict.fromkeys(keys)
