"""Layer 6, running tables through vLLM and keeping the results: `run_table` (one run),
`run_orderings` (several on one engine), run folders (`rundir`) and reading them back
(`runs`)."""

from ggr_kv.run.runner import DEFAULT_MAX_TOKENS, RunResult, restrict_plan, run_orderings, run_table

__all__ = ["DEFAULT_MAX_TOKENS", "RunResult", "restrict_plan", "run_orderings", "run_table"]
