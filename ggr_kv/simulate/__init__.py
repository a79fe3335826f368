"""Layer 2, predictions without a GPU: vLLM V1's scheduler and block pool replayed on the
exact token ids (`api` builds the inputs, `schedule` is the step loop)."""

from ggr_kv.simulate.api import SIM_REQUEST_COLUMNS, SimResult, simulate, simulate_plan

__all__ = ["SIM_REQUEST_COLUMNS", "SimResult", "simulate", "simulate_plan"]
