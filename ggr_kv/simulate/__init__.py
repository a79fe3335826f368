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

__all__ = [
    "SIM_REQUEST_COLUMNS",
    "SIM_WORK_COLUMNS",
    "SchedulerConfig",
    "SimResult",
    "SimTotals",
    "simulate",
    "simulate_plan",
    "simulate_totals",
]
