"""Job time before the job runs: the simulator's schedule priced by an engine's speeds.

A replay (`ggr_kv.simulate.simulate`) says how much work each engine step does: prompt
tokens the model computes (not served from the prefix cache, recomputes included) and
decode tokens. An engine's `Throughputs`, measured once per engine and model
(`ggr_kv.engine.throughput.measure_throughputs`), price that work::

    job_s = prefill_tokens / prefill_tok_s + decode_tokens / decode_tok_s
            + num_steps * step_overhead_s

The model is linear in the replay's totals, so one replay and one pair of throughputs
give the job time of an ordering on a GPU that is not rented yet, and the speedup
between two orderings. Jobs whose time is nearly all prefill follow the hit rate: their
speedup approaches the *ideal* ``(1 - h_a) / (1 - h_b)``; decode and per-step costs,
which caching does not remove, pull the real speedup below it.

What the model leaves out: attention cost growing with context length, the batch shape
of each step (CUDA-graph padding), per-request work outside the engine steps (tokenizing
is inside the measured throughputs when they were measured with text prompts, as the
runner sends them), and vLLM's asynchronous scheduling on GPU (step shapes differ, hit
totals do not). `benchmarks/RESULTS-simulate.md` shows how far predictions are from
measured jobs on the CPU engine and on the H200.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ggr_kv.simulate.api import SimResult, SimTotals

__all__ = [
    "JobTimePrediction",
    "SpeedupPrediction",
    "Throughputs",
    "fit_throughputs",
    "ideal_speedup",
    "predict_job_time",
    "predict_speedup",
    "work_of",
]


@dataclass(frozen=True)
class Throughputs:
    """An engine's speeds, as the job-time model uses them.

    Attributes
    ----------
    prefill_tok_s : uncached prompt tokens computed per second (tokens/s).
    decode_tok_s : decode tokens per second of decode work beyond the per-step overhead
        (tokens/s); with ``step_overhead_s = 0`` it is plainly the decode rate at the
        measured batch. ``inf`` when a fit finds decode costs nothing beyond the steps
        it runs in (JSON: ``null``).
    step_overhead_s : fixed seconds per engine step (scheduling, launching, sampling).
    meta : how they were measured (engine, workloads, repeats, spread, fit residuals).
    """

    prefill_tok_s: float
    decode_tok_s: float
    step_overhead_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in ("prefill_tok_s", "decode_tok_s"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"Throughputs.{name} must be > 0 tokens/s, got {v!r}")
        if math.isinf(self.prefill_tok_s):
            raise ValueError("Throughputs.prefill_tok_s must be finite: prefill is never free")
        if not (isinstance(self.step_overhead_s, (int, float)) and self.step_overhead_s >= 0):
            raise ValueError(
                f"Throughputs.step_overhead_s must be >= 0 s, got {self.step_overhead_s!r}"
            )

    def seconds(self, prefill_tokens: Any, decode_tokens: Any, steps: Any = 1) -> Any:
        """Seconds of the given work (scalars or arrays, e.g. per step)."""
        return (
            np.asarray(prefill_tokens) / self.prefill_tok_s
            + np.asarray(decode_tokens) / self.decode_tok_s
            + np.asarray(steps) * self.step_overhead_s
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (`ggr_kv.core.jsonutil.to_jsonable` handles ``meta``)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Throughputs:
        """Inverse of `to_dict` (a ``None`` decode rate, JSON's form of ``inf``, is ``inf``)."""
        dec = d.get("decode_tok_s")
        return cls(
            float(d["prefill_tok_s"]),
            math.inf if dec is None else float(dec),
            float(d.get("step_overhead_s") or 0.0),
            dict(d.get("meta") or {}),
        )


@dataclass(frozen=True)
class Work:
    """What a replay asks of the model: the job-time model's inputs (totals)."""

    prefill_tokens: int  # prompt tokens computed, recomputes included
    decode_tokens: int
    num_steps: int
    hit_rate: float  # 0-1, 0 with the prefix cache off
    prompt_tokens: int
    num_requests: int


def work_of(sim: SimResult | SimTotals) -> Work:
    """The totals of a `SimResult` or `SimTotals` that the job-time model prices."""
    s = sim.summary if isinstance(sim, SimResult) else sim.to_dict()
    h = s["hit_rate"]
    return Work(
        prefill_tokens=int(s["prefill_tokens"]),
        decode_tokens=int(s["decode_tokens"]),
        num_steps=int(s["num_steps"]),
        hit_rate=0.0 if h is None or math.isnan(h) else float(h),
        prompt_tokens=int(s["prompt_tokens"]),
        num_requests=int(s["num_requests"]),
    )


@dataclass
class JobTimePrediction:
    """Predicted job time of one replay under one `Throughputs`.

    Attributes
    ----------
    job_s : predicted seconds of the whole job (``prefill_s + decode_s + overhead_s``).
    prefill_s, decode_s, overhead_s : its parts (s).
    bound : the largest part: ``"prefill"``, ``"decode"`` or ``"overhead"``.
    work : the replay's totals that were priced.
    step_s : ``(num_steps,)`` predicted seconds of each step when the replay has
        per-step work (`SimResult.work`), else ``None``; its cumulative sum is a
        predicted clock for ``SimResult.steps``.
    throughputs : the speeds used.
    """

    job_s: float
    prefill_s: float
    decode_s: float
    overhead_s: float
    bound: str
    work: Work
    step_s: np.ndarray | None
    throughputs: Throughputs

    def to_dict(self) -> dict[str, Any]:
        """Scalars, work and throughputs as a JSON-ready dict (no per-step array)."""
        return {
            "job_s": self.job_s,
            "prefill_s": self.prefill_s,
            "decode_s": self.decode_s,
            "overhead_s": self.overhead_s,
            "bound": self.bound,
            "work": asdict(self.work),
            "throughputs": self.throughputs.to_dict(),
        }


def predict_job_time(sim: SimResult | SimTotals, throughputs: Throughputs) -> JobTimePrediction:
    """Price a replay's work with an engine's throughputs.

    Parameters
    ----------
    sim : a `simulate` / `simulate_plan` result, or `simulate_totals`' totals, of the job
        as it would run (same prompts, order, output lengths and engine settings).
    throughputs : the engine's speeds (`ggr_kv.engine.throughput.measure_throughputs`).

    Returns
    -------
    JobTimePrediction
    """
    w = work_of(sim)
    t = throughputs
    parts = {
        "prefill": w.prefill_tokens / t.prefill_tok_s,
        "decode": w.decode_tokens / t.decode_tok_s,
        "overhead": w.num_steps * t.step_overhead_s,
    }
    step_s = None
    if isinstance(sim, SimResult) and len(sim.work) == w.num_steps:
        step_s = np.asarray(
            t.seconds(sim.work["prefill_tokens"], sim.work["decode_tokens"]), dtype=np.float64
        )
    return JobTimePrediction(
        job_s=sum(parts.values()),
        prefill_s=parts["prefill"],
        decode_s=parts["decode"],
        overhead_s=parts["overhead"],
        bound=max(parts, key=parts.__getitem__),
        work=w,
        step_s=step_s,
        throughputs=t,
    )


def ideal_speedup(hit_rate_base: float, hit_rate_other: float) -> float:
    """``(1 - h_base) / (1 - h_other)``: the speedup if job time were uncached prompt
    tokens only (hit rates 0-1; NaN, e.g. the cache off, counts as 0)."""
    hb = 0.0 if math.isnan(hit_rate_base) else hit_rate_base
    ho = 0.0 if math.isnan(hit_rate_other) else hit_rate_other
    return (1.0 - hb) / (1.0 - ho) if ho < 1.0 else math.inf


@dataclass
class SpeedupPrediction:
    """How much faster ``other`` should run than ``baseline`` on one engine.

    Attributes
    ----------
    baseline, other : their `JobTimePrediction`.
    predicted : ``baseline.job_s / other.job_s``.
    ideal : `ideal_speedup` of their hit rates: the speedup if only uncached prompt
        tokens cost time.
    """

    baseline: JobTimePrediction
    other: JobTimePrediction
    predicted: float
    ideal: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "predicted": self.predicted,
            "ideal": self.ideal,
            "baseline": self.baseline.to_dict(),
            "other": self.other.to_dict(),
        }


