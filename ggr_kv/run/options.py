"""How a batch of runs is carried out: `BatchOptions`, the one options object of
`run_batch`, `run_table` and `run_orderings` (what each run is: ``RunSpec``).

Each of those functions takes ``options=BatchOptions(...)`` and/or the same fields as
keywords (``run_batch(specs, out_dir="results", progress=False)``); `split_settings`
sorts a call's keywords into ``RunSpec`` fields and options, and names any other.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ggr_kv.engine.submit import DEFAULT_SUBMIT, check_submit
from ggr_kv.run.prepare import RunSpec

__all__ = ["BatchOptions", "split_settings"]


@dataclass(frozen=True, kw_only=True)
class BatchOptions:
    """How runs are carried out (every field has a default).

    Attributes
    ----------
    out_dir : folder of run folders (relative: to the project folder).
    llm : a running ``vllm.LLM`` for every caching run (left running); None starts one
        engine per engine setting (stopped afterwards).
    server_url : base URL of a running vLLM server for every run instead: prompts go to
        ``/v1/completions``, the collector scrapes ``/metrics``.
    max_concurrency : server requests in flight (>= 1).
    submit : how an offline engine gets the prompts: ``"ids"`` (default: token ids made
        by the engine's own tokenizer before each job's timer starts, the seconds kept
        as ``tokenize_s``) or ``"text"`` (vLLM tokenizes inside the job time, the way a
        caller handing vLLM strings sees it). Hits and outputs are the same; highly
        cached jobs run faster with ids (`ggr_kv.engine.submit`). A server gets text.
    reset_prefix_cache : empty the prefix cache before every repeat, so hits come from
        that repeat only.
    predict : simulate each run and record collector, request and simulator hit counts
        side by side (``counters`` in run.json).
    progress : tqdm bars.
    on_error : ``"raise"`` (stop and raise; finished runs stay) or ``"continue"`` (record
        the failure, go on).
    on_update : called with a ``RunOutcome`` at every status change.
    stop_after_s : start no repeat after this many seconds; runs cut short record the
        repeats they have.
    executor : where the engines live (a `ggr_kv.run.executors.Executor`): None or a
        local one is this process; ``"replicas"`` and ``"ray"`` split every run over
        several engines (one run folder each, with ``sharded.json``).
    """

    out_dir: str | Path = "results"
    llm: Any = None
    server_url: str | None = None
    max_concurrency: int = 32
    submit: str = DEFAULT_SUBMIT
    reset_prefix_cache: bool = True
    predict: bool = True
    progress: bool = True
    on_error: str = "raise"
    on_update: Callable[[Any], None] | None = None
    stop_after_s: float | None = None
    executor: Any = None

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "continue"):
            raise ValueError(f"on_error must be 'raise' or 'continue', got {self.on_error!r}")
        if self.server_url is not None and self.llm is not None:
            raise ValueError("give either llm (an offline engine) or server_url, not both")
        if self.max_concurrency < 1:
            raise ValueError(f"max_concurrency must be at least 1, got {self.max_concurrency}")
        check_submit(self.submit)
        ex = self.executor
        if ex is not None and not ex.local and (self.llm is not None or self.server_url):
            raise ValueError(f"executor {ex.kind!r} starts its own engines; give no llm or "
                             "server_url")
        if self.server_url:
            object.__setattr__(self, "server_url", self.server_url.rstrip("/"))

    @classmethod
    def of(cls, options: BatchOptions | None = None, **fields: Any) -> BatchOptions:
        """``options`` (default: all defaults) with ``fields`` replaced.

        Raises
        ------
        TypeError
            a field that is not an option (named, with the valid ones).
        """
        unknown = sorted(set(fields) - _names(cls))
        if unknown:
            raise TypeError(f"unknown option(s) {unknown}; BatchOptions fields: "
                            f"{sorted(_names(cls))}")
        base = options if options is not None else cls()
        return dataclasses.replace(base, **fields) if fields else base


def _names(cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def split_settings(
    settings: Mapping[str, Any], options: BatchOptions | None = None,
    *, fixed: tuple[str, ...] = (),
) -> tuple[dict[str, Any], BatchOptions]:
    """Sort a call's keywords into `RunSpec` fields (what to run) and `BatchOptions`
    (how), ``options`` as the base of the latter.

    Raises
    ------
    TypeError
        a keyword that is neither, or one of ``fixed`` (spec fields the caller sets).
    """
    spec_names = _names(RunSpec) - set(fixed)
    opt_names = _names(BatchOptions)
    unknown = sorted(k for k in settings if k not in spec_names and k not in opt_names)
    if unknown:
        raise TypeError(f"unknown setting(s) {unknown}; run settings (RunSpec): "
                        f"{sorted(spec_names)}; options (BatchOptions): {sorted(opt_names)}")
    spec = {k: v for k, v in settings.items() if k in spec_names}
    opts = BatchOptions.of(options, **{k: v for k, v in settings.items() if k in opt_names})
    return spec, opts
