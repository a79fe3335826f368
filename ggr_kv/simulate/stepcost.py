"""Job time from a per-step cost model: every step the simulator schedules, priced.

`ggr_kv.simulate.jobtime` prices a replay's totals with three speeds (uncached prefill,
decode, a fixed per-step cost). That misses what makes highly cached jobs slow: a
cached token is not computed but the chunk behind it still attends to it, a decode
token reads its whole context, and each request costs host work (tokenizing, input
preparation, output processing) whether its prompt hit the cache or not. `StepCosts`
prices each of these, per step of the replay::

    step_s = step + new * prefill_tokens + attn * prefill_attn
             + dec * decode_tokens + dctx * decode_ctx
             + [tokens > graph_tokens] * scheduled * eager_requests
    job_s  = sum(step_s) + request * num_requests + prompt * prompt_tokens + jobs

``eager_requests`` prices each request a step schedules when the step has more tokens
than the engine's largest CUDA graph (``graph_tokens``, 512 in vLLM 0.26 by default):
such steps run without a graph, and their host work (input preparation, kernel
launches, sampling, output processing) grows with the batch (on an H100 with an 8B
model, decode at batch 1,024 cost ~65 ms a step against ~9 ms at batch 128). ``jobs``
is a fixed cost per job (the first prompt in, the last output out).

with the per-step work of `ggr_kv.simulate.SimResult.work` (``prefill_attn``: query x
key token pairs of the prefill chunks; ``decode_ctx``: context tokens read by decode
tokens). The model is linear in its features, so the job's totals
(`ggr_kv.simulate.SimTotals` / ``SimResult.summary``) give the same job time as the sum
over steps. The coefficients are fitted (`fit_step_costs`) to short calibration jobs
run on the engine (`ggr_kv.engine.calibrate.calibrate`), each built to move one
feature: uncached prefill, prefill behind cached contexts of several lengths, decode
at several batch sizes and context lengths.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ggr_kv.core.atomic import write_atomic
from ggr_kv.simulate.api import SimResult, SimTotals
from ggr_kv.simulate.jobtime import _nonnegative_lstsq

__all__ = [
    "DEFAULT_FIT",
    "FEATURES",
    "GRAPH_TOKENS",
    "LEGACY_FIT",
    "StepCostPrediction",
    "StepCosts",
    "features_of",
    "fit_step_costs",
    "load_calibration",
    "relative_nnls",
    "sample_matrix",
    "save_calibration",
    "work_features",
]

#: the model's features: name -> (unit, what it counts); per-step ones come first
FEATURES: dict[str, tuple[str, str]] = {
    "num_steps": ("step", "engine steps"),
    "prefill_tokens": ("token", "prompt tokens computed (not served from the cache)"),
    "prefill_attn": ("pair", "query x key token pairs of the prefill chunks"),
    "decode_tokens": ("token", "decode tokens computed"),
    "decode_ctx": ("token", "context tokens the decode tokens attend to"),
    "num_requests": ("request", "requests (host work per request)"),
    "prompt_tokens": ("token", "prompt tokens sent, cached or not (tokenizing, hashing)"),
    "eager_requests": ("request", "requests scheduled in steps of more than graph_tokens "
                                  "tokens (run without a CUDA graph)"),
    "jobs": ("job", "jobs (first prompt in, last output out)"),
}
#: the features `fit_step_costs` fits by default (``num_requests`` is left out: on a
#: calibration it only moves with the prompt feed, which overlaps the engine's steps)
DEFAULT_FIT: tuple[str, ...] = (
    "num_steps", "prefill_tokens", "prefill_attn", "decode_tokens", "decode_ctx",
    "eager_requests", "prompt_tokens", "jobs",
)
#: the features of the first step-cost model (calibrations before ``eager_requests``)
LEGACY_FIT: tuple[str, ...] = (
    "num_steps", "prefill_tokens", "prefill_attn", "decode_tokens", "decode_ctx",
    "num_requests", "prompt_tokens",
)
#: the largest step (tokens) vLLM 0.26 runs in a CUDA graph by default
GRAPH_TOKENS = 512
#: features that only a replay's per-step work gives (not its totals)
WORK_FEATURES: tuple[str, ...] = ("eager_requests",)
#: the features summed per step (`SimResult.work` columns of the same name)
STEP_FEATURES: tuple[str, ...] = (
    "prefill_tokens", "prefill_attn", "decode_tokens", "decode_ctx",
)


def features_of(sim: SimResult | SimTotals | Mapping[str, Any], *,
                graph_tokens: int = GRAPH_TOKENS) -> dict[str, float]:
    """The model's features (`FEATURES`) of a replay.

    ``sim`` is a `SimResult` (its per-step ``work`` gives `WORK_FEATURES`), a `SimTotals`
    or a summary dict of either (e.g. as saved in a predictions file; `WORK_FEATURES`
    missing from it are NaN: a model that prices them cannot price that replay).
    ``graph_tokens``: the engine's largest CUDA-graph step, tokens."""
    work = None
    if isinstance(sim, SimResult):
        s: Mapping[str, Any] = sim.summary
        work = sim.work if len(sim.work) == int(s["num_steps"]) else None
    elif isinstance(sim, SimTotals):
        s = sim.to_dict()
    else:
        s = sim
    base = [k for k in FEATURES if k not in WORK_FEATURES and k != "jobs"]
    missing = [k for k in base if k not in s]
    if missing:
        raise ValueError(
            f"the replay's totals lack {missing}: replay it with this version of "
            "ggr_kv.simulate (older summaries have no attention/context totals)"
        )
    out = {k: float(s[k]) for k in base}
    out["jobs"] = 1.0
    if work is not None:
        out.update(work_features(work, graph_tokens))
    else:
        out.update({k: float(s[k]) if k in s else math.nan for k in WORK_FEATURES})
    return {k: out[k] for k in FEATURES}


