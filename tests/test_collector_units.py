"""The collector's parts on real vLLM stats objects, without an engine.

- Strict field reads: a renamed or removed field of vLLM's ``SchedulerStats`` /
  ``IterationStats`` is an error naming the field and the vLLM version, never zeros.
- The output tap: vLLM 0.26/0.27's offline ``LLMEngine.step()`` calls the stat loggers
  only for steps that produced request outputs (fixed in 0.28). That release does not
  run here, so `_Frontend026` replays its ``step()`` (get the engine core's outputs,
  build ``IterationStats`` only when there are outputs, record only then) over real
  ``EngineCoreOutputs`` objects; the tap must still count every step's lookups.
- Windows: rows are kept only while a window is open; totals are kept always.
- The KV-offload payload of vLLM's offloading connector, built by its own
  ``OffloadingConnectorStats``.
- `counter_check`.
"""

from __future__ import annotations

import dataclasses
import math
import types

import numpy as np
import pandas as pd
import pytest

#: reads vLLM's own classes: importing vLLM costs ~12 s of CPU, too much for `make test-fast`
pytestmark = pytest.mark.slow
pytest.importorskip("vllm")

from vllm import __version__ as VLLM_VERSION
from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs
from vllm.v1.metrics.stats import IterationStats, PrefixCacheStats, SchedulerStats

from ggr_kv.collector import VLLMFieldError, counter_check
from ggr_kv.collector.fields import (
    check_installed_vllm,
    read_iteration_stats,
    read_scheduler_stats,
)
from ggr_kv.collector.frames import EXTRA_STEP_COLUMNS, steps_frame, window_totals
from ggr_kv.collector.offload import read_connector_payload
from ggr_kv.collector.stat_logger import install_output_tap, step_logger_cls
from ggr_kv.core.schema import STEP_COLUMNS


def _host():
    """vLLM's ``CacheHitSource`` (added after 0.26: tests that need it skip there)."""
    return pytest.importorskip("vllm.v1.metrics.cache_hit_source").CacheHitSource


def _renamed(cls: type, old: str, new: str) -> type:
    """A dataclass like vLLM's ``cls`` with field ``old`` renamed to ``new`` (what an
    upstream rename looks like to a reader)."""
    fields = []
    for f in dataclasses.fields(cls):
        kw = {}
        if f.default is not dataclasses.MISSING:
            kw["default"] = f.default
        if f.default_factory is not dataclasses.MISSING:
            kw["default_factory"] = f.default_factory
        fields.append((new if f.name == old else f.name, f.type, dataclasses.field(**kw)))
    return dataclasses.make_dataclass(cls.__name__, fields)


def _sched(q: int = 0, h: int = 0, usage: float = 0.25, **kw) -> SchedulerStats:
    pcs = PrefixCacheStats()
    if q:
        pcs.record(q, h, preempted=False)
    return SchedulerStats(num_running_reqs=2, kv_cache_usage=usage, prefix_cache_stats=pcs, **kw)


# -- strict field reads ------------------------------------------------------------------
def test_installed_vllm_has_every_field_read():
    check_installed_vllm()
    vals = read_scheduler_stats(_sched(q=300, h=128, usage=0.5))
    assert vals[:5] == (0.5, 2, 0, 300, 128)
    assert all(math.isnan(v) for v in vals[7:])  # no connector: NaN, not 0


def test_renamed_scheduler_field_is_an_error_naming_field_and_version():
    real = _sched(q=300, h=128, usage=0.5)
    Renamed = _renamed(SchedulerStats, "kv_cache_usage", "kv_usage")
    moved = Renamed(**{(f.name if f.name != "kv_cache_usage" else "kv_usage"): getattr(real, f.name)
                       for f in dataclasses.fields(SchedulerStats)})  # fmt: skip
    with pytest.raises(
        VLLMFieldError, match=rf"vLLM {VLLM_VERSION}: SchedulerStats has no field 'kv_cache_usage'"
    ):
        read_scheduler_stats(moved)


def test_renamed_prefix_cache_field_names_the_inner_class():
    s = _sched(q=300, h=128)
    s.prefix_cache_stats = _renamed(PrefixCacheStats, "hits", "num_hits")()
    with pytest.raises(VLLMFieldError, match="PrefixCacheStats has no field 'hits'"):
        read_scheduler_stats(s)


def test_removed_iteration_field_is_an_error():
    it = IterationStats()
    it.num_generation_tokens = 3
    assert read_iteration_stats(it) == (0, 0, 3)
    del it.num_preempted_reqs
    with pytest.raises(
        VLLMFieldError,
        match=rf"vLLM {VLLM_VERSION}: IterationStats has no field 'num_preempted_reqs'",
    ):
        read_iteration_stats(it)


