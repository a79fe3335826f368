"""Job time from a per-step cost model: every step the simulator schedules, priced.

`ggr_kv.simulate.jobtime` prices a replay's totals with three speeds (uncached prefill,
decode, a fixed per-step cost). That misses what makes highly cached jobs slow: a
cached token is not computed but the chunk behind it still attends to it, a decode
token reads its whole context, and each request costs host work (tokenizing, input
preparation, output processing) whether its prompt hit the cache or not. `StepCosts`
prices each of these, per step of the replay::

    step_s = step + new * prefill_tokens + attn * prefill_attn
             + dec * decode_tokens + dctx * decode_ctx
    job_s  = sum(step_s) + request * num_requests + prompt * prompt_tokens

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
    "FEATURES",
    "StepCostPrediction",
    "StepCosts",
    "features_of",
    "fit_step_costs",
    "load_calibration",
    "relative_nnls",
    "sample_matrix",
    "save_calibration",
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
}
#: the features summed per step (`SimResult.work` columns of the same name)
STEP_FEATURES: tuple[str, ...] = (
    "prefill_tokens", "prefill_attn", "decode_tokens", "decode_ctx",
)


def features_of(sim: SimResult | SimTotals | Mapping[str, Any]) -> dict[str, float]:
    """The model's features (`FEATURES`) of a replay, from its totals.

    ``sim`` is a `SimResult`, a `SimTotals` or a summary dict of either (e.g. as saved in
    a predictions file)."""
    if isinstance(sim, SimResult):
        s: Mapping[str, Any] = sim.summary
    elif isinstance(sim, SimTotals):
        s = sim.to_dict()
    else:
        s = sim
    missing = [k for k in FEATURES if k not in s]
    if missing:
        raise ValueError(
            f"the replay's totals lack {missing}: replay it with this version of "
            "ggr_kv.simulate (older summaries have no attention/context totals)"
        )
    return {k: float(s[k]) for k in FEATURES}


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
    """

    coef: dict[str, float]
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

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
        f = features_of(sim)
        parts = {k: f[k] * self.get(k) for k in FEATURES}
        step_s = None
        if isinstance(sim, SimResult) and len(sim.work) == int(f["num_steps"]):
            w = sim.work
            step_s = np.full(len(w), self.get("num_steps"))
            for k in STEP_FEATURES:
                step_s = step_s + w[k].to_numpy(dtype=np.float64) * self.get(k)
        return StepCostPrediction(
            job_s=float(sum(parts.values())),
            parts=parts,
            bound=max(parts, key=parts.__getitem__),
            features=f,
            step_s=step_s,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"coef": dict(self.coef), "units": {k: f"s/{u}" for k, (u, _) in FEATURES.items()},
                "meta": self.meta}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> StepCosts:
        """Inverse of `to_dict`; also accepts a calibration file (its ``step_costs`` key)."""
        if "step_costs" in d:
            d = d["step_costs"]
        if "coef" not in d:
            raise ValueError("not a step-cost calibration: no 'coef' (or 'step_costs') key")
        return cls({k: float(v) for k, v in d["coef"].items()}, dict(d.get("meta") or {}))


def fit_step_costs(
    samples: Sequence[tuple[SimResult | SimTotals | Mapping[str, Any], float]],
    *,
    features: Sequence[str] = tuple(FEATURES),
    meta: dict[str, Any] | None = None,
) -> StepCosts:
    """Coefficients that best explain measured job times of replayed jobs.

    Least squares on relative errors (every job weighs the same, whatever its length),
    coefficients >= 0 (every support of the features tried).

    Parameters
    ----------
    samples : ``(replay or its totals, measured seconds)`` pairs; at least as many as
        ``features``.
    features : the features to fit (the others cost 0).
    meta : stored in `StepCosts.meta`, with the fit's relative residuals added.
    """
    feats = list(features)
    unknown = sorted(set(feats) - set(FEATURES))
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; known: {list(FEATURES)}")
    if len(samples) < len(feats):
        raise ValueError(f"{len(samples)} samples cannot fit {len(feats)} features")
    X, y = sample_matrix(samples, feats)
    coef = relative_nnls(X, y)
    rel = X @ coef / y - 1.0
    info = dict(meta or {})
    info["fit"] = {
        "samples": len(y),
        "features": feats,
        "relative_residuals": [float(r) for r in rel],
        "max_abs_relative_residual": float(np.abs(rel).max()),
    }
    return StepCosts({k: float(c) for k, c in zip(feats, coef)}, info)


def sample_matrix(samples: Sequence[tuple[Any, float]],
                  cols: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(X, y)``: the `features_of` columns ``cols`` of each sample's replay, and its
    measured seconds (each > 0, else a ValueError naming the sample)."""
    feats = [features_of(s) for s, _ in samples]
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
