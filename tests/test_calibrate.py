"""Step-cost calibration on the real CPU engine, and its file read back by ``ggr-kv predict``.

One in-process tiny-llama engine: `calibrate` runs its jobs (scaled down for the CPU),
the fitted costs are saved, and they predict a table job measured on the same engine.
This 2-core machine is shared (wall times swing 1.6x between runs of one job), so the
job-time tolerance is wide; what must hold exactly is what the calibration jobs are:
the cached ones compute few of their prompt tokens, the others all of them.
"""

from __future__ import annotations

import statistics
import time

import pytest

pytest.importorskip("vllm")

from ggr_kv.engine.calibrate import calibrate
from ggr_kv.engine.config import EngineConfig
from ggr_kv.engine.throughput import scheduler_config
from ggr_kv.simulate.stepcost import load_calibration, save_calibration

pytestmark = [pytest.mark.vllm, pytest.mark.timing]
ROWS, MAX_TOKENS, TOLERANCE = 48, 8, 0.5


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, tiny_dir, engine_pool):
    from ggr_kv.core.plan import ReorderPlan
    from ggr_kv.core.prompts import DEFAULT_INSTRUCTION, build_prompts
    from ggr_kv.core.table import Table
    from ggr_kv.datasets import load_dataset
    from ggr_kv.simulate import simulate_plan
    from vllm import SamplingParams

    llm = engine_pool.get(EngineConfig(model="tiny-llama"))  # test_throughput's engine too
    costs = calibrate(llm, repeats=1, scale=1 / 16)
    ds = load_dataset("movies", n=ROWS, sample="head")
    table = Table.from_frame(ds.frame)
    query = ds.query("filter").stages[0].text
    plan = ReorderPlan.identity(table)
    sim = simulate_plan(table, plan, query, None, str(tiny_dir), MAX_TOKENS,
                        **scheduler_config(llm).to_dict())
    prompts = build_prompts(table, plan, query, DEFAULT_INSTRUCTION)
    params = SamplingParams(max_tokens=MAX_TOKENS, ignore_eos=True, temperature=0.0)
    wall = []
    for _ in range(3):
        llm.reset_prefix_cache()
        t = time.perf_counter()
        llm.generate(prompts, params, use_tqdm=False)
        wall.append(time.perf_counter() - t)
    path = save_calibration(costs, tmp_path_factory.mktemp("cal") / "cal.json")
    return {"costs": costs, "path": path, "sim": sim, "wall": statistics.median(wall)}


def test_calibration_jobs_move_the_features_they_are_built_for(calibrated):
    jobs = calibrated["costs"].meta["jobs"]
    cached = [j for name, j in jobs.items() if name.startswith("cached_")]
    assert len(cached) == 4  # three context lengths and many short prompts (cached_many)
    for j in cached:  # one shared context: most prompt tokens come from the cache
        f = j["features"]
        assert f["prefill_tokens"] < 0.6 * f["prompt_tokens"]
    longest = max(cached, key=lambda j: j["shared"])
    shortest = min(cached, key=lambda j: j["shared"])
    per_new = [j["features"]["prefill_attn"] / j["features"]["prefill_tokens"]
               for j in (shortest, longest)]
    assert per_new[1] > 1.5 * per_new[0]  # new tokens behind longer contexts attend more
    f = jobs["prefill"]["features"]  # unique prompts: nothing hits
    assert f["prefill_tokens"] == f["prompt_tokens"]
    dec = [j for name, j in jobs.items() if name.startswith("decode_")]
    assert all(j["features"]["decode_tokens"] >= j["prompts"] * (j["out"] - 1) for j in dec)
    assert all(t > 0 for j in jobs.values() for t in j["seconds"])
    # every job's feed (its last prompt submitted) was timed, within the job's own time
    for j in jobs.values():
        assert len(j["feed_s"]) == len(j["seconds"])
        assert all(0 < f <= t for f, t in zip(j["feed_s"], j["seconds"]))
    # long-context decode: few prompts, more output tokens than the short decode jobs
    assert jobs["decode_long"]["out"] > max(j["out"] for n, j in jobs.items()
                                            if n.startswith("decode_") and n != "decode_long")


def test_calibration_fits_the_two_clock_model_beside_the_step_costs(calibrated):
    from ggr_kv.simulate.feedtime import FeedCosts

    two = calibrated["costs"].meta["two_clock"]
    if "error" in two:  # a split leaving too few engine-bound jobs is said, not raised
        assert "engine-bound" in two["error"] or "prefill" in two["error"]
        return
    costs = FeedCosts.from_dict(two)
    assert costs.feed["tokenize"] > 0 or costs.feed["submit"] > 0
    assert costs.predict(calibrated["sim"]).job_s > 0


def test_calibration_predicts_a_table_job_and_survives_its_file(calibrated):
    costs = load_calibration(calibrated["path"])
    assert costs == calibrated["costs"]
    pred = costs.predict(calibrated["sim"]).job_s
    wall = calibrated["wall"]
    print(f"predicted {pred:.3f} s, measured {wall:.3f} s, ratio {pred / wall:.2f}")
    assert abs(pred / wall - 1) <= TOLERANCE
    sched = costs.meta["scheduler"]
    assert sched["block_size"] == 128  # the CPU backend's block, as the engine ran