def test_optional_host_hits_absent_is_nan_present_is_counted():
    src = _host()
    conn = PrefixCacheStats()
    conn.record(512, 384, preempted=False, hits_by_source={src.HOST: 256, src.DISK: 128})
    vals = read_scheduler_stats(_sched(q=1024, h=512, connector_prefix_cache_stats=conn))
    assert vals[7:] == (512, 384, 256)
    # vLLM 0.26's PrefixCacheStats has no hits_by_source: host hits unknown, not 0
    Old = _renamed(PrefixCacheStats, "hits_by_source", "unused")
    old = Old(requests=1, queries=512, hits=384)
    del old.unused
    vals = read_scheduler_stats(_sched(q=1024, h=512, connector_prefix_cache_stats=old))
    assert vals[7:9] == (512, 384) and math.isnan(vals[9])


# -- the output tap vs vLLM 0.26's offline frontend ------------------------------------
class _ScriptedClient:
    """Hands out prepared ``EngineCoreOutputs``, as an engine-core client's get_output."""

    def __init__(self, outputs: list[EngineCoreOutputs]):
        self._outs = list(outputs)

    def get_output(self) -> EngineCoreOutputs:
        return self._outs.pop(0)


class _Frontend026:
    """vLLM 0.26's ``LLMEngine.step()`` as far as stats go (vllm-metrics notes §9)."""

    def __init__(self, client, logger):
        self.engine_core, self.logger = client, logger

    def step(self) -> None:
        outputs = self.engine_core.get_output()
        if outputs.outputs:  # 0.26: IterationStats and record() only with outputs
            it = IterationStats()
            it.num_generation_tokens = sum(len(o.new_token_ids) for o in outputs.outputs)
            self.logger.record(outputs.scheduler_stats, it, None, outputs.engine_index)


def _script() -> list[EngineCoreOutputs]:
    out = lambda rid: EngineCoreOutput(request_id=rid, new_token_ids=[7])
    return [
        # a long prompt's first prefill chunk: lookup at admission, no output yet
        EngineCoreOutputs(outputs=[], scheduler_stats=_sched(1024, 512), timestamp=10.0),
        EngineCoreOutputs(outputs=[], scheduler_stats=_sched(), timestamp=10.2),
        EngineCoreOutputs(outputs=[out("a")], scheduler_stats=_sched(), timestamp=10.4),
        EngineCoreOutputs(outputs=[out("a"), out("b")], scheduler_stats=_sched(256, 128),
                          timestamp=10.5),
    ]  # fmt: skip


def test_tap_counts_the_steps_vllm_0_26_never_records():
    cls = step_logger_cls()
    tapped, alone = cls(None, [0]), cls(None, [0])  # with the tap / stat logger only
    client = _ScriptedClient(_script())
    install_output_tap(
        types.SimpleNamespace(engine_core=client), tapped.step_log, asynchronous=False
    )
    install_output_tap(
        types.SimpleNamespace(engine_core=client), tapped.step_log, asynchronous=False
    )

    class Both:  # one frontend feeding both loggers, as vLLM's logger manager would
        def record(self, *a):
            tapped.record(*a)
            alone.record(*a)

    front = _Frontend026(client, Both())
    win, win_alone = tapped.step_log.cursor(), alone.step_log.cursor()
    tapped.step_log.pin(1, win)
    alone.step_log.pin(1, win_alone)
    for _ in range(4):
        front.step()
    rows = tapped.step_log.rows_since(win)
    tot = window_totals(rows, t0=10.0)
    assert (tot["prefix_cache_queries"], tot["prefix_cache_hits"]) == (1280, 640)
    assert tot["num_rows"] == 4 and tot["steps_without_outputs"] == 2
    assert tot["generation_tokens"] == 3  # merged from the two record() calls
    assert (
        tapped.step_log.n_tapped == 4
        and tapped.step_log.n_merged == 2
        and tapped.step_log.n_unmatched == 0
    )
    steps = steps_frame(rows, t0=10.0)
    np.testing.assert_allclose(steps["t_s"], [0.0, 0.2, 0.4, 0.5])  # the engine's times
    # the stat logger alone misses the first chunk's lookup, as vLLM 0.26's counters do
    alone_rows = alone.step_log.rows_since(win_alone)
    assert window_totals(alone_rows, 10.0)["prefix_cache_queries"] == 256


def test_rows_kept_only_while_a_window_is_open():
    cls = step_logger_cls()
    logger = cls(None, [0])
    log = logger.step_log
    start = log.cursor()
    logger.record(_sched(100, 0), None)
    win = log.cursor()
    log.pin(7, win)
    logger.record(_sched(300, 128), None)
    logger.record(_sched(50, 0), None)
    assert [r[8] for r in log.rows_since(win)] == [300, 50]
    assert log.totals_since(start).values["prefix_queries"] == 450  # totals need no rows
    assert log.totals_since(win).values["prefix_hits"] == 128
    assert log.totals_since(win).values["connector_queries"] is None  # never reported
    log.unpin(7)
    logger.record(_sched(10, 0), None)
    assert log.totals_since(start).values["prefix_queries"] == 460
    with pytest.raises(RuntimeError, match="were not kept"):
        log.rows_since(win)
    assert log.n_kept == 0  # nothing is kept without an open window


