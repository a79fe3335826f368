"""Sources that poll cumulative counters: ``llm.get_metrics()`` or a server's ``/metrics``.

Each poll is turned into one `StepLog` row of counter deltas since the previous poll
(only when something changed); the first reading is taken when the source is built, so
totals count from construction. A thread polls every ``interval_s`` while a window is
open; `PollSource.refresh` polls once on demand. Rows carry the poll time, not engine
step times (``step_time``), and a counter that goes backwards (engine re-created,
server restarted) is counted from zero and listed in ``counter_resets``.
"""

from __future__ import annotations

import json
import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from ggr_kv.collector.offload import OffloadTier, tier_from_metrics, tier_from_vllm_config
from ggr_kv.collector.sources import (
    STATS_OFF_MESSAGE,
    Source,
    StatsDisabledError,
    engine_of,
    vllm_config_facts,
)
from ggr_kv.collector.steplog import StepLog
from ggr_kv.engine.prom import MetricsSnapshot, parse_metrics_text, snapshot_from_vllm_metrics

__all__ = ["GetMetricsSource", "PollSource", "PrometheusSource"]

_NAN = math.nan
#: snapshot counter -> log field (per-row deltas)
_DELTAS = {
    "prefix_queries": "prefix_queries",
    "prefix_hits": "prefix_hits",
    "connector_queries": "connector_queries",
    "connector_hits": "connector_hits",
    "host_hits": "host_hits",
    "offload_load_bytes": "offload_load_bytes",
    "offload_store_bytes": "offload_store_bytes",
    "num_preemptions": "num_preemptions",
    "prompt_tokens": "prompt_tokens",
    "generation_tokens": "generation_tokens",
}
_GAUGES = ("kv_cache_usage", "cpu_cache_usage", "num_running", "num_waiting")


class PollSource(Source):
    """Base of the polling sources: ``read()`` returns a `MetricsSnapshot`.

    Parameters
    ----------
    read : callable returning the current snapshot; called once now (errors propagate).
    interval_s : seconds between polls while a window is open.
    """

    step_time = "poll time (when the counters were read)"

    def __init__(self, read: Callable[[], MetricsSnapshot], interval_s: float) -> None:
        if not interval_s > 0:
            raise ValueError(f"poll interval must be > 0 seconds, got {interval_s!r}")
        self.sample_interval_s = float(interval_s)
        self.log = StepLog(self.method)
        self._read = read
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.iterations = 0.0
        self.n_polls = 0
        self.errors: list[str] = []
        self.counter_resets: set[str] = set()
        self.last_ok = False
        self.last: MetricsSnapshot = read()  # baseline: totals count from here
        self.last_ok = "prefix_queries" in self.last.values

    # -- polling -------------------------------------------------------------------------
    def refresh(self) -> None:
        """Poll once now; a failure is kept for `end` (and marks counters unavailable)."""
        with self._lock:
            try:
                snap = self._read()
            except Exception as e:  # noqa: BLE001 - keep polling; reported at end()
                self.errors.append(f"{type(e).__name__}: {e}")
                self.last_ok = False
                return
            self.n_polls += 1
            prev, self.last = self.last, snap
            self.last_ok = "prefix_queries" in snap.values
            self._row(prev, snap)

    def _delta(self, key: str, prev: MetricsSnapshot, snap: MetricsSnapshot) -> float:
        cur, old = snap.get(key), prev.get(key)
        if math.isnan(cur):
            return _NAN
        if math.isnan(old):
            return cur
        if cur < old:  # counter restarted (engine re-created / server restarted)
            self.counter_resets.add(key)
            return cur
        return cur - old

    def _row(self, prev: MetricsSnapshot, snap: MetricsSnapshot) -> None:
        deltas = {f: self._delta(k, prev, snap) for k, f in _DELTAS.items()}
        iters = self._delta("iterations", prev, snap)
        if not math.isnan(iters):
            self.iterations += iters
        gauges = {g: snap.get(g) for g in _GAUGES}
        changed = any(v for v in deltas.values() if not math.isnan(v)) or iters > 0
        changed = changed or any(
            not (gauges[g] == prev.get(g) or (math.isnan(gauges[g]) and math.isnan(prev.get(g))))
            for g in _GAUGES
        )
        if not changed:
            return
        values = {k: v for k, v in {**deltas, **gauges}.items() if not math.isnan(v)}
        values["t_recv"] = time.monotonic()
        values["engine"] = 0.0
        values["has_sched"] = 1.0 if "prefix_queries" in snap.values else 0.0
        self.log.add_row(values)

    def _loop(self) -> None:
        while not self._stop.wait(self.sample_interval_s):
            self.refresh()

    def begin(self) -> None:
        self.refresh()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="ggr-kv-poll", daemon=True)
        self._thread.start()

    def end(self) -> list[str]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        self.refresh()  # the last reading makes the totals exact
        if not self.errors:
            return []
        n = self.n_polls + len(self.errors)
        return [f"{len(self.errors)} of {n} polls failed; first: {self.errors[0]}"]

    # -- answers -------------------------------------------------------------------------
    def available(self, sched_rows: int) -> tuple[bool, str | None]:
        if not self.last_ok:
            why = self.errors[-1] if self.errors else "no prefix-cache counters on the page"
            return False, f"the last poll read no counters ({why})"
        return True, None

    def extra_summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "num_polls": self.n_polls,
            "poll_errors": len(self.errors),
            "metric_names": dict(self.last.sources),
        }
        if self.counter_resets:
            out["counter_resets"] = sorted(self.counter_resets)
        return out


