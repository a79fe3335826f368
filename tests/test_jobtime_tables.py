"""The tables of results/h200/jobtime/README.md are what `experiments/jobtime_table.py`
makes of the committed calibrations, predictions and run folders (issue 22)."""

from __future__ import annotations

import importlib.util
import json
import re

import pandas as pd
import pytest

from ggr_kv.analysis.jobfeed import job_clocks

from ggr_kv.analysis.readme import read_block
from ggr_kv.core.paths import CHECKOUT_DIR

SCRIPT = CHECKOUT_DIR / "experiments" / "jobtime_table.py"
FOLDER = CHECKOUT_DIR / "results" / "h200" / "jobtime"


@pytest.fixture(scope="module")
def script():
    """`experiments/jobtime_table.py`, loaded once."""
    spec = importlib.util.spec_from_file_location("jobtime_table", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def tables(script):
    return script.render(FOLDER)


def test_jobtime_tables_are_generated_from_the_run_folders(tables):
    assert len(tables) == 8
    for name, body in tables.items():
        assert read_block(FOLDER / "README.md", name) == body + "\n", name


@pytest.mark.parametrize("folder", sorted(
    str(p.parent.relative_to(CHECKOUT_DIR))
    for p in (CHECKOUT_DIR / "results").glob("*/jobtime*/README.md")
    if p.parent != FOLDER))  # FOLDER's tables: the test above
def test_every_jobtime_readme_holds_the_tables_of_its_own_runs(folder, script):
    path = CHECKOUT_DIR / folder
    for name, body in script.render(path).items():
        assert read_block(path / "README.md", name) == body + "\n", (folder, name)


def test_every_campaign_run_was_predicted_before_it_ran(tables):
    # 7 tables x 4 orderings, two engine starts: 56 runs, each with a pre-run prediction
    assert re.search(r"pre-run \d+ of 56 ", tables["jobtime-accuracy"])
    assert tables["jobtime-accuracy"].count("(n=2)") == 28
    assert re.search(r"Two-clock model: calibration only \d+ of 56 .*leave table out \d+ of 28",
                     tables["jobtime-accuracy"])


def test_job_clocks_read_the_feed_from_the_first_output_received():
    steps = pd.DataFrame({
        "t_s": [0.05, 0.10, 0.20, 0.90, 1.00], "t_recv_s": [0.80, 0.80, 0.81, 0.92, 1.01],
        "num_outputs": [0, 3, 5, 8, 8], "prompt_tokens": [0, 300, 500, 0, 0],
        "generation_tokens": [0, 3, 5, 8, 8], "prefix_queries": [300, 500, 0, 0, 0],
        "num_waiting": [0, 2, 0, 0, 0]})
    c = job_clocks(steps, 1.05)
    assert (c.feed_s, c.engine_end_s, c.job_s) == (0.80, 1.00, 1.05)
    assert c.steps == 5 and c.steps_during_feed == 3 and c.max_waiting == 2
    assert c.bound == "feed"  # the engine ended 0.2 s after the last prompt was in
    assert c.host_s == pytest.approx(0.85)  # and outputs went on 0.05 s after it
    late = job_clocks(steps.assign(t_s=steps["t_s"] * 5), 5.1)
    assert late.bound == "engine"
    with pytest.raises(ValueError, match="lacks"):
        job_clocks(steps.drop(columns="t_recv_s"), 1.0)


@pytest.mark.parametrize("call", ["j1", "j2"])
def test_highly_cached_job_waits_for_its_prompts_uncached_for_the_engine(call):
    def clocks(run):
        d = FOLDER / f"{call}-{run}"
        job_s = json.loads((d / "run.json").read_text())["timings"]["job_s"]
        return job_clocks(pd.read_parquet(d / "steps.parquet"), job_s)

    cached, uncached = clocks("movies-3000-sorted"), clocks("movies-3000-original")
    # 87% hits: no request ever waited, the engine stepped as prompts came in
    assert cached.max_waiting == 0 and cached.bound == "feed"
    assert cached.steps_during_feed > 0.8 * cached.steps
    # 31% hits: thousands waited, and the engine ran for seconds after the last prompt
    assert uncached.max_waiting > 1000 and uncached.bound == "engine"
    assert uncached.engine_end_s > 3 * uncached.feed_s


@pytest.fixture(scope="module")
def driver():
    """experiments/jobtime_gpu.py, imported without keeping the env defaults it sets."""
    import os

    saved = dict(os.environ)
    spec = importlib.util.spec_from_file_location(
        "jobtime_gpu", CHECKOUT_DIR / "experiments" / "jobtime_gpu.py")
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return mod


def test_campaign_order_shuffles_every_repeat_and_runs_each_job_once_per_repeat(driver):
    keys = [("movies@3000", "filter", m) for m in ("original", "sorted", "ggr", "blocks")] + \
        [("beer@3000", "filter", m) for m in ("original", "sorted", "ggr", "blocks")]
    order = driver.campaign_order(keys, 3, seed=7)
    assert [k for k, _ in order] == [1] * 8 + [2] * 8 + [3] * 8  # repeat k before k+1
    for k in (1, 2, 3):
        assert sorted(key for r, key in order if r == k) == sorted(keys)
    perms = [[key for r, key in order if r == k] for k in (1, 2, 3)]
    assert len({tuple(p) for p in perms}) == 3  # a new order each repeat
    assert driver.campaign_order(keys, 3, seed=7) == order  # reproducible from the seed


def test_repeats_are_planned_from_the_predicted_job_times(driver):
    # four jobs predicted 10 s together, 1 s per run beyond its job: 14 s a repeat
    assert driver.plan_repeats([4, 3, 2, 1], 60, 1.0, want=3) == 3
    assert driver.plan_repeats([4, 3, 2, 1], 30, 1.0, want=3) == 2
    assert driver.plan_repeats([4, 3, 2, 1], 10, 1.0, want=3) == 0
    state = driver.host_state()
    assert state["t"] > 0 and ("steal" not in state or state["steal"] >= 0)