def work_features(work: Any, graph_tokens: int = GRAPH_TOKENS) -> dict[str, float]:
    """`WORK_FEATURES` of a replay's per-step work (`SimResult.work`)."""
    tokens = work["scheduled_tokens"].to_numpy(dtype=np.int64)
    sched = work["num_scheduled"].to_numpy(dtype=np.int64)
    return {"eager_requests": float(sched[tokens > graph_tokens].sum())}


@dataclass
class StepCostPrediction:
    """Predicted job time of one replay.

    Attributes
    ----------
    job_s : predicted seconds of the job (the sum of ``parts``).
    parts : seconds per feature (`FEATURES` names).
    bound : the feature with the largest part.
    features : the replay's totals that were priced.
    step_s : ``(num_steps,)`` predicted seconds of each step (per-request and
        per-prompt-token costs not included) when the replay has per-step work, else
        ``None``.
    """

    job_s: float
    parts: dict[str, float]
    bound: str
    features: dict[str, float]
    step_s: np.ndarray | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (no per-step array)."""
        return {"job_s": self.job_s, "parts": dict(self.parts), "bound": self.bound,
                "features": dict(self.features)}


@dataclass(frozen=True)
class StepCosts:
    """Seconds per unit of each feature of `FEATURES` (all >= 0).

    Attributes
    ----------
    coef : feature name -> seconds per unit (per step, token, pair or request).
    meta : how they were measured (engine, calibration jobs, fit residuals).
    graph_tokens : the engine's largest CUDA-graph step, tokens (``eager_requests``).
    """

    coef: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    graph_tokens: int = GRAPH_TOKENS

    def __post_init__(self) -> None:
        unknown = sorted(set(self.coef) - set(FEATURES))
        if unknown:
            raise ValueError(f"StepCosts: unknown feature(s) {unknown}; known: {list(FEATURES)}")
        for k, v in self.coef.items():
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"StepCosts.coef[{k!r}] must be a finite number >= 0 s, got {v!r}")
        if not any(self.coef.get(k, 0) > 0 for k in ("prefill_tokens", "prefill_attn")):
            raise ValueError("StepCosts: prefill is never free (prefill_tokens or "
                             "prefill_attn must cost > 0 s)")

    def get(self, name: str) -> float:
        return float(self.coef.get(name, 0.0))

    def predict(self, sim: SimResult | SimTotals | Mapping[str, Any]) -> StepCostPrediction:
        """Predicted job time of a replay (see the module docstring)."""
        f = features_of(sim, graph_tokens=self.graph_tokens)
        unknown = [k for k in FEATURES if self.get(k) > 0 and math.isnan(f[k])]
        if unknown:
            raise ValueError(f"this model prices {unknown}, which only a replay's per-step "
                             "work gives: pass the SimResult, not its totals")
        parts = {k: (f[k] * self.get(k) if self.get(k) > 0 else 0.0) for k in FEATURES}
        step_s = None
        if isinstance(sim, SimResult) and len(sim.work) == int(f["num_steps"]):
            w = sim.work
            step_s = np.full(len(w), self.get("num_steps"))
            for k in STEP_FEATURES:
                step_s = step_s + w[k].to_numpy(dtype=np.float64) * self.get(k)
            eager = w["scheduled_tokens"].to_numpy(dtype=np.int64) > self.graph_tokens
            step_s = step_s + (w["num_scheduled"].to_numpy(dtype=np.float64) * eager
                               * self.get("eager_requests"))
        return StepCostPrediction(
            job_s=float(sum(parts.values())),
            parts=parts,
            bound=max(parts, key=parts.__getitem__),
            features=f,
            step_s=step_s,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"coef": dict(self.coef), "units": {k: f"s/{u}" for k, (u, _) in FEATURES.items()},
                "graph_tokens": self.graph_tokens, "meta": self.meta}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepCosts:
        """Inverse of `to_dict`; also accepts a calibration file (its ``step_costs`` key)."""
        if "step_costs" in d:
            d = d["step_costs"]
        if "coef" not in d:
            raise ValueError("not a step-cost calibration: no 'coef' (or 'step_costs') key")
        return cls({k: float(v) for k, v in d["coef"].items()}, dict(d.get("meta") or {}),
                   int(d.get("graph_tokens", GRAPH_TOKENS)))


def fit_step_costs(
    samples: Sequence[tuple[SimResult | SimTotals | Mapping[str, Any], float]],
    *,
    features: Sequence[str] = DEFAULT_FIT,
    meta: dict[str, Any] | None = None,
    graph_tokens: int = GRAPH_TOKENS,
) -> StepCosts:
    """Coefficients that best explain measured job times of replayed jobs.

    Least squares on relative errors (every job weighs the same, whatever its length),
    coefficients >= 0 (every support of the features tried).

    Parameters
    ----------
    samples : ``(replay or its totals, measured seconds)`` pairs; at least as many as
        ``features``.
    features : the features to fit (the others cost 0); `WORK_FEATURES` need replays
        (`SimResult`) or totals that hold them.
    meta : stored in `StepCosts.meta`, with the fit's relative residuals added.
    graph_tokens : the engine's largest CUDA-graph step, tokens.
    """
    feats = list(features)
    unknown = sorted(set(feats) - set(FEATURES))
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; known: {list(FEATURES)}")
    if len(samples) < len(feats):
        raise ValueError(f"{len(samples)} samples cannot fit {len(feats)} features")
    X, y = sample_matrix(samples, feats, graph_tokens=graph_tokens)
    if np.isnan(X).any():
        bad = [k for i, k in enumerate(feats) if np.isnan(X[:, i]).any()]
        raise ValueError(f"features {bad} need the replays' per-step work (SimResult)")
    coef = relative_nnls(X, y)
    rel = X @ coef / y - 1.0
    info = dict(meta or {})
    info["fit"] = {
        "samples": len(y),
        "features": feats,
        "relative_residuals": [float(r) for r in rel],
        "max_abs_relative_residual": float(np.abs(rel).max()),
    }
    return StepCosts({k: float(c) for k, c in zip(feats, coef)}, info, graph_tokens)


def sample_matrix(samples: Sequence[tuple[Any, float]], cols: Sequence[str], *,
                  graph_tokens: int = GRAPH_TOKENS) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: the `features_of` columns ``cols`` of each sample's replay, and its
    measured seconds (each > 0, else a ValueError naming the sample)."""
    feats = [features_of(s, graph_tokens=graph_tokens) for s, _ in samples]
    X = np.array([[f[k] for k in cols] for f in feats], dtype=np.float64).reshape(len(feats), -1)
    y = np.array([float(t) for _, t in samples], dtype=np.float64)
    if (y <= 0).any() or not np.isfinite(y).all():
        bad = int(np.flatnonzero((y <= 0) | ~np.isfinite(y))[0])
        raise ValueError(f"sample {bad}: measured seconds must be > 0, got {y[bad]}")
    return X, y


def relative_nnls(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients >= 0 (s per unit) minimizing the relative errors of ``X @ c`` to ``y``
    (columns scaled first)."""
    scale = np.abs(X).max(axis=0)
    scale[scale == 0] = 1.0
    return _nonnegative_lstsq(X / scale / y[:, None], np.ones_like(y)) / scale


def save_calibration(costs: StepCosts, path: str | Path) -> Path:
    """Write a calibration file (JSON ``{"step_costs": ...}``); never replaces a file."""
    from ggr_kv.core.jsonutil import to_jsonable

    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path}: exists; a calibration is never overwritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"step_costs": to_jsonable(costs.to_dict())}, indent=1),
                 overwrite=False)
    return path


def load_calibration(path: str | Path) -> StepCosts:
    """Read a calibration file written by `save_calibration` (one-line errors)."""
    path = Path(path)
    try:
        return StepCosts.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such calibration file") from None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"{path}: not a calibration file ({e})") from None