class GetMetricsSource(PollSource):
    """Poll an offline engine's ``llm.get_metrics()`` (its in-process Prometheus registry).

    Raises
    ------
    StatsDisabledError
        if the engine has statistics off.
    """

    method = "get_metrics_poll"

    def __init__(self, llm: Any, interval_s: float = 0.05) -> None:
        engine = engine_of(llm)
        if engine.logger_manager is None or not engine.log_stats:
            raise StatsDisabledError(STATS_OFF_MESSAGE)
        target = llm if hasattr(llm, "get_metrics") else engine
        super().__init__(lambda: snapshot_from_vllm_metrics(target.get_metrics()), interval_s)
        self._facts = vllm_config_facts(engine.vllm_config)
        self._tier = tier_from_vllm_config(engine.vllm_config)

    def facts(self) -> dict[str, Any]:
        return dict(self._facts)

    def offload_tier(self) -> OffloadTier:
        return self._tier


class PrometheusSource(PollSource):
    """Scrape a running vLLM server's ``/metrics`` page.

    Parameters
    ----------
    url : the server's base URL (``http://127.0.0.1:8000``) or its ``/metrics`` URL.
    interval_s : seconds between scrapes while a window is open.
    timeout_s : seconds to wait for one scrape.
    pid : the server's process id, for resource sampling (None: this process).

    Raises
    ------
    ValueError
        if ``url`` is not http(s), or the page has no vLLM prefix-cache metrics.
    ConnectionError
        if the URL cannot be reached (the message names it).
    """

    method = "prometheus_url"

    def __init__(
        self, url: str, interval_s: float = 0.5, timeout_s: float = 5.0, pid: int | None = None
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"server URL must start with http:// or https://, got {url!r}")
        base = url.rstrip("/").removesuffix("/metrics")
        self.url = base + "/metrics"
        self._timeout_s = float(timeout_s)
        self.resource_pid = pid
        super().__init__(self._scrape, interval_s)
        if "prefix_queries" not in self.last.values:
            raise ValueError(
                f"{self.url} has no vLLM prefix-cache metrics (is it a vLLM server with "
                "stats on, i.e. without --disable-log-stats?)"
            )
        self._version = self._server_version(base)

    def _scrape(self) -> MetricsSnapshot:
        try:
            with urllib.request.urlopen(self.url, timeout=self._timeout_s) as r:
                text = r.read().decode("utf-8", errors="replace")
        except (urllib.error.URLError, OSError) as e:
            reason = e.reason if isinstance(e, urllib.error.URLError) else e
            raise ConnectionError(f"cannot reach vLLM metrics at {self.url}: {reason}") from e
        return parse_metrics_text(text)

    def _server_version(self, base: str) -> str | None:
        try:
            with urllib.request.urlopen(base + "/version", timeout=self._timeout_s) as r:
                return json.loads(r.read().decode()).get("version")
        except (OSError, ValueError):
            return None

    def facts(self) -> dict[str, Any]:
        info = self.last.info
        return {
            "vllm_version": self._version,
            "block_size": info.get("block_size"),
            "num_gpu_blocks": info.get("num_gpu_blocks"),
            "enable_prefix_caching": info.get("enable_prefix_caching"),
            "model_name": info.get("model_name"),
            "source_url": self.url,
        }

    def offload_tier(self) -> OffloadTier:
        return tier_from_metrics(self.last.info, set(self.last.values))
