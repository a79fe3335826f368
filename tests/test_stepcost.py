"""The per-step cost model: its features, its fit, its calibration files, ``ggr-kv predict``."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from ggr_kv.core.blocks import to_csr
from ggr_kv.simulate import simulate
from ggr_kv.simulate.stepcost import (
    DEFAULT_FIT,
    FEATURES,
    LEGACY_FIT,
    StepCosts,
    features_of,
    fit_step_costs,
    load_calibration,
    save_calibration,
)

TRUE = {"num_steps": 4e-3, "prefill_tokens": 2e-5, "prefill_attn": 3e-9, "decode_tokens": 5e-5,
        "decode_ctx": 2e-8, "num_requests": 1e-4, "prompt_tokens": 1e-6}


def _job(n: int, shared: int, unique: int, out: int, seed: int, **engine):
    rng = np.random.default_rng(seed)
    head = list(rng.integers(1000, 2000, shared))
    prompts = [head + list(rng.integers(3000, 90000, unique)) for _ in range(n)]
    tokens, offsets = to_csr(prompts)
    cfg = {"block_size": 16, "num_blocks": 4000, "max_num_seqs": 64,
           "max_num_batched_tokens": 512} | engine
    return simulate(tokens, offsets, out, **cfg)


def test_features_count_attention_behind_cached_context_and_decode_context():
    tokens, offsets = to_csr([[1] * 40, [1] * 40, [2] * 10])
    res = simulate(tokens, offsets, 3, block_size=16, num_blocks=20)
    f = features_of(res)
    # prompt 1: 40 new tokens attend 40*41/2 pairs; prompt 2: 32 cached + 8 new:
    # 8*32 + 8*9/2; prompt 3: 10*11/2
    assert f["prefill_attn"] == 820 + 292 + 55
    # two decode steps of three requests: contexts 41+41+11, then 42+42+12
    assert f["decode_ctx"] == 93 + 96
    assert f["prefill_tokens"] == 40 + 8 + 10 and f["decode_tokens"] == 6
    assert res.work["prefill_attn"].sum() == f["prefill_attn"]
    assert res.work["decode_ctx"].sum() == f["decode_ctx"]


def test_longer_cached_context_costs_more_though_no_more_tokens_are_computed():
    costs = StepCosts(TRUE)
    short, long_ = _job(16, 64, 32, 1, 0), _job(16, 1024, 32, 1, 0)
    assert features_of(short)["prefill_tokens"] == pytest.approx(
        features_of(long_)["prefill_tokens"], rel=0.7)
    assert costs.predict(long_).parts["prefill_attn"] > 5 * costs.predict(short).parts[
        "prefill_attn"]


def test_prediction_is_the_sum_of_its_steps_and_request_costs():
    res = _job(40, 100, 50, 8, 1)
    p = StepCosts(TRUE).predict(res)
    f = features_of(res)
    per_request = TRUE["num_requests"] * f["num_requests"] + TRUE["prompt_tokens"] * f[
        "prompt_tokens"]
    assert p.step_s is not None and len(p.step_s) == f["num_steps"]
    assert p.job_s == pytest.approx(p.step_s.sum() + per_request, rel=1e-12)
    assert p.bound in FEATURES and p.parts[p.bound] == max(p.parts.values())


def test_fit_recovers_the_costs_that_made_the_times():
    shapes = [(32, 0, 300, 1), (128, 0, 40, 1), (64, 200, 16, 1), (32, 600, 16, 1),
              (64, 0, 8, 32), (8, 0, 8, 32), (2, 0, 8, 32), (32, 500, 8, 16), (16, 1000, 16, 1)]
    sims = [_job(*s, seed=i) for i, s in enumerate(shapes)]
    truth = StepCosts(TRUE)
    samples = [(s, truth.predict(s).job_s) for s in sims]
    fit = fit_step_costs(samples, features=LEGACY_FIT, meta={"engine": "synthetic"})
    for k, v in TRUE.items():
        assert fit.get(k) == pytest.approx(v, rel=1e-5), k
    assert fit.meta["fit"]["max_abs_relative_residual"] < 1e-8
    assert fit.meta["engine"] == "synthetic"


#: costs with a per-job cost and a host cost per request of steps run without a CUDA graph
TRUE_EAGER = {"num_steps": 4e-3, "prefill_tokens": 2e-5, "prefill_attn": 3e-9,
              "decode_tokens": 1e-5, "decode_ctx": 2e-8, "eager_requests": 4e-5,
              "prompt_tokens": 5e-7, "jobs": 0.2}


def test_steps_larger_than_the_largest_cuda_graph_pay_per_request():
    # 64 decoding requests: steps of 64 tokens; graphs up to 32 tokens make them eager
    res = _job(64, 0, 8, 6, 0)
    dec = res.work[res.work["prefill_tokens"] == 0]
    assert len(dec) and (dec["num_scheduled"] == 64).all()
    big = res.work["scheduled_tokens"] > 32
    assert features_of(res, graph_tokens=32)["eager_requests"] == res.work.loc[
        big, "num_scheduled"].sum() >= 64 * len(dec)
    assert features_of(res, graph_tokens=4096)["eager_requests"] == 0
    eager = StepCosts(TRUE_EAGER, graph_tokens=32).predict(res)
    graphed = StepCosts(TRUE_EAGER, graph_tokens=4096).predict(res)
    assert eager.job_s - graphed.job_s == pytest.approx(
        TRUE_EAGER["eager_requests"] * features_of(res, graph_tokens=32)["eager_requests"])
    # per step: the same sum, the per-job and per-prompt-token costs on top
    f = features_of(res)
    assert eager.job_s == pytest.approx(eager.step_s.sum() + TRUE_EAGER["jobs"]
                                        + TRUE_EAGER["prompt_tokens"] * f["prompt_tokens"])
    # totals alone cannot say which steps ran without a graph
    with pytest.raises(ValueError, match="per-step work"):
        StepCosts(TRUE_EAGER).predict(res.summary)
    assert StepCosts(TRUE).predict(res.summary).job_s == pytest.approx(
        StepCosts(TRUE).predict(res).job_s)
    back = StepCosts.from_dict(json.loads(json.dumps(StepCosts(TRUE_EAGER, graph_tokens=32)
                                                     .to_dict())))
    assert back.graph_tokens == 32 and back.coef == TRUE_EAGER


def test_default_fit_recovers_per_job_and_eager_costs():
    shapes = [(32, 0, 300, 1), (128, 0, 40, 1), (64, 200, 16, 1), (32, 600, 16, 1),
              (64, 0, 8, 32), (8, 0, 8, 32), (2, 0, 8, 32), (32, 500, 8, 16), (16, 1000, 16, 1),
              (48, 0, 8, 24), (4, 300, 200, 1)]
    sims = [_job(*s, seed=i) for i, s in enumerate(shapes)]
    truth = StepCosts(TRUE_EAGER, graph_tokens=32)
    samples = [(s, truth.predict(s).job_s) for s in sims]
    fit = fit_step_costs(samples, graph_tokens=32)
    assert set(fit.coef) == set(DEFAULT_FIT) and fit.graph_tokens == 32
    assert fit.meta["fit"]["max_abs_relative_residual"] < 1e-6
    for k, v in TRUE_EAGER.items():
        assert fit.get(k) == pytest.approx(v, rel=1e-4), k
    with pytest.raises(ValueError, match="per-step work"):
        fit_step_costs([(s.summary, t) for s, t in samples])


def test_fit_and_costs_refuse_what_cannot_be_priced():
    res = _job(4, 0, 20, 2, 0)
    with pytest.raises(ValueError, match="cannot fit"):
        fit_step_costs([(res, 1.0)])
    with pytest.raises(ValueError, match="must be > 0"):
        fit_step_costs([(res, 0.0)] * 8)
    with pytest.raises(ValueError, match="unknown feature"):
        StepCosts({"gpu_magic": 1.0, "prefill_tokens": 1e-5})
    with pytest.raises(ValueError, match=">= 0"):
        StepCosts({"prefill_tokens": -1e-5})
    with pytest.raises(ValueError, match="never free"):
        StepCosts({"decode_tokens": 1e-5})
    with pytest.raises(ValueError, match="lack"):
        features_of({"num_steps": 3})


def test_calibration_file_round_trip_and_errors(tmp_path):
    costs = StepCosts(TRUE, {"scheduler": {"block_size": 16}})
    path = save_calibration(costs, tmp_path / "cal.json")
    assert load_calibration(path) == costs
    with pytest.raises(FileExistsError):
        save_calibration(costs, path)
    bad = tmp_path / "bad.json"
    bad.write_text('{"prefill_tok_s": 4}')
    with pytest.raises(ValueError, match="bad.json: not a calibration file"):
        load_calibration(bad)
    with pytest.raises(ValueError, match="no such calibration file"):
        load_calibration(tmp_path / "missing.json")


def _cli(*argv):
    return subprocess.run([sys.executable, "-m", "ggr_kv", *argv], capture_output=True,
                          text=True, timeout=600)


@pytest.mark.subprocess
def test_predict_command_prices_every_ordering_and_recommends_settings(tmp_path):
    sched = {"block_size": 16, "num_blocks": 3000, "max_num_seqs": 64,
             "max_num_batched_tokens": 2048}
    cal = save_calibration(StepCosts(TRUE, {"scheduler": sched}), tmp_path / "cal.json")
    r = _cli("predict", "movies", "--rows", "60", "--query-type", "filter", "--calibration",
             str(cal), "--orderings", "original,ggr", "--settings", "512:16", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    pred = {(p["ordering"], p["max_num_batched_tokens"]): p for p in doc["predictions"]}
    assert set(pred) == {("original", 2048), ("original", 512), ("ggr", 2048), ("ggr", 512)}
    # GGR caches more of the same prompts: less prefill work, a shorter predicted job
    assert pred["ggr", 2048]["hit_rate"] > pred["original", 2048]["hit_rate"]
    assert pred["ggr", 2048]["predicted_job_s"] < pred["original", 2048]["predicted_job_s"]
    # another setting is recommended only when predicted more than --margin faster than
    # the engine's own: from 512:16, 2048:64 is predicted ~18% faster for original and
    # ~33% for ggr (the first call's rows: 0.39/0.48 s and 0.14/0.21 s)
    gains = {m: 1 - pred[m, 2048]["predicted_job_s"] / pred[m, 512]["predicted_job_s"]
             for m in ("original", "ggr")}
    assert 0.10 < gains["original"] < 0.25 < gains["ggr"], gains
    own = save_calibration(StepCosts(TRUE, {"scheduler": dict(
        sched, max_num_batched_tokens=512, max_num_seqs=16)}), tmp_path / "own.json")
    for margin, want in (("0.1", {"original": [2048, 64], "ggr": [2048, 64]}),
                         ("0.25", {"original": [512, 16], "ggr": [2048, 64]})):
        pick = _cli("predict", "movies", "--rows", "60", "--query-type", "filter",
                    "--calibration", str(own), "--orderings", "original,ggr", "--settings",
                    "2048:64", "--json", "--margin", margin)
        assert pick.returncode == 0, pick.stderr
        assert json.loads(pick.stdout)["recommended"] == want
    text = _cli("predict", "movies", "--rows", "30", "--query-type", "filter",
                "--calibration", str(cal), "--orderings", "original,sorted")
    assert text.returncode == 0 and "sorted" in text.stdout and "vs original" in text.stdout


@pytest.mark.subprocess
def test_predict_command_bad_calibration_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "cal.json"
    bad.write_text("not json")
    r = _cli("predict", "movies", "--rows", "10", "--calibration", str(bad))
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "cal.json" in r.stderr


# -- the two-clock model (ggr_kv.simulate.feedtime): engine steps and prompt submission --

ENGINE = {"num_steps": 4e-3, "prefill_tokens": 2e-5, "prefill_attn": 3e-9, "decode_tokens": 5e-5,
          "decode_ctx": 2e-8}
FEED = {"submit": 3e-4, "tokenize": 2e-6, "drain": 0.0}


def _two_clock_jobs():
    from ggr_kv.simulate.feedtime import FeedCosts

    truth = FeedCosts(StepCosts(ENGINE), FEED)
    shapes = [(32, 0, 300, 1), (128, 0, 40, 1), (64, 0, 8, 32), (8, 0, 8, 32), (2, 0, 8, 32),
              (32, 0, 120, 8), (16, 0, 200, 4),  # uncached or decode-heavy: engine-bound
              (400, 600, 8, 1), (300, 1200, 16, 1), (500, 300, 8, 1)]  # cached: feed-bound
    sims = [_job(*s, seed=i, num_blocks=20000, max_num_seqs=512) for i, s in enumerate(shapes)]
    return truth, sims


def test_two_clock_job_waits_for_the_slower_clock():
    from ggr_kv.simulate.feedtime import FeedCosts

    truth, sims = _two_clock_jobs()
    cached, uncached = sims[7], sims[0]
    p = truth.predict(cached)
    assert p.bound == "feed" and p.job_s == pytest.approx(p.feed_s)
    assert p.feed_s == pytest.approx(truth.feed_seconds(cached))
    # a faster engine does not shorten a job that waits for its prompts; a faster host does
    fast_engine = FeedCosts(StepCosts({k: v / 2 for k, v in ENGINE.items()}), FEED)
    fast_host = FeedCosts(StepCosts(ENGINE), {k: v / 2 for k, v in FEED.items()})
    assert fast_engine.predict(cached).job_s == pytest.approx(p.job_s)
    assert fast_host.predict(cached).job_s < 0.9 * p.job_s
    q = truth.predict(uncached)
    assert q.bound == "engine" and fast_engine.predict(uncached).job_s < 0.6 * q.job_s
    # the step-cost model adds the host's work to the engine's instead of overlapping them
    added = StepCosts({**ENGINE, "num_requests": FEED["submit"], "prompt_tokens": FEED["tokenize"]})
    assert added.predict(cached).job_s == pytest.approx(p.engine_s + p.feed_s)
    # a finite p: both clocks close together take longer than either, never than both
    soft = FeedCosts(StepCosts(ENGINE), FEED, p=4.0).predict(cached)
    assert max(p.engine_s, p.feed_s) < soft.job_s < p.engine_s + p.feed_s


def test_two_clock_fit_recovers_the_costs_that_made_the_times():
    from ggr_kv.simulate.feedtime import fit_feed_costs

    truth, sims = _two_clock_jobs()
    samples = [(s, truth.predict(s).job_s) for s in sims]
    assert {truth.predict(s).bound for s in sims} == {"engine", "feed"}
    fit = fit_feed_costs(samples, meta={"engine": "synthetic"})
    assert fit.p == float("inf") and fit.meta["fit"]["max_abs_relative_residual"] < 1e-6
    assert fit.meta["fit"]["feed_bound"] == 3 and fit.meta["engine"] == "synthetic"
    for s in sims:
        assert fit.predict(s).job_s == pytest.approx(truth.predict(s).job_s, rel=1e-6)
    # measured submission times fix the feed clock; the jobs then give the output drain
    drained = truth.__class__(truth.engine, {**FEED, "drain": 1e-4})
    samples = [(s, drained.predict(s).job_s) for s in sims]
    feed = [(s, truth.feed_seconds(s)) for s in sims]
    fit = fit_feed_costs(samples, feed_samples=feed)
    assert fit.feed["submit"] == pytest.approx(FEED["submit"], rel=1e-6)
    assert fit.feed["tokenize"] == pytest.approx(FEED["tokenize"], rel=1e-6)
    assert fit.feed["drain"] == pytest.approx(1e-4, rel=1e-6)
    for s in sims:
        assert fit.predict(s).job_s == pytest.approx(drained.predict(s).job_s, rel=1e-6)


def test_two_clock_costs_round_trip_and_refuse_what_cannot_be_priced():
    from ggr_kv.simulate.feedtime import FeedCosts, fit_feed_costs

    costs = FeedCosts(StepCosts(ENGINE), FEED, p=6.0, meta={"card": "x"})
    back = FeedCosts.from_dict(json.loads(json.dumps(costs.to_dict())))
    assert back == costs and back.meta == {"card": "x"}
    assert FeedCosts.from_dict(FeedCosts(StepCosts(ENGINE), FEED).to_dict()).p == float("inf")
    with pytest.raises(ValueError, match="belong in feed"):
        FeedCosts(StepCosts({**ENGINE, "prompt_tokens": 1e-6}), FEED)
    with pytest.raises(ValueError, match="unknown feed term"):
        FeedCosts(StepCosts(ENGINE), {"magic": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        FeedCosts(StepCosts(ENGINE), {"submit": -1.0})
    with pytest.raises(ValueError, match="p must be"):
        FeedCosts(StepCosts(ENGINE), FEED, p=0.5)
    res = _job(4, 0, 20, 2, 0)
    with pytest.raises(ValueError, match="cannot fit"):
        fit_feed_costs([(res, 1.0)] * 3)
    with pytest.raises(ValueError, match="must be > 0"):
        fit_feed_costs([(res, -1.0)] * 8)


@pytest.mark.subprocess
def test_predict_command_overlaps_engine_and_feed_when_the_calibration_has_both(tmp_path):
    from ggr_kv.simulate.feedtime import FeedCosts

    sched = {"block_size": 16, "num_blocks": 3000, "max_num_seqs": 64,
             "max_num_batched_tokens": 2048}
    # a host 100x slower than the engine at submitting prompts: every ordering waits for it
    two = FeedCosts(StepCosts(ENGINE), {"submit": 1e-2, "tokenize": 1e-4, "drain": 0.0})
    costs = StepCosts(TRUE, {"scheduler": sched, "two_clock": two.to_dict()})
    cal = save_calibration(costs, tmp_path / "cal.json")
    r = _cli("predict", "movies", "--rows", "40", "--query-type", "filter", "--calibration",
             str(cal), "--orderings", "original,ggr", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)["predictions"]
    for p in rows:
        assert p["model"] == "two-clock" and p["bound"] == "feed"
        assert p["predicted_job_s"] == pytest.approx(p["feed_s"])
        assert p["feed_s"] > p["engine_s"] and p["step_cost_job_s"] > 0
    # the same prompts to submit whatever the order: the feed-bound job time does not move
    assert rows[0]["predicted_job_s"] == pytest.approx(rows[1]["predicted_job_s"], rel=0.02)
    # a two-clock model that fits the calibration jobs worse than the step costs is not used
    worse = FeedCosts(two.engine, two.feed, meta={"fit": {"relative_residuals": [0.3, -0.3]}})
    costs = StepCosts(TRUE, {"scheduler": sched, "two_clock": worse.to_dict(),
                             "fit": {"relative_residuals": [0.05, -0.05]}})
    cal = save_calibration(costs, tmp_path / "cal2.json")
    r = _cli("predict", "movies", "--rows", "40", "--query-type", "filter", "--calibration",
             str(cal), "--orderings", "original", "--json")
    assert r.returncode == 0, r.stderr
    (row,) = json.loads(r.stdout)["predictions"]
    assert row["model"] == "step-cost" and row["predicted_job_s"] == row["step_cost_job_s"]
