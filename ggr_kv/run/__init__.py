"""Layer 6, running tables through vLLM and keeping the results.

`run_table` (one run), `run_orderings` (several orderings of one table) and `run_batch`
(any runs, grouped onto few engines, with repeats; how: `BatchOptions`) in three steps: prepare
(`ggr_kv.run.prepare`, no engine), execute (`ggr_kv.run.execute`), record
(`ggr_kv.run.record`, a `RunRecord`). Run folders: `ggr_kv.run.rundir`; reading them back:
`ggr_kv.run.runs`.
"""

from ggr_kv.run.batch import RunOutcome, RunResult, run_batch
from ggr_kv.run.options import BatchOptions
from ggr_kv.run.prepare import DEFAULT_MAX_TOKENS, RunSpec, restrict_plan
from ggr_kv.run.rundir import RunRecord, read_record
from ggr_kv.run.runner import run_orderings, run_table

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "BatchOptions",
    "RunOutcome",
    "RunRecord",
    "RunResult",
    "RunSpec",
    "read_record",
    "restrict_plan",
    "run_batch",
    "run_orderings",
    "run_table",
]
