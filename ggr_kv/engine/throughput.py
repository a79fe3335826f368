"""Measure an engine's throughputs once, to predict job times (`ggr_kv.simulate.jobtime`).

`measure_throughputs(llm)` runs three short calibration jobs on a live ``vllm.LLM``,
with the prefix cache reset before each and prompts of random numbers that cannot
share a KV block, so nothing hits:

- **prefill**: long prompts, 1 output token each (the job is nearly all prefill);
- **decode, full batch**: short prompts (under one block), many output tokens, as many
  requests as the engine runs at once (up to ``decode_batch``);
- **decode, small batch**: the same with an eighth of the requests, which separates the
  fixed cost of a step from the cost of each decode token.

Each job is timed ``repeats`` times (interleaved; the median is used) as the runner
times a job: the wall time of one ``LLM.generate`` call over all prompts, sent as the
runner sends them (``submit``: token ids tokenized before the timer, by default, or
text, tokenized inside it; `ggr_kv.engine.submit`). On a shared machine, where other processes' load
swings wall times, ``interleave`` lets a caller time its own jobs between the rounds of
calibration jobs, so that both see the same load. The simulator replays each job on the engine's own
settings and exact prompt tokens, and `ggr_kv.simulate.jobtime.fit_throughputs` finds
the prefill rate, decode rate and per-step overhead that explain the three times.
Nothing here depends on a GPU: the same calibration runs on the CPU engine.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ggr_kv.engine.config import engine_facts
from ggr_kv.engine.submit import DEFAULT_SUBMIT, submit_inputs
from ggr_kv.simulate import SchedulerConfig, SimResult, simulate
from ggr_kv.simulate.jobtime import Throughputs, fit_throughputs

__all__ = ["CALIBRATION_JOBS", "measure_throughputs", "scheduler_config"]

#: names of the calibration jobs, in the order they run
CALIBRATION_JOBS: tuple[str, ...] = ("prefill", "decode", "decode_small")


def scheduler_config(llm: Any) -> SchedulerConfig:
    """The `SchedulerConfig` a running ``vllm.LLM`` uses (``SchedulerConfig.from_engine``
    of its `engine_facts`), for `ggr_kv.simulate.simulate_totals` or ``simulate``."""
    return SchedulerConfig.from_engine(engine_facts(llm))


def _number_prompts(tokenizer: Any, n: int, n_tokens: int, seed: int) -> list[str]:
    """``n`` texts of random 3-digit numbers, each about ``n_tokens`` tokens long under
    ``tokenizer`` (BOS included) and distinct from its first token on."""
    rng = np.random.default_rng(seed)
    probe = " ".join(str(x) for x in rng.integers(100, 1000, 200))
    per_word = len(tokenizer.encode(probe)) / 200  # ~2 tokens a word (space, digits)
    words = max(1, int(n_tokens / per_word))
    texts = []
    for i in range(n):
        body = " ".join(str(x) for x in rng.integers(100, 1000, words))
        text = f"{i} {body}"
        while len(tokenizer.encode(text)) > n_tokens and " " in text:
            text = text.rsplit(" ", 4)[0]
        texts.append(text)
    return texts


def _plan(config: SchedulerConfig, max_model_len: int, prefill_len: int, prefill_steps: int,
          decode_batch: int, decode_len: int) -> dict[str, tuple[int, int, int]]:
    """``{job: (prompts, prompt tokens, output tokens)}`` sized for this engine."""
    B = config.block_size
    p_len = max(B + 1, min(prefill_len, max_model_len - 1))
    n_pre = max(4, -(-prefill_steps * config.max_num_batched_tokens // p_len))
    d_len = max(2, min(B - 1, 32))  # under one block: can never hit
    out = max(4, min(decode_len, max_model_len - d_len))
    batch = max(8, min(decode_batch, config.max_num_seqs))
    # every sequence grows to d_len + out tokens: keep the batch inside the KV pool
    per_seq = -(-(d_len + out) // B)
    batch = max(1, min(batch, (config.num_blocks - 1) // per_seq))
    return {
        "prefill": (n_pre, p_len, 1),
        "decode": (batch, d_len, out),
        "decode_small": (max(1, batch // 8), d_len, out),
    }


def _time_job(llm: Any, texts: list[Any], max_tokens: int) -> tuple[float, float | None, list]:
    """Seconds of one ``generate`` over ``texts`` (prompt strings or token-id prompts,
    `ggr_kv.engine.submit.submit_inputs`; prefix cache reset first), seconds until its last prompt was submitted
    (``None`` when the engine's ``add_request`` cannot be timed), and the outputs."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0.0)
    llm.reset_prefix_cache()
    engine = getattr(llm, "llm_engine", None)
    add = getattr(engine, "add_request", None)
    last = [None]
    if add is not None:
        def timed(*a: Any, **k: Any) -> Any:
            r = add(*a, **k)
            last[0] = time.perf_counter()
            return r

        engine.add_request = timed  # this instance only, for this job
    t0 = time.perf_counter()
    try:
        outs = llm.generate(texts, params, use_tqdm=False)
    finally:
        if add is not None:
            del engine.add_request
    secs = time.perf_counter() - t0
    return secs, (None if last[0] is None else last[0] - t0), outs


def _replay(outs: list, config: SchedulerConfig) -> SimResult:
    """The simulator's replay of a calibration job from the prompts vLLM really ran."""
    ids = [np.asarray(o.prompt_token_ids, dtype=np.int64) for o in outs]
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum([len(x) for x in ids], out=offsets[1:])
    out_lens = np.array([len(o.outputs[0].token_ids) for o in outs], dtype=np.int64)
    return simulate(np.concatenate(ids), offsets, out_lens, config, progress=False)


def measure_throughputs(
    llm: Any,
    *,
    prefill_len: int = 512,
    prefill_steps: int = 8,
    decode_batch: int = 256,
    decode_len: int = 64,
    repeats: int = 3,
    seed: int = 0,
    interleave: Callable[[int], Any] | None = None,
    progress: bool = True,
    submit: str = DEFAULT_SUBMIT,
) -> Throughputs:
    """Measure uncached prefill tokens/s, decode tokens/s and the per-step overhead.

    Parameters
    ----------
    llm : a running ``vllm.LLM`` (e.g. `ggr_kv.engine.config.make_llm`); its prefix
        cache is reset before every calibration job.
    prefill_len : tokens per prefill prompt (capped by ``max_model_len``).
    prefill_steps : size of the prefill job, in full engine steps
        (``max_num_batched_tokens`` tokens each).
    decode_batch : requests of the full-batch decode job (capped by ``max_num_seqs``
        and by the KV pool).
    decode_len : output tokens per decode request.
    repeats : timings of each job (median used; all kept in ``meta``).
    seed : seed of the random prompts.
    interleave : called with the repeat index after each round of calibration jobs, so
        a caller can time its own jobs between them, under the same machine load.
    progress : a tqdm bar over the calibration jobs.
    submit : how the prompts go in, as the runs to be predicted send them: ``"ids"``
        (tokenized before the timer) or ``"text"`` (`ggr_kv.engine.submit`).

    Returns
    -------
    Throughputs whose ``meta`` holds the engine's settings, each job's size, replayed
    work and timings (s), and the fit's relative residuals.
    """
    from tqdm.auto import tqdm

    from ggr_kv.engine.config import engine_facts

    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    facts = engine_facts(llm)
    config = scheduler_config(llm)
    plan = _plan(config, facts["max_model_len"], prefill_len, prefill_steps, decode_batch,
                 decode_len)
    tok = llm.get_tokenizer()
    texts = {j: submit_inputs(llm, _number_prompts(tok, n, L, seed + i), submit)[0]
             for i, (j, (n, L, _)) in enumerate(plan.items())}
    _time_job(llm, texts["decode_small"][:2], 2)  # untimed warm-up
    times: dict[str, list[float]] = {j: [] for j in plan}
    replays: dict[str, SimResult] = {}
    with tqdm(total=repeats * len(plan), desc="calibrate", unit="job", disable=not progress) as bar:
        for _ in range(repeats):
            for job, (_, _, out) in plan.items():
                secs, _, outs = _time_job(llm, texts[job], out)
                times[job].append(secs)
                if job not in replays:
                    replays[job] = _replay(outs, config)
                bar.update(1)
            if interleave is not None:
                interleave(len(times["prefill"]) - 1)
    samples = [(replays[j], statistics.median(times[j])) for j in plan]
    jobs = {
        j: {
            "prompts": plan[j][0],
            "prompt_tokens": int(replays[j].summary["prompt_tokens"]),
            "output_tokens_each": plan[j][2],
            "prefill_tokens": int(replays[j].summary["prefill_tokens"]),
            "decode_tokens": int(replays[j].summary["decode_tokens"]),
            "num_steps": int(replays[j].summary["num_steps"]),
            "seconds": times[j],
            "median_s": statistics.median(times[j]),
        }
        for j in plan
    }
    meta = {
        "method": "ggr_kv.engine.throughput.measure_throughputs",
        "engine": facts,
        "scheduler": config.to_dict(),
        "jobs": jobs,
        "repeats": repeats,
        "seed": seed,
        "submit": submit,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return fit_throughputs(samples, meta=meta)
