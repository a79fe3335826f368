"""How long a measured offline job took to hand its prompts to the engine.

``LLM.generate`` submits every prompt before it reads the first output, so the first
time the frontend received a step (``t_recv_s`` of the first step with outputs, s since
the job started) is when the last prompt was submitted: the job's feed time. Comparing
it with the engine's last step (``t_s``) and the job's wall time says which clock the
job waited for (`ggr_kv.simulate.feedtime`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["JobClocks", "job_clocks"]


@dataclass(frozen=True)
class JobClocks:
    """Where the time of one measured job went (s since the job started).

    Attributes
    ----------
    feed_s : when the last prompt was submitted (first output received).
    engine_end_s : the engine's last step with work.
    job_s : the job's wall time.
    steps : engine steps with work.
    steps_during_feed : of those, steps before ``feed_s``.
    max_waiting : most requests waiting in any step (0: the engine was never behind).
    """

    feed_s: float
    engine_end_s: float
    job_s: float
    steps: int
    steps_during_feed: int
    max_waiting: int

    @property
    def host_s(self) -> float:
        """The host's own clock: the feed, plus the time the job went on after both the
        feed and the engine were done (outputs processed after the last submission)."""
        return self.feed_s + max(0.0, self.job_s - max(self.feed_s, self.engine_end_s))

    @property
    def bound(self) -> str:
        """``"feed"`` when the engine's last step came within max(0.3 s, 10% of the job)
        of the last submission (the engine kept up with the prompts), else ``"engine"``."""
        return "feed" if self.engine_end_s - self.feed_s < max(0.3, 0.1 * self.job_s) \
            else "engine"


def job_clocks(steps: pd.DataFrame, job_s: float) -> JobClocks:
    """`JobClocks` of one run's step table (``steps.parquet`` of a run folder)."""
    need = {"t_s", "t_recv_s", "num_outputs", "prompt_tokens", "generation_tokens",
            "prefix_queries", "num_waiting"}
    missing = sorted(need - set(steps.columns))
    if missing:
        raise ValueError(f"the step table lacks {missing} (recorded by the offline collector)")
    work = (steps["prompt_tokens"] + steps["generation_tokens"] + steps["prefix_queries"]) > 0
    act = steps[work]
    out = steps[steps["num_outputs"].fillna(0) > 0]
    if act.empty or out.empty:
        raise ValueError("the step table has no step with work and outputs")
    feed = float(out["t_recv_s"].min())
    t = act["t_s"].to_numpy(dtype=np.float64)
    most = steps["num_waiting"].max()  # NaN-skipping; NaN when no step recorded it
    return JobClocks(feed_s=feed, engine_end_s=float(t.max()), job_s=float(job_s),
                     steps=len(act), steps_during_feed=int((t < feed).sum()),
                     max_waiting=0 if pd.isna(most) else int(most))
