"""Layer 2, predictions without a GPU: vLLM V1's scheduler and block pool replayed on the
exact token ids (`api` builds the inputs, `schedule` is the step loop, `config` holds the
settings), and job time from the replay's work and an engine's throughputs (`jobtime`)."""

from ggr_kv.simulate.api import (
    SIM_REQUEST_COLUMNS,
    SIM_WORK_COLUMNS,
    SimResult,
    SimTotals,
    simulate,
    simulate_plan,
    simulate_totals,
)
from ggr_kv.simulate.config import SchedulerConfig
from ggr_kv.simulate.jobtime import (
    JobTimePrediction,
    SpeedupPrediction,
    Throughputs,
    fit_throughputs,
    ideal_speedup,
    predict_job_time,
    predict_speedup,
)

__all__ = [
    "SIM_REQUEST_COLUMNS",
    "SIM_WORK_COLUMNS",
    "JobTimePrediction",
    "SchedulerConfig",
    "SimResult",
    "SimTotals",
    "SpeedupPrediction",
    "Throughputs",
    "fit_throughputs",
    "ideal_speedup",
    "predict_job_time",
    "predict_speedup",
    "simulate",
    "simulate_plan",
    "simulate_totals",
]
