"""Job time when the host feeds the engine: engine work and prompt submission, overlapped.

`ggr_kv.simulate.stepcost` prices the steps of a replay in which every request is
present at the first step, and adds the host's per-request and per-prompt-token costs
on top. The engine does not see a job that way: ``LLM.generate`` tokenizes and submits
the prompts one by one while the engine already steps, and processes the outputs when
the last one is submitted. So the host's work overlaps the engine's instead of adding
to it, and a highly cached job (few new tokens a request) finishes when its last prompt
is in, not when its GPU work is done (on an H200 with an 8B model, 87%-hit jobs of
3,000 prompts ran 31-102 small steps, mostly with no request waiting). Two clocks::

    engine_s = step-cost sum of the replay (`ENGINE_FEATURES`, as `StepCosts`)
    feed_s   = num_requests * (submit + drain) + prompt_tokens * tokenize
    job_s    = (engine_s**p + feed_s**p) ** (1/p)

``submit`` and ``tokenize`` are the host's seconds per request and per prompt token
(cached or not) to hand prompts to the engine; ``drain`` the seconds per request of
output processing left after the last submission; ``p`` (>= 1; ``inf``: the larger of
the two) how sharply one clock hides the other (when both are close, the starved engine
runs more, smaller steps and the job takes longer than either). `fit_feed_costs` fits
all of them to measured jobs (and, where measured, the submission time alone).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ggr_kv.simulate.api import SimResult, SimTotals
from ggr_kv.simulate.stepcost import StepCosts, features_of, relative_nnls, sample_matrix

__all__ = [
    "ENGINE_FEATURES",
    "FEED_TERMS",
    "FeedCosts",
    "FeedPrediction",
    "fit_feed_costs",
]

#: the features the engine clock prices (per-step work of the replay)
ENGINE_FEATURES: tuple[str, ...] = (
    "num_steps", "prefill_tokens", "prefill_attn", "decode_tokens", "decode_ctx",
)
#: the host clock's coefficients: name -> (unit, what it prices)
FEED_TERMS: dict[str, tuple[str, str]] = {
    "submit": ("request", "tokenizing overhead and submitting one prompt"),
    "tokenize": ("token", "one prompt token sent, cached or not"),
    "drain": ("request", "output processing left after the last submission"),
}
#: the sharpness values `fit_feed_costs` chooses ``p`` from
P_GRID: tuple[float, ...] = (2.0, 3.0, 4.0, 6.0, 8.0, 12.0, math.inf)


def _combine(engine_s: Any, feed_s: Any, p: float) -> Any:
    e, f = np.asarray(engine_s, np.float64), np.asarray(feed_s, np.float64)
    if math.isinf(p):
        return np.maximum(e, f)
    m = np.maximum(np.maximum(e, f), 1e-300)
    return m * ((e / m) ** p + (f / m) ** p) ** (1.0 / p)


@dataclass
class FeedPrediction:
    """Predicted job time of one replay under `FeedCosts`.

    Attributes
    ----------
    job_s : predicted seconds of the job.
    engine_s : seconds of the engine's steps with every request present.
    feed_s : seconds to submit every prompt and process the outputs left after that.
    bound : ``"engine"`` or ``"feed"``, the larger clock.
    parts : seconds per engine feature and per feed term (their sums are
        ``engine_s`` and ``feed_s``).
    """

    job_s: float
    engine_s: float
    feed_s: float
    bound: str
    parts: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {"job_s": self.job_s, "engine_s": self.engine_s, "feed_s": self.feed_s,
                "bound": self.bound, "parts": dict(self.parts)}


@dataclass(frozen=True)
class FeedCosts:
    """The two-clock job-time model (see the module docstring).

    Attributes
    ----------
    engine : seconds per unit of each `ENGINE_FEATURES` feature (its host terms are 0).
    feed : seconds per unit of each `FEED_TERMS` term (all >= 0).
    p : sharpness of the overlap, >= 1 (``inf``: the larger clock).
    meta : how they were fitted.
    """

    engine: StepCosts
    feed: dict[str, float]
    p: float = math.inf
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        extra = [k for k in self.engine.coef if k not in ENGINE_FEATURES and self.engine.get(k)]
        if extra:
            raise ValueError(f"FeedCosts.engine prices host terms {extra}: they belong in feed")
        unknown = sorted(set(self.feed) - set(FEED_TERMS))
        if unknown:
            raise ValueError(f"FeedCosts: unknown feed term(s) {unknown}; known: {list(FEED_TERMS)}")
        for k, v in self.feed.items():
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"FeedCosts.feed[{k!r}] must be a finite number >= 0 s, got {v!r}")
        if not (self.p >= 1):
            raise ValueError(f"FeedCosts.p must be >= 1 (or inf), got {self.p!r}")

    def feed_seconds(self, sim: SimResult | SimTotals | Mapping[str, Any], *,
                     drain: bool = True) -> float:
        """Seconds to submit the job's prompts (plus the output drain when ``drain``)."""
        f = features_of(sim)
        s = f["num_requests"] * self.feed.get("submit", 0.0) + \
            f["prompt_tokens"] * self.feed.get("tokenize", 0.0)
        return float(s + (f["num_requests"] * self.feed.get("drain", 0.0) if drain else 0.0))

    def predict(self, sim: SimResult | SimTotals | Mapping[str, Any]) -> FeedPrediction:
        """Predicted job time of a replay."""
        f = features_of(sim)
        parts = {k: f[k] * self.engine.get(k) for k in ENGINE_FEATURES}
        engine_s = float(sum(parts.values()))
        parts["submit"] = f["num_requests"] * self.feed.get("submit", 0.0)
        parts["tokenize"] = f["prompt_tokens"] * self.feed.get("tokenize", 0.0)
        parts["drain"] = f["num_requests"] * self.feed.get("drain", 0.0)
        feed_s = parts["submit"] + parts["tokenize"] + parts["drain"]
        return FeedPrediction(job_s=float(_combine(engine_s, feed_s, self.p)),
                              engine_s=engine_s, feed_s=float(feed_s),
                              bound="engine" if engine_s >= feed_s else "feed", parts=parts)

    def to_dict(self) -> dict[str, Any]:
        return {"engine": self.engine.to_dict(), "feed": dict(self.feed),
                "p": None if math.isinf(self.p) else self.p, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> FeedCosts:
        """Inverse of `to_dict` (``p`` ``None`` is ``inf``)."""
        p = d.get("p")
        return cls(StepCosts.from_dict(d["engine"]), {k: float(v) for k, v in d["feed"].items()},
                   math.inf if p is None else float(p), dict(d.get("meta") or {}))


def fit_feed_costs(
    samples: Sequence[tuple[SimResult | SimTotals | Mapping[str, Any], float]],
    *,
    feed_samples: Sequence[tuple[SimResult | SimTotals | Mapping[str, Any], float]] = (),
    p_grid: Sequence[float] = P_GRID,
    iterations: int = 50,
    meta: dict[str, Any] | None = None,
) -> FeedCosts:
    """Engine and feed coefficients (and ``p``) that best explain measured job times.

    Each job is either engine-bound or feed-bound; the fit alternates between assigning
    every job to the larger clock and refitting each clock to its jobs (least squares
    on relative errors, coefficients >= 0), from several starting assignments (by the
    fraction of prompt tokens computed), and keeps the best. ``p`` is then the value of
    ``p_grid`` that fits the jobs best.

    Parameters
    ----------
    samples : ``(replay or its totals, measured job seconds)`` pairs (at least 4).
    feed_samples : ``(replay or its totals, measured seconds)`` pairs: the time a job's
        host took to submit every prompt (`ggr_kv.analysis.jobfeed.JobClocks.feed_s` of
        a measured run; ``host_s`` includes the drain). When given, ``submit`` and
        ``tokenize`` are fitted to them alone and ``drain`` is the median of what the
        feed-bound jobs took beyond their feed; else the feed-bound jobs fit ``submit``
        and ``tokenize`` (``drain`` folded into ``submit``, fitted as 0).
    p_grid : candidate sharpness values.
    iterations : at most this many reassignments per start.
    meta : stored in `FeedCosts.meta` with the fit's relative residuals.
    """
    if len(samples) < 4:
        raise ValueError(f"{len(samples)} samples cannot fit an engine and a feed clock")
    Xe, y = sample_matrix(samples, ENGINE_FEATURES)
    Xf, _ = sample_matrix(samples, ("num_requests", "prompt_tokens"))
    known: np.ndarray | None = None
    if feed_samples:
        Xk, yk = sample_matrix(feed_samples, ("num_requests", "prompt_tokens"))
        known = relative_nnls(Xk, yk)
    computed = Xe[:, 1] / np.maximum(Xf[:, 1], 1.0)

    def fit_feed(mask: np.ndarray) -> np.ndarray:
        """(submit, tokenize, drain): from the feed samples and the jobs in ``mask``."""
        if known is not None:  # drain: what the feed-bound jobs took beyond their feed
            n = Xf[mask, 0]
            rest = (y[mask] - Xf[mask] @ known)[n > 0] / n[n > 0]
            d = max(0.0, float(np.median(rest))) if len(rest) else 0.0
            return np.array([known[0], known[1], d])
        c = relative_nnls(Xf[mask], y[mask]) if mask.any() else np.zeros(2)
        return np.array([c[0], c[1], 0.0])

    def state(feedb: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        ce = relative_nnls(Xe[~feedb], y[~feedb])
        cf = fit_feed(feedb)
        pred = np.maximum(Xe @ ce, Xf @ cf[:2] + Xf[:, 0] * cf[2])
        return float(np.sum((pred / y - 1.0) ** 2)), ce, cf

    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for frac in (0.1, 0.3, 0.5, 0.7):
        feedb = computed < frac
        seen: set[bytes] = set()
        for _ in range(iterations):  # the best state visited counts (a split may cycle)
            if (~feedb).sum() < 2 or feedb.tobytes() in seen:
                break
            seen.add(feedb.tobytes())
            cur = state(feedb)
            if best is None or cur[0] < best[0]:
                best = cur
            feedb = Xf @ cur[2][:2] + Xf[:, 0] * cur[2][2] > Xe @ cur[1]
    if best is None:
        raise ValueError("no split of the samples leaves two engine-bound jobs to fit")
    _, ce, cf = best
    if ce[ENGINE_FEATURES.index("prefill_tokens")] <= 0 and \
            ce[ENGINE_FEATURES.index("prefill_attn")] <= 0:
        raise ValueError("the engine-bound samples give prefill no cost: calibrate with an "
                         "uncached prefill job")
    engine = StepCosts({k: float(c) for k, c in zip(ENGINE_FEATURES, ce)})
    feed = {"submit": float(cf[0]), "tokenize": float(cf[1]), "drain": float(cf[2])}
    e_s, f_s = Xe @ ce, Xf @ cf[:2] + Xf[:, 0] * cf[2]
    errs = {p: float(np.sum((_combine(e_s, f_s, p) / y - 1.0) ** 2)) for p in p_grid}
    p = min(errs, key=errs.__getitem__)
    rel = _combine(e_s, f_s, p) / y - 1.0
    info = dict(meta or {})
    info["fit"] = {"samples": len(y), "feed_samples": len(feed_samples),
                   "feed_bound": int((f_s > e_s).sum()),
                   "relative_residuals": [float(r) for r in rel],
                   "max_abs_relative_residual": float(np.abs(rel).max()),
                   "p_errors": {str(k): v for k, v in errs.items()}}
    return FeedCosts(engine, feed, p, info)
