"""Calibrate the per-step cost model (`ggr_kv.simulate.stepcost`) on a live engine.

`calibrate(llm)` runs short jobs (about 10 s a round on an H200 with an 8B model), each
built to move one feature of the model, with the prefix cache reset before each and
prompts of random numbers whose only shared tokens are the ones a job shares on
purpose:

- ``prefill``: long unique prompts, 1 output token (uncached prefill, long chunks;
  eight full steps, twice ``prefill_short``'s four: the two lengths separate the cost
  per token from the cost per job);
- ``prefill_short``: many short unique prompts, 1 output token (per-request cost);
- ``cached_<C>``: one context of C tokens shared by every prompt, a few unique tokens
  after it, 1 output token: prefill of new tokens behind a cached context (C = a
  quarter, half and all of ``max_context``);
- ``cached_many``: many short prompts behind a short shared context (a highly cached
  table job);
- ``decode_<B>``: B short unique prompts, many output tokens: decode at batch B
  (full batch, an eighth, and a few) at short context; the full batch runs without a
  CUDA graph (more than the engine's largest graph), the others in one;
- ``decode_long``: a few prompts behind a long shared context, many output tokens:
  decode over long contexts, long enough that the engine, not the submission of the
  long prompts, sets the job's time.

Each job is timed as the runner times a job (the wall time of one ``LLM.generate``, its
prompts sent as the runs to be predicted send them: ``submit``, token ids tokenized
before the timer by default, or text) ``repeats`` times, interleaved, and so is its feed
(when the last prompt was submitted: ``LLM.generate`` submits them all before it reads
an output); the
simulator replays each on the engine's settings and the token ids vLLM really ran, and
`ggr_kv.simulate.stepcost.fit_step_costs` fits the coefficients to the median times.
The two-clock model (`ggr_kv.simulate.feedtime`) is fitted too, its feed clock to the
feed times, and kept in the result's ``meta["two_clock"]``.
The result is written with `ggr_kv.simulate.stepcost.save_calibration` and read by ``ggr-kv predict``.
Nothing here needs a GPU: the CPU engine calibrates the same way (smaller ``scale``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ggr_kv.engine.submit import DEFAULT_SUBMIT, submit_inputs
from ggr_kv.engine.throughput import _number_prompts, _replay, _time_job, scheduler_config
from ggr_kv.simulate import SchedulerConfig
from ggr_kv.simulate.feedtime import fit_feed_costs
from ggr_kv.simulate.stepcost import GRAPH_TOKENS, StepCosts, features_of, fit_step_costs

__all__ = ["CalibJob", "calibrate", "calibration_jobs"]


@dataclass(frozen=True)
class CalibJob:
    """One calibration job: ``n`` prompts of ``shared`` common tokens then ``unique``
    tokens of their own (tokens, approximately: the replay uses the exact ids), each
    generating ``out`` tokens."""

    name: str
    n: int
    shared: int
    unique: int
    out: int


def calibration_jobs(config: SchedulerConfig, max_model_len: int, *, scale: float = 1.0,
                     max_context: int = 3072) -> list[CalibJob]:
    """The calibration jobs sized for an engine (``scale`` < 1 shrinks them, e.g. for
    the CPU engine; ``max_context`` caps the longest shared context, tokens)."""
    B = config.block_size
    seqs = config.max_num_seqs
    ctx = max(2 * B, min(max_context, max_model_len - 160))
    u = max(8, min(64, B * 4))

    def n(x: float, lo: int = 2) -> int:
        return max(lo, int(round(x * scale)))

    full = min(seqs, max(8, n(1024)))
    jobs = [
        CalibJob("prefill", n(64), 0, min(2048, max_model_len - 8), 1),
        CalibJob("prefill_short", n(512), 0, 128, 1),
        CalibJob("cached_many", n(2048), min(240, ctx), 32, 1),
    ]
    for frac in (4, 2, 1):
        c = max(B, ctx // frac)
        jobs.append(CalibJob(f"cached_{c}", n(256 * 1024 / max(c, 1024)), c, u, 1))
    dec = max(8, min(48, max_model_len // 8, n(48)))
    for b in sorted({full, max(2, full // 8), max(1, min(8, full))}, reverse=True):
        jobs.append(CalibJob(f"decode_{b}", b, 0, max(2, min(B - 1, 15)), dec))
    # few prompts, twice the decode length: engine-bound (256 prompts of ~3k tokens took
    # longer to submit than to decode, so the fit could not price long-context decode)
    jobs.append(CalibJob("decode_long", max(2, min(seqs, n(64))), max(B, ctx - 2 * dec - 64),
                         15, 2 * dec))
    return [_fit_pool(j, config) for j in jobs]


def _fit_pool(job: CalibJob, config: SchedulerConfig) -> CalibJob:
    """Shrink a job's batch so its running requests fit the KV pool (no preemptions)."""
    B = config.block_size
    per_seq = -(-(job.unique + job.out + 2 * B) // B) + 1
    room = (config.num_blocks - 1 - (-(-job.shared // B))) // per_seq
    if job.out > 1 and job.n > room:
        return CalibJob(job.name, max(1, room), job.shared, job.unique, job.out)
    return job


def _texts(tok: Any, job: CalibJob, seed: int) -> list[str]:
    """The job's prompt texts: one shared random-number context, then unique numbers."""
    head = ""
    if job.shared:
        head = _number_prompts(tok, 1, job.shared, seed + 7919)[0] + " "
    bodies = _number_prompts(tok, job.n, job.unique, seed)
    return [head + b for b in bodies]


def calibrate(
    llm: Any,
    *,
    repeats: int = 2,
    scale: float = 1.0,
    max_context: int = 3072,
    seed: int = 0,
    jobs: list[CalibJob] | None = None,
    on_job: Callable[[str, float], Any] | None = None,
    submit: str = DEFAULT_SUBMIT,
) -> StepCosts:
    """Run the calibration jobs on ``llm`` and fit the step-cost model.

    Parameters
    ----------
    llm : a running ``vllm.LLM``; its prefix cache is reset before every job.
    repeats : timings of each job, interleaved (median used; all kept in ``meta``).
    scale, max_context : job sizes (see `calibration_jobs`).
    seed : seed of the random prompts.
    jobs : the jobs to run instead of `calibration_jobs`' (at least 7).
    on_job : called with (job name, seconds) after each timed job.
    submit : how the prompts go in: ``"ids"`` (tokenized before the timer) or ``"text"``;
        calibrate as the runs to be predicted submit (`ggr_kv.engine.submit`).

    Returns
    -------
    StepCosts whose ``meta`` holds the engine, every job's size, replayed features,
    timings (s) and the fit's relative residuals.
    """
    from ggr_kv.engine.config import engine_facts

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    facts = engine_facts(llm)
    config = scheduler_config(llm)
    jobs = jobs or calibration_jobs(config, facts["max_model_len"], scale=scale,
                                    max_context=max_context)
    tok = llm.get_tokenizer()
    texts = {j.name: submit_inputs(llm, _texts(tok, j, seed + 101 * i), submit)[0]
             for i, j in enumerate(jobs)}
    _time_job(llm, texts[jobs[-1].name][:2], 2)  # untimed warm-up
    times: dict[str, list[float]] = {j.name: [] for j in jobs}
    feeds: dict[str, list[float]] = {j.name: [] for j in jobs}
    replays: dict[str, Any] = {}
    t0 = time.perf_counter()
    for _ in range(repeats):
        for j in jobs:
            secs, feed, outs = _time_job(llm, texts[j.name], j.out)
            times[j.name].append(secs)
            if feed is not None:
                feeds[j.name].append(feed)
            if j.name not in replays:
                replays[j.name] = _replay(outs, config)
            if on_job is not None:
                on_job(j.name, secs)
    graph = facts.get("cudagraph_max_tokens")
    graph = GRAPH_TOKENS if graph is None else int(graph)
    feats = {j.name: features_of(replays[j.name], graph_tokens=graph) for j in jobs}
    samples = [(feats[j.name], statistics.median(times[j.name])) for j in jobs]
    meta = {
        "method": "ggr_kv.engine.calibrate.calibrate",
        "engine": facts,
        "scheduler": config.to_dict(),
        "repeats": repeats,
        "seed": seed,
        "submit": submit,
        "calibration_s": time.perf_counter() - t0,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "jobs": {
            j.name: {"prompts": j.n, "shared": j.shared, "unique": j.unique, "out": j.out,
                     "features": feats[j.name], "seconds": times[j.name],
                     "median_s": statistics.median(times[j.name]),
                     "feed_s": feeds[j.name],
                     "feed_median_s": statistics.median(feeds[j.name]) if feeds[j.name] else None}
            for j in jobs
        },
    }
    feed_samples = [(replays[j.name], statistics.median(feeds[j.name])) for j in jobs
                    if feeds[j.name]]
    try:
        meta["two_clock"] = fit_feed_costs(samples, feed_samples=feed_samples).to_dict()
    except ValueError as e:  # e.g. too few engine-bound jobs: the step costs still hold
        meta["two_clock"] = {"error": str(e)}
    return fit_step_costs(samples, meta=meta, graph_tokens=graph)
