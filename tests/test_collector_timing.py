"""Engine-clock step times on a real multiprocess engine (issue 11.3).

As on the H200, the engine core runs in its own process and starts stepping while the
frontend is still adding requests; the frontend reads the steps' outputs only once it
calls ``step()``. So a step's *receive* time says when the frontend got to it, and its
*engine* time (``EngineCoreOutputs.timestamp``) says when the engine ran it. The engine
here is an ``LLMEngine`` built through vLLM's documented route for custom loggers
(``stat_loggers=[step_logger_factory()]``), driven as ``LLM.generate`` drives it: add
every request, then step until done.

One engine serves the module (``max_num_batched_tokens=256``, so long prompts are
prefilled in chunks and some steps produce no output).
"""

from __future__ import annotations

import gc
import time

import numpy as np
import pytest
from conftest import TEST_KV_BYTES

from ggr_kv.collector import VLLMMetricsCollector, step_logger_factory

pytestmark = [pytest.mark.vllm, pytest.mark.slow]
N_ROWS = 600
CHUNK = 256


@pytest.fixture(scope="module")
def engine(tiny_dir):
    pytest.importorskip("vllm")
    from vllm.engine.arg_utils import EngineArgs
    from vllm.v1.engine.llm_engine import LLMEngine

    from ggr_kv.engine.memory import vllm_sees_bytes

    args = EngineArgs(
        model=str(tiny_dir),
        load_format="dummy",
        enforce_eager=True,
        max_model_len=4096,
        seed=0,
        max_num_batched_tokens=CHUNK,
        max_num_seqs=32,
        kv_cache_memory_bytes=TEST_KV_BYTES,
    )
    with vllm_sees_bytes():
        eng = LLMEngine.from_engine_args(
            args, stat_loggers=[step_logger_factory()], enable_multiprocessing=True
        )
    yield eng
    eng.engine_core.shutdown()
    del eng
    gc.collect()


def _params(n: int = 4):
    from vllm import SamplingParams

    return SamplingParams(max_tokens=n, ignore_eos=True, temperature=0.0)


def _run(engine, prompts, tag: str) -> list:
    """Add every prompt, then step until all finish (what ``LLM.generate`` does)."""
    for i, p in enumerate(prompts):
        engine.add_request(f"{tag}-{i}", p, _params())
    done = []
    while engine.has_unfinished_requests():
        done += [o for o in engine.step() if o.finished]
    return sorted(done, key=lambda o: int(o.request_id.rsplit("-", 1)[1]))


def test_steps_carry_the_engine_time_not_the_receive_time(engine):
    assert engine.reset_prefix_cache()
    rows = [f"row {i}: title; genre; " + "a plot summary field " * 12 for i in range(N_ROWS)]
    with VLLMMetricsCollector(engine, sample_resources=False) as col:
        for i, p in enumerate(rows):
            engine.add_request(f"t-{i}", p, _params())
            if i == 50:  # a frontend busy elsewhere (on the H200: tokenizing 28k rows); on
                time.sleep(0.5)  # 2 loaded cores adding 600 rows alone can be too quick
        t_added = time.monotonic() - col.t0_monotonic  # all requests are in from here on
        outputs = []
        while engine.has_unfinished_requests():
            outputs += [o for o in engine.step() if o.finished]
    steps, s = col.steps(), col.summary()
    req = col.requests(outputs)
    assert s["attach_route"].startswith("stat_loggers argument")
    # the frontend received every step after it had added all requests ...
    assert steps["t_recv_s"].min() >= t_added
    # ... but the engine ran the first ones while requests were still being added
    assert steps["t_s"].iloc[0] < t_added and (steps["t_s"] < t_added).sum() >= 2
    assert s["first_step_s"] == steps["t_s"].iloc[0] and s["max_receive_lag_s"] > 0
    assert (np.diff(steps["t_s"]) > 0).all()
    # every request's first token (engine clock) is exactly one recorded step's time
    assert len(req) == N_ROWS and np.isin(req["first_token_s"], steps["t_s"]).all()
    assert s["prompt_tokens"] == req["prompt_tokens"].sum() == s["prefix_cache_queries"]


def test_lookups_of_steps_without_outputs_are_recorded(engine):
    """A prompt sharing a long prefix with an earlier one: its lookup (with hits) happens
    at admission, in a prefill chunk that produces no output yet. vLLM 0.26's offline
    ``LLMEngine.step()`` passes such steps to no stat logger; the output tap records them."""
    rng = np.random.default_rng(0)
    a = rng.integers(1000, 30000, 2000).tolist()
    b = a[:1024] + rng.integers(1000, 30000, 1000).tolist()
    assert engine.reset_prefix_cache()
    with VLLMMetricsCollector(engine, sample_resources=False) as col:
        first = _run(engine, [{"prompt_token_ids": a}], "a")
        second = _run(engine, [{"prompt_token_ids": b}], "b")
    steps, s = col.steps(), col.summary()
    req = col.requests(first + second)
    assert req["num_cached_tokens"].tolist() == [0, 1024]
    silent = steps[steps["num_outputs"] == 0]
    assert len(silent) == s["steps_without_outputs"] >= 2 * (1024 // CHUNK)
    assert silent["prefix_hits"].sum() == 1024  # b's hits, counted in a step without output
    assert s["prefix_cache_hits"] == req["num_cached_tokens"].sum()
    assert s["prefix_cache_queries"] == req["prompt_tokens"].sum() == len(a) + len(b)
    assert col.counter_check().consistent is True
