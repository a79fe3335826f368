"""Job time from the simulator's schedule: the work it prices, the speedups, the fit, and
how the model tracks the H200 jobs recorded in ``results/h200``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ggr_kv.core.blocks import to_csr
from ggr_kv.core.jsonutil import dumps
from ggr_kv.simulate import SchedulerConfig, simulate, simulate_totals
from ggr_kv.simulate.jobtime import (
    Throughputs,
    fit_throughputs,
    ideal_speedup,
    predict_job_time,
    predict_speedup,
)

ROOT = Path(__file__).resolve().parents[1]
H200 = ROOT / "results" / "h200" / "orderings-800rows"  # the 800-row runs


def grouped_prompts(n: int, shared: int, own: int, seed: int = 0, groups: int = 4,
                    sort: bool = False):
    """``n`` prompts (CSR): ``shared`` tokens common to a random group, then ``own``
    random ones; ``sort`` runs them group by group."""
    rng = np.random.default_rng(seed)
    heads = rng.integers(0, 1000, (groups, shared))
    group = rng.integers(0, groups, n)
    if sort:
        group = np.sort(group)
    return to_csr([np.concatenate([heads[g], rng.integers(0, 1000, own)]) for g in group])


# -- the work the model prices ----------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(1, 30),
    shared=st.integers(0, 40),
    own=st.integers(1, 30),
    out=st.integers(1, 6),
    blocks=st.integers(0, 30),
    seed=st.integers(0, 10),
)
def test_work_is_uncached_prompt_tokens_plus_recomputes_and_decode_tokens(
    n, shared, own, out, blocks, seed
):
    tokens, offsets = grouped_prompts(n, shared, own, seed)
    need = -(-(np.diff(offsets).max() + out) // 4) + 1
    res = simulate(tokens, offsets, out, block_size=4, num_blocks=need + blocks,
                   max_num_batched_tokens=32, max_num_seqs=8)
    s = res.summary
    uncached = s["prompt_tokens"] - s["prefix_cache_hits"]
    # every step computes its scheduled tokens; the per-step table adds up to the totals
    assert res.work["prefill_tokens"].sum() == s["prefill_tokens"]
    assert res.work["decode_tokens"].sum() == s["decode_tokens"]
    if s["num_preemptions"] == 0:
        assert s["prefill_tokens"] == uncached
        assert s["decode_tokens"] == s["generation_tokens"] - s["num_requests"]
    else:  # a preempted request computes again what was evicted (maybe nothing)
        once = uncached + s["generation_tokens"] - s["num_requests"]
        assert s["prefill_tokens"] + s["decode_tokens"] >= once


def test_job_time_is_the_priced_work_and_step_times_add_up():
    tokens, offsets = grouped_prompts(40, 64, 40)
    res = simulate(tokens, offsets, 5, block_size=16, num_blocks=400, max_num_batched_tokens=256)
    tp = Throughputs(prefill_tok_s=1000.0, decode_tok_s=200.0, step_overhead_s=0.01)
    p = predict_job_time(res, tp)
    s = res.summary
    assert p.prefill_s == pytest.approx(s["prefill_tokens"] / 1000.0)
    assert p.decode_s == pytest.approx(s["decode_tokens"] / 200.0)
    assert p.overhead_s == pytest.approx(s["num_steps"] * 0.01)
    assert p.job_s == pytest.approx(p.prefill_s + p.decode_s + p.overhead_s)
    assert p.step_s is not None and p.step_s.sum() == pytest.approx(p.job_s)
    assert p.bound == "prefill"
    json.loads(dumps(p.to_dict()))


def test_totals_only_replay_prices_the_same():
    tokens, offsets = grouped_prompts(30, 48, 20)
    from ggr_kv.core.blocks import block_hashes

    cfg = SchedulerConfig(block_size=16, num_blocks=60, max_num_batched_tokens=128)
    tp = Throughputs(5000.0, 300.0, 0.002)
    full = predict_job_time(simulate(tokens, offsets, 3, **cfg.to_dict()), tp)
    totals = predict_job_time(simulate_totals(block_hashes(tokens, offsets, 16), 3, cfg), tp)
    assert totals.job_s == pytest.approx(full.job_s)
    assert totals.step_s is None


def test_prefill_bound_speedup_equals_the_ideal_from_hit_rates():
    # one output token each, decode and steps free: time is uncached prompt tokens only
    kw = {"block_size": 16, "num_blocks": 1000, "max_num_batched_tokens": 512}
    base = simulate(*grouped_prompts(60, 96, 24, groups=3), 1, enable_prefix_caching=False,
                    **kw)
    other = simulate(*grouped_prompts(60, 96, 24, groups=3, sort=True), 1, **kw)
    tp = Throughputs(prefill_tok_s=2000.0, decode_tok_s=math.inf)
    sp = predict_speedup(base, other, tp)
    assert sp.ideal == pytest.approx(1 / (1 - other.summary["hit_rate"]))
    assert sp.predicted == pytest.approx(sp.ideal)
    assert sp.ideal > 2
    # with decode and step costs, which caching does not remove, the speedup falls short
    slow = predict_speedup(base, other, Throughputs(2000.0, 50.0, 0.05))
    assert 1 < slow.predicted < slow.ideal


def test_ideal_speedup_of_hit_rates():
    assert ideal_speedup(0.4, 0.7) == pytest.approx(0.6 / 0.3)
    assert ideal_speedup(float("nan"), 0.5) == pytest.approx(2.0)  # cache off counts as 0
    assert ideal_speedup(0.5, 1.0) == math.inf


# -- fitting throughputs ----------------------------------------------------------------
def _jobs():
    """Replays of a prefill-only job, decode jobs at two batch sizes and a mixed job."""
    kw = {"block_size": 16, "num_blocks": 2000, "max_num_batched_tokens": 512, "max_num_seqs": 32}
    return [
        simulate(*grouped_prompts(40, 0, 300, seed=1), 1, **kw),
        simulate(*grouped_prompts(32, 0, 10, seed=2), 40, **kw),
        simulate(*grouped_prompts(4, 0, 10, seed=3), 40, **kw),
        simulate(*grouped_prompts(50, 128, 60, seed=4), 6, **kw),
    ]


def test_fit_recovers_the_throughputs_that_made_the_times():
    true = Throughputs(prefill_tok_s=40_000.0, decode_tok_s=15_000.0, step_overhead_s=0.012)
    jobs = _jobs()
    fitted = fit_throughputs([(j, predict_job_time(j, true).job_s) for j in jobs])
    assert fitted.prefill_tok_s == pytest.approx(true.prefill_tok_s, rel=1e-6)
    assert fitted.decode_tok_s == pytest.approx(true.decode_tok_s, rel=1e-6)
    assert fitted.step_overhead_s == pytest.approx(true.step_overhead_s, rel=1e-6)
    assert fitted.meta["fit"]["max_abs_relative_residual"] < 1e-9


def test_fit_without_overhead_and_json_round_trip():
    true = Throughputs(prefill_tok_s=10_000.0, decode_tok_s=math.inf)
    jobs = _jobs()
    fitted = fit_throughputs([(j, predict_job_time(j, true).job_s) for j in jobs],
                             step_overhead=False, meta={"engine": "test"})
    assert fitted.prefill_tok_s == pytest.approx(10_000.0)
    assert fitted.decode_tok_s == math.inf  # decode cost nothing: the fit says so
    back = Throughputs.from_dict(json.loads(dumps(fitted.to_dict())))
    assert back == fitted and back.meta["engine"] == "test"


@pytest.mark.parametrize(
    ("samples", "match"),
    [
        ([], "at least one"),
        ("no_decode", "no sample has decode work"),
        ("bad_seconds", "sample 0: measured seconds must be > 0"),
        ("too_few", "cannot fit 3 terms"),
    ],
)
def test_fit_refuses_samples_that_cannot_identify_the_rates(samples, match):
    jobs = _jobs()
    if samples == "no_decode":
        samples = [(jobs[0], 1.0), (jobs[0], 1.1), (jobs[0], 0.9)]
    elif samples == "bad_seconds":
        samples = [(jobs[0], 0.0), (jobs[1], 1.0), (jobs[2], 1.0)]
    elif samples == "too_few":
        samples = [(jobs[0], 1.0), (jobs[1], 1.0)]
    with pytest.raises(ValueError, match=match):
        fit_throughputs(samples)


def test_throughputs_refuse_impossible_rates():
    with pytest.raises(ValueError, match="prefill_tok_s must be > 0"):
        Throughputs(0.0, 1.0)
    with pytest.raises(ValueError, match="prefill is never free"):
        Throughputs(math.inf, 1.0)
    with pytest.raises(ValueError, match="step_overhead_s must be >= 0"):
        Throughputs(1.0, 1.0, -0.1)


# -- against the 800-row H200 jobs ----------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(not H200.is_dir(), reason=f"{H200} is not in this checkout")
def test_h200_cached_jobs_predicted_from_uncached_ones():
    """Fit on the no-cache runs (every prompt token computed), predict the cached ones:
    the workflow of measuring throughputs once, then predicting orderings."""
    from ggr_kv.run.runs import load_run, simulate_run

    datasets = ("beer", "movies", "posts", "products")
    sims, measured = {}, {}
    for ds in datasets:
        for o in ("no_cache", "original", "ggr"):
            run = load_run(H200 / f"{ds}-{o}")
            sims[ds, o] = simulate_run(run, tokenizer="llama3")
            measured[ds, o] = run.meta["timings"]["job_s"]
    tp = fit_throughputs([(sims[ds, "no_cache"], measured[ds, "no_cache"]) for ds in datasets])
    for ds in datasets:
        for o in ("original", "ggr"):
            pred = predict_job_time(sims[ds, o], tp).job_s
            assert pred == pytest.approx(measured[ds, o], rel=0.15), (ds, o)
        sp = predict_speedup(sims[ds, "original"], sims[ds, "ggr"], tp)
        meas = measured[ds, "original"] / measured[ds, "ggr"]
        assert sp.predicted == pytest.approx(meas, rel=0.15), ds