# -- the KV-offload (connector) tier --------------------------------------------------------
def _payload(load: int, store: int, usage: float) -> dict:
    """A step's payload as vLLM's scheduler sends it (0.32: ``to_dict()``; 0.26: ``.data``,
    the same structure)."""
    m = "vllm.distributed.kv_transfer.kv_connector.v1.offloading.metrics"
    p = pytest.importorskip(m).OffloadingConnectorStats()
    usage_name = pytest.importorskip("vllm.v1.kv_offload.cpu.common").CPUOffloadingMetrics
    p.set_gauge(usage_name.CPU_CACHE_USAGE_PERC, usage)
    p.increase_counter("vllm:kv_offload_load_bytes", load)
    p.increase_counter("vllm:kv_offload_store_bytes", store)
    p.observe_histogram("vllm:kv_offload_load_size", load)
    return p.to_dict() if hasattr(p, "to_dict") else p.data


def test_offloading_connector_payload():
    assert read_connector_payload(_payload(4096, 8192, 0.25)) == (4096.0, 8192.0, 0.25)
    nested = {"OffloadingConnector": _payload(4096, 0, 0.5), "NixlConnector": {"num_xfers": 3}}
    assert read_connector_payload(nested) == (4096.0, 0.0, 0.5)
    for unknown in (None, {}, {"num_xfers": 3}):
        assert all(math.isnan(v) for v in read_connector_payload(unknown))


def test_offload_tier_per_step_beside_the_gpu_tier():
    src = _host()
    logger = step_logger_cls()(None, [0])
    log = logger.step_log
    win = log.cursor()
    log.pin(1, win)
    for q, h, cq, ch, host, load, usage in (
        (2048, 512, 1536, 1024, 1024, 1 << 20, 0.1),
        (1024, 0, 1024, 768, 512, 1 << 19, 0.3),
    ):
        conn = PrefixCacheStats()
        conn.record(cq, ch, False, {src.HOST: host, src.DISK: ch - host})
        logger.record(
            _sched(q, h, connector_prefix_cache_stats=conn,
                   kv_connector_stats=_payload(load, 2 * load, usage)),
            None,
        )  # fmt: skip
    rows = log.rows_since(win)
    df = steps_frame(rows, win.t)
    assert list(df.columns) == [*STEP_COLUMNS, *EXTRA_STEP_COLUMNS]
    assert df["connector_queries"].tolist() == [1536, 1024]
    assert df["connector_hits"].tolist() == [1024, 768]
    assert df["host_hits"].tolist() == [1024, 512]
    assert df["cpu_cache_usage"].tolist() == [0.1, 0.3]
    tot = window_totals(rows, win.t)
    assert tot["connector_hits"] == 1792 and tot["host_hits"] == 1536
    assert tot["offload_load_bytes"] == 3 << 19 and tot["offload_store_bytes"] == 3 << 20
    assert tot["max_cpu_cache_usage"] == 0.3
    snap = log.totals_since(win)
    assert snap.values["connector_queries"] == 2560 and snap.last_cpu_cache_usage == 0.3


# -- counter_check ------------------------------------------------------------------------
def _requests(cached, prompt) -> pd.DataFrame:
    return pd.DataFrame({"num_cached_tokens": cached, "prompt_tokens": prompt})


def test_counter_check_flags_vllm_0_26_retry_double_counting():
    req = _requests([0, 256, 512], [1000, 1000, 1000])
    same = {"prefix_cache_hits": 768, "prefix_cache_queries": 3000, "connector_hits": None}
    ok = counter_check(same, req)
    assert ok.consistent is True and ok.hits_diff == 0 and ok.queries_diff == 0
    assert ok.hit_rate_collector == ok.hit_rate_requests == pytest.approx(768 / 3000)
    # a retried lookup counted twice (vLLM 0.26 under KV pressure): +1000 queries, +256 hits
    twice = {"prefix_cache_hits": 1024, "prefix_cache_queries": 4000}
    bad = counter_check(twice, req)
    assert bad.consistent is False and (bad.hits_diff, bad.queries_diff) == (256, 1000)
    assert counter_check(twice, req, tolerance=0.5).consistent is True
    # offload-tier hits are part of the requests' num_cached_tokens
    split = {"prefix_cache_hits": 512, "connector_hits": 256, "prefix_cache_queries": 3000}
    assert counter_check(split, req).consistent is True
    with pytest.raises(ValueError, match="tolerance must be >= 0"):
        counter_check(same, req, tolerance=-1)


def test_counter_check_says_why_it_cannot_compare():
    req = _requests([np.nan, np.nan], [10, 10])
    c = counter_check({"prefix_cache_hits": 0, "prefix_cache_queries": 20}, req)
    assert c.consistent is None and "enable-prompt-tokens-details" in c.note
    ro = counter_check({"collection_method": "request_only", "prefix_cache_hits": 0,
                        "prefix_cache_queries": 20}, _requests([0, 0], [10, 10]))  # fmt: skip
    assert ro.consistent is None and ro.note.startswith("request_only")
    assert set(ro.as_dict()) >= {"consistent", "tolerance", "hits_diff", "note"}