def predict_speedup(
    baseline: SimResult | SimTotals, other: SimResult | SimTotals, throughputs: Throughputs
) -> SpeedupPrediction:
    """Predicted and ideal speedup of ``other`` over ``baseline`` (e.g. ggr over original)."""
    a = predict_job_time(baseline, throughputs)
    b = predict_job_time(other, throughputs)
    return SpeedupPrediction(
        baseline=a,
        other=b,
        predicted=a.job_s / b.job_s if b.job_s > 0 else math.inf,
        ideal=ideal_speedup(a.work.hit_rate, b.work.hit_rate),
    )


def fit_throughputs(
    samples: Sequence[tuple[SimResult | SimTotals, float]],
    *,
    step_overhead: bool = True,
    meta: dict[str, Any] | None = None,
) -> Throughputs:
    """Throughputs that best explain measured job times of replayed workloads.

    Solves ``seconds ~ prefill_tokens * a + decode_tokens * b + num_steps * c`` with
    ``a, b, c >= 0`` by least squares on relative errors (each job weighs the same,
    whatever its length), trying every subset of the three terms.

    Parameters
    ----------
    samples : ``(replay of a job, measured seconds of that job)`` pairs; they must
        contain prefill work and decode work (e.g. a prefill-only and a decode-heavy
        calibration run), and at least as many jobs as terms.
    step_overhead : fit the per-step term ``c``; False fixes it at 0.
    meta : stored in `Throughputs.meta` (with the fit's relative residuals added).

    Returns
    -------
    Throughputs
    """
    if not samples:
        raise ValueError("fit_throughputs needs at least one (replay, seconds) pair")
    works = [work_of(s) for s, _ in samples]
    y = np.array([float(t) for _, t in samples])
    if (y <= 0).any() or not np.isfinite(y).all():
        bad = int(np.flatnonzero((y <= 0) | ~np.isfinite(y))[0])
        raise ValueError(f"sample {bad}: measured seconds must be > 0, got {y[bad]}")
    X = np.array([[w.prefill_tokens, w.decode_tokens, w.num_steps] for w in works], float)
    n_terms = 3 if step_overhead else 2
    for j, what in ((0, "prefill"), (1, "decode")):
        if not X[:, j].any():
            raise ValueError(f"no sample has {what} work: the {what} rate cannot be fitted")
    if len(y) < n_terms:
        raise ValueError(f"{len(y)} samples cannot fit {n_terms} terms; give at least {n_terms}")
    coef = _nonnegative_lstsq(X[:, :n_terms] / y[:, None], np.ones_like(y))
    if coef[0] <= 0:
        raise ValueError(
            "the samples give prefill no cost (the fitted prefill rate is infinite); "
            "calibrate with a prefill-only job and a decode-heavy job"
        )
    coef = np.concatenate([coef, np.zeros(3 - n_terms)])
    rel = X @ coef / y - 1.0
    info = dict(meta or {})
    info["fit"] = {
        "samples": len(y),
        "relative_residuals": [float(r) for r in rel],
        "max_abs_relative_residual": float(np.abs(rel).max()),
    }
    decode = 1.0 / coef[1] if coef[1] > 0 else math.inf
    return Throughputs(1.0 / coef[0], decode, float(coef[2]), info)


def _nonnegative_lstsq(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``argmin |A x - b|`` over ``x >= 0``, by trying every support (few columns)."""
    k = A.shape[1]
    best, best_err = np.zeros(k), float(np.sum(b**2))
    for size in range(1, k + 1):
        for cols in itertools.combinations(range(k), size):
            x_s, *_ = np.linalg.lstsq(A[:, cols], b, rcond=None)
            if (x_s < 0).any():
                continue
            x = np.zeros(k)
            x[list(cols)] = x_s
            err = float(np.sum((A @ x - b) ** 2))
            if err < best_err - 1e-15:
                best, best_err = x, err
    return best
