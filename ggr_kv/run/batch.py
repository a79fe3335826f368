"""Run many runs (datasets x orderings x queries x repeats) on as few engines as possible.

`run_batch` takes a list of `RunSpec` and

1. groups them by engine settings: one engine per group, started once and reused across
   datasets and orderings (a ``no_cache`` run needs prefix caching off: its own group);
   with a caller's ``llm`` or a ``server_url`` every caching run uses that;
2. prepares every run before any engine starts (tables, plans, queries, prompt lengths
   against ``max_model_len``, engine argument names): bad input fails first, naming it;
3. reserves every run folder (atomic ``mkdir``): a run id that is taken fails here,
   before any engine starts;
4. per group: starts the engine (its cold start is recorded in each run), then runs the
   repeats interleaved (repeat 1 of every run, then repeat 2, ...: A B C A B C), the
   prefix cache emptied before each, and writes each run's folder as its last repeat
   ends; stops the engine it started.

A run that fails keeps its folder with ``error.txt``; a run that never started has its
reservation released. ``on_error="continue"`` records a failure and goes on (sweeps);
``"raise"`` stops the batch and raises it. ``on_update`` hears every status change.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ggr_kv.collector.live import live_pass, watch
from ggr_kv.core.paths import project_path
from ggr_kv.engine.config import (
    EngineConfig,
    check_engine_args,
    check_server_url,
    engine_facts,
    make_llm,
    model_max_len,
    server_facts,
    shutdown_llm,
    started_engine,
)
from ggr_kv.engine.errors import cause_line
from ggr_kv.engine.lifetime import interrupted
from ggr_kv.engine.submit import DEFAULT_SUBMIT
from ggr_kv.reorder.registry import NO_CACHE
from ggr_kv.run.execute import EngineHandle, run_stages
from ggr_kv.run.options import BatchOptions
from ggr_kv.run.prepare import (
    EngineContext,
    PreparedRun,
    RunSpec,
    check_sampling,
    finish_plan,
    prepare_run,
)
from ggr_kv.run.record import RepeatOutcome, build_record, engine_meta, sampling_for
from ggr_kv.run.rundir import (
    EngineUse,
    RunRecord,
    check_run_dir_free,
    fail_run_dir,
    mark_interrupted,
    new_run_id,
    release_run_dir,
    reserve_run_dir,
    write_run_files,
)

__all__ = ["EngineGroup", "RunOutcome", "RunResult", "RunSpec", "group_specs", "run_batch"]

#: statuses of a `RunOutcome`
STATUSES = ("pending", "running", "done", "failed", "interrupted", "not_run")


@dataclass
class RunResult:
    """What one run produced; the same numbers are in its run folder.

    Attributes
    ----------
    path : the run folder.
    run_id : its name.
    summary : the collector's summary of the median repeat (prefix-cache hits/queries in
        tokens, 0-1 rates).
    timings : ``reorder_s``, ``engine_start_s``, ``job_s`` (median generate wall time),
        ``total_s``, all seconds.
    outputs : ``row``, ``slot``, ``output`` (+ query-specific columns), ORIGINAL order.
    steps : one row per engine step and repeat (``schema.STEP_COLUMNS`` + resource
        columns + ``repeat``).
    requests : one row per request and repeat (``schema.REQUEST_COLUMNS`` + ``repeat``).
    meta : the ``run.json`` content.
    record : the same as a typed `RunRecord`.
    """

    path: Path
    run_id: str
    summary: dict[str, Any]
    timings: dict[str, float]
    outputs: pd.DataFrame = field(repr=False)
    steps: pd.DataFrame = field(repr=False)
    requests: pd.DataFrame = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict, repr=False)
    record: RunRecord | None = field(default=None, repr=False)

    @property
    def hit_rate(self) -> float:
        """Prefix-cache hit rate of this run: hit tokens / looked-up tokens (0-1)."""
        v = self.summary.get("prefix_cache_hit_rate")
        return float(v) if v is not None else float("nan")


@dataclass
class RunOutcome:
    """What happened to one spec of a batch.

    Attributes
    ----------
    spec, index : the spec and its position in the batch.
    status : ``pending``, ``running``, ``done``, ``failed`` (error.txt in its folder when
        it had one), ``interrupted`` (stopped mid-run; error.txt says so) or ``not_run``
        (never started: its reservation was released).
    run_id, run_dir : the folder, once reserved.
    result : the `RunResult` of a done run.
    error : one line, for a failed, interrupted or not-run spec.
    seconds : wall time spent on it (its repeats and recording), s.
    """

    spec: RunSpec
    index: int
    status: str = "pending"
    run_id: str | None = None
    run_dir: Path | None = None
    result: RunResult | None = None
    error: str | None = None
    seconds: float = 0.0

    def line(self) -> str | None:
        """One log line for a finished spec (done: job time, hits, the counter cross-check;
        failed, interrupted or not run: why); None while pending or running."""
        if self.status == "done" and self.result is not None:
            m = self.result.meta
            rep, c = m["repeats"], m["counters"]
            return (f"{m['dataset']:16s} {m['method']:9s} job {rep['job_s_median']:7.2f} s "
                    f"[{rep['job_s_min']:.2f}-{rep['job_s_max']:.2f}] x{rep['count']} "
                    f"hit {m['summary'].get('prefix_cache_hit_rate')} requests "
                    f"{c['request_cached_tokens']} sim {c['simulated_hits']} mismatch "
                    f"{c['mismatch']} engine start {m['timings']['engine_start_s']:.1f} s")
        if self.status in ("failed", "interrupted", "not_run"):
            return f"{self.status}: {self.run_id or self.spec.method}: {self.error}"
        return None


@dataclass
class EngineGroup:
    """Runs that share one engine.

    Attributes
    ----------
    index : position among the batch's groups (the order engines start in).
    settings : engine settings to start; None to use the caller's ``llm`` or server.
    members : indices of the specs in the batch.
    """

    index: int
    settings: EngineConfig | None
    members: list[int]

    @property
    def key(self) -> str:
        """The settings as a sorted JSON string (what groups runs)."""
        if self.settings is None:
            return "given"
        return json.dumps(dataclasses.asdict(self.settings), sort_keys=True, default=str)


def group_specs(specs: Sequence[RunSpec], *, llm: Any = None,
                server_url: str | None = None) -> list[EngineGroup]:
    """Group specs by the engine they need, in order of first appearance.

    Without ``llm`` / ``server_url``: one group per distinct `RunSpec.engine_settings`.
    With a server: one group (``no_cache`` is refused: a server's caching is fixed).
    With ``llm``: every run uses it, except ``no_cache`` runs when it caches prefixes:
    those get an engine of its settings with caching off.
    """
    if server_url is not None:
        if any(s.caching_off for s in specs):
            raise ValueError(
                "'no_cache' needs an engine with prefix caching off; a server's setting cannot "
                "be changed per run. Run it against a server started with "
                "--no-enable-prefix-caching."
            )
        return [EngineGroup(0, None, list(range(len(specs))))]
    caching = None
    base = None
    if llm is not None:
        caching = bool(engine_facts(llm).get("enable_prefix_caching"))
        started = started_engine(llm)
        base = started.config if started else None
    groups: dict[str, EngineGroup] = {}
    for i, s in enumerate(specs):
        if llm is not None and not (s.caching_off and caching):
            cfg = None
        elif llm is not None:
            cfg = (base or s.engine or EngineConfig()).replace(enable_prefix_caching=False)
        else:
            cfg = s.engine_settings()
        g = EngineGroup(len(groups), cfg, [])
        groups.setdefault(g.key, g).members.append(i)
    return list(groups.values())


# ------------------------------------------------------------------------ stages of a batch


def _context(group: EngineGroup, llm: Any, server_url: str | None) -> EngineContext:
    """What prepare may know about a group's engine before it starts."""
    if server_url is not None:
        facts = server_facts(server_url)  # a dead URL fails here, before any work
        return EngineContext(facts.get("model"), facts.get("max_model_len"),
                             facts.get("block_size"), "server")
    if group.settings is None:
        facts = engine_facts(llm)
        return EngineContext(facts["model"], facts["max_model_len"], facts["block_size"], "engine")
    cfg = group.settings
    model, _ = cfg.resolve_model()  # a wrong model fails here, naming it
    return EngineContext(model, cfg.max_model_len or model_max_len(model), cfg.block_size,
                         "settings")


class _Batch:
    """The state of one `run_batch` call (see its docstring)."""

    def __init__(self, specs: list[RunSpec], out: Path, llm: Any, server_url: str | None,
                 options: dict[str, Any], on_update: Callable[[RunOutcome], None] | None):
        self.specs, self.out, self.llm, self.url = specs, out, llm, server_url
        self.opt = options
        self.on_update = on_update
        self.outcomes = [RunOutcome(s, i) for i, s in enumerate(specs)]
        self.preps: dict[int, PreparedRun] = {}
        self.repeats: dict[int, list[RepeatOutcome]] = {}
        self.t0 = time.perf_counter()

    # -- status ---------------------------------------------------------------------
    def set(self, i: int, status: str, error: str | None = None) -> None:
        o = self.outcomes[i]
        o.status = status
        if error is not None:
            o.error = error
        if self.on_update is not None:
            self.on_update(o)

    def fail(self, i: int, exc: BaseException | str, status: str = "failed") -> None:
        """Close run ``i`` unfinished: error.txt in its folder if it started (the folder
        stays), else its reservation is released."""
        prep = self.preps.get(i)
        if interrupted() and status in ("failed", "not_run"):  # an error caused by Ctrl-C
            status, exc = "interrupted", f"interrupted (SIGINT): {_line(exc)}"
        started = bool(self.repeats.pop(i, None)) or self.outcomes[i].status == "running"
        if prep is not None and prep.folder is not None:
            if started:
                fail_run_dir(prep.folder, exc)
                if status == "interrupted":  # the id is free for a retry
                    mark_interrupted(prep.folder, str(exc))
            elif not release_run_dir(prep.folder):  # it holds more (an engine log): keep it
                fail_run_dir(prep.folder, exc)
                if "interrupted" in str(exc):
                    mark_interrupted(prep.folder, str(exc))
        self.set(i, status, _line(exc))

    def abandon(self, reason: str, status: str) -> None:
        """Close every run that has not finished (``reason`` in error.txt / outcome)."""
        for o in self.outcomes:
            if o.status in ("pending", "running"):
                started = bool(self.repeats.get(o.index)) or o.status == "running"
                if started:
                    self.fail(o.index, reason, status)
                else:
                    self.fail(o.index, f"not started: {reason}", "not_run")

    # -- steps ----------------------------------------------------------------------
    def prepare(self, groups: list[EngineGroup]) -> None:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(self.specs), desc="prepare", unit="run",
                   disable=not self.opt["progress"] or len(self.specs) < 2)
        try:
            for g in groups:
                self._prepare_group(g, bar)
        finally:
            bar.close()

    def _prepare_group(self, g: EngineGroup, bar: Any) -> None:
        try:
            ctx = _context(g, self.llm, self.url)
        except Exception as e:
            if not self.opt["continue"]:
                raise
            for i in g.members:
                self.set(i, "failed", _line(e))
            bar.update(len(g.members))
            return
        for i in g.members:
            bar.set_postfix_str(f"{self.specs[i].dataset or ''} {self.specs[i].method}")
            try:
                self.preps[i] = prepare_run(self.specs[i], ctx, i)
            except Exception as e:
                if not self.opt["continue"]:
                    raise
                self.set(i, "failed", _line(e))
            bar.update(1)
        if any(i in self.preps for i in g.members):
            self._check_vllm_args(g)

    def _check_vllm_args(self, g: EngineGroup) -> None:
        """Engine argument names and sampling settings, against the installed vLLM."""
        try:
            if g.settings is not None:
                check_engine_args(g.settings)
        except Exception as e:
            if not self.opt["continue"]:
                raise
            for i in g.members:
                if self.preps.pop(i, None) is not None:
                    self.set(i, "failed", _line(e))
            return
        for i in [i for i in g.members if i in self.preps]:
            try:
                check_sampling(self.preps[i])
            except Exception as e:
                if not self.opt["continue"]:
                    raise
                self.preps.pop(i)
                self.set(i, "failed", _line(e))

    def reserve(self) -> None:
        taken = {s.run_id for s in self.specs if s.run_id}
        for i, prep in sorted(self.preps.items()):
            run_id = prep.spec.run_id or new_run_id(prep.dataset, prep.method, self.out, taken=taken)
            taken.add(run_id)
            try:
                prep.folder = reserve_run_dir(self.out, run_id)
            except Exception as e:
                if not self.opt["continue"]:
                    for p in self.preps.values():
                        if p.folder is not None:
                            release_run_dir(p.folder)
                    raise
                self.set(i, "failed", _line(e))
                continue
            prep.run_id = run_id
            self.outcomes[i].run_id, self.outcomes[i].run_dir = run_id, prep.folder

    def run_groups(self, groups: list[EngineGroup]) -> None:
        from ggr_kv.run.progress import RunBars

        ready = [p for _, p in sorted(self.preps.items()) if p.folder is not None]
        bars = RunBars([(str(p.run_id), _label(p, ready), p.spec.repeats, _prompts(p))
                        for p in ready], enabled=self.opt["progress"])
        with watch(bars, interval_s=bars.interval_s):
            for g in groups:
                members = [i for i in g.members if self.outcomes[i].status == "pending"]
                if members:
                    self._run_group(g, members)

    def _out_of_time(self) -> bool:
        limit = self.opt["stop_after_s"]
        return limit is not None and time.perf_counter() - self.t0 > limit

    def _start(self, g: EngineGroup) -> tuple[Any, bool]:
        if g.settings is None:
            return self.llm, False
        return make_llm(g.settings), True

    def _run_group(self, g: EngineGroup, members: list[int]) -> None:
        if self._out_of_time():
            for i in members:
                self.fail(i, "not run: the batch's time budget (stop_after_s) ran out", "not_run")
            return
        try:
            llm, owned = self._start(g)
        except Exception as e:
            for i in members:  # the cause on one line, found in the engine's log if saved
                log = _engine_log(self.preps[i].folder if i in self.preps else None)
                why = cause_line(e, log.read_text(errors="replace") if log else None,
                                 str(log) if log else None)
                self.fail(i, f"engine did not start: {why}", "failed")
            if not self.opt["continue"]:
                raise
            return
        try:
            self._group_repeats(g, members, llm, owned)
        finally:
            if owned:
                shutdown_llm(llm)

    def _group_repeats(self, g: EngineGroup, members: list[int], llm: Any, owned: bool) -> None:
        em = engine_meta(llm, self.url, g.settings)
        handle = EngineHandle(llm, self.url, em.facts.get("served_model"),
                              self.opt["max_concurrency"], False,  # `RunBars` instead
                              self.opt.get("submit", DEFAULT_SUBMIT))
        ctx = EngineContext(em.facts.get("model"), em.facts.get("max_model_len"),
                            em.facts.get("block_size"), "engine")
        active = []
        for i in members:
            try:
                finish_plan(self.preps[i], ctx)
                active.append(i)
            except Exception as e:
                self.fail(i, e)
                if not self.opt["continue"]:
                    raise
        use = {i: EngineUse(em.engine_id or (self.url or None), owned, em.start_s, g.index,
                            len(members), -1) for i in active}
        position = 0
        for r in range(1, max((self.preps[i].spec.repeats for i in active), default=0) + 1):
            for i in [i for i in active if self.preps[i].spec.repeats >= r]:
                if self.outcomes[i].status not in ("pending", "running"):
                    continue
                if self._out_of_time():
                    self._finish_early(i, em, use[i])
                    continue
                if use[i].position < 0:
                    use[i].position = position
                self._one_repeat(i, r, position, handle, em, use[i])
                position += 1
        for i in active:
            if self.outcomes[i].status == "running":
                self._finish_early(i, em, use[i])

    def _one_repeat(self, i: int, r: int, position: int, handle: EngineHandle, em: Any,
                    use: EngineUse) -> None:
        prep = self.preps[i]
        if self.outcomes[i].status == "pending":
            self.set(i, "running")
        t0 = time.perf_counter()
        try:
            reset = handle.reset() if self.opt["reset"] else False
            salted = prep.method == NO_CACHE and prep.spec.no_cache_by == "salt"
            handle.salt = f"{prep.run_id}-r{r}" if salted else None
            try:
                with live_pass(str(prep.run_id), prep.method, r, prep.spec.repeats,
                               _prompts(prep)):
                    staged = run_stages(prep.table, prep.plan, prep.query, prep.instruction,
                                        handle, sampling_for(prep, em))
            finally:
                handle.salt = None
            self.repeats.setdefault(i, []).append(
                RepeatOutcome(r, position, staged, reset, time.perf_counter() - t0))
            self.outcomes[i].seconds += time.perf_counter() - t0
            if r == prep.spec.repeats:
                self._record(i, em, use)
        except Exception as e:
            self.fail(i, e)
            if not self.opt["continue"]:
                raise

    def _finish_early(self, i: int, em: Any, use: EngineUse) -> None:
        if self.repeats.get(i):
            self._record(i, em, use)  # fewer repeats than asked: the record says so
        else:
            self.fail(i, "not run: the batch's time budget (stop_after_s) ran out", "not_run")

    def _record(self, i: int, em: Any, use: EngineUse) -> None:
        t0 = time.perf_counter()
        prep = self.preps[i]
        files = build_record(prep, self.repeats[i], em, use, server_url=self.url,
                             max_concurrency=self.opt["max_concurrency"],
                             predict=self.opt["predict"], progress=self.opt["progress"])
        write_run_files(prep.folder, files.record, steps=files.steps, requests=files.requests,
                        outputs=files.outputs, plan=prep.plan)
        meta = files.record.to_dict()
        o = self.outcomes[i]
        o.result = RunResult(prep.folder, str(prep.run_id), files.record.summary,
                             dict(meta["timings"]), files.outputs, files.steps, files.requests,
                             meta, files.record)
        o.seconds += time.perf_counter() - t0
        self.repeats.pop(i, None)  # free the tables: they are on disk now
        prep.tokens = None
        self.set(i, "done")


def _prompts(prep: PreparedRun) -> int:
    """Prompts in one pass of a prepared run (its first stage)."""
    return len(prep.plan.row_order) if prep.plan is not None else prep.table.n_rows


def _label(prep: PreparedRun, ready: list[PreparedRun]) -> str:
    """A run's name on its progress bar: the ordering, with the dataset when several."""
    several = len({p.dataset for p in ready}) > 1
    return f"{prep.dataset} {prep.method}" if several else prep.method


def _engine_log(folder: Path | None) -> Path | None:
    """The vLLM log saved in a run folder (``*.log``), if any."""
    logs = sorted(folder.glob("*.log")) if folder is not None and folder.is_dir() else []
    return logs[0] if logs else None


def _line(exc: BaseException | str) -> str:
    if not isinstance(exc, BaseException):
        return str(exc)
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _check_specs(specs: list[RunSpec], out: Path, on_error: str) -> None:
    if not specs:
        raise ValueError("no runs given")
    ids = [s.run_id for s in specs if s.run_id]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"run ids {dup} are given to more than one run")
    if on_error == "raise":
        for run_id in ids:
            check_run_dir_free(out, run_id)  # fail before any slow work


def run_batch(
    specs: Sequence[RunSpec], options: BatchOptions | None = None, **option_fields: Any
) -> list[RunOutcome]:
    """Run every spec, grouped onto as few engines as their settings allow.

    Parameters
    ----------
    specs : the runs (`RunSpec`); each becomes one run folder holding all its repeats.
    options, **option_fields : how (`ggr_kv.run.options.BatchOptions`: ``out_dir``,
        ``llm``, ``server_url``, ``max_concurrency``, ``submit``, ``reset_prefix_cache``,
        ``predict``, ``progress``, ``on_error``, ``on_update``, ``stop_after_s``,
        ``executor``), as an
        object and/or by name.

    Returns
    -------
    One `RunOutcome` per spec, in spec order.
    """
    o = BatchOptions.of(options, **option_fields)
    llm, server_url, on_update = o.llm, o.server_url, o.on_update
    specs = list(specs)
    out = project_path(o.out_dir)
    server_url = check_server_url(server_url) if server_url else None
    _check_specs(specs, out, o.on_error)
    if o.executor is not None and not o.executor.local:  # engines elsewhere: it runs the batch
        return o.executor.run(specs, out_dir=out, on_update=on_update)
    options = {"continue": o.on_error == "continue", "progress": o.progress,
               "reset": o.reset_prefix_cache, "max_concurrency": o.max_concurrency,
               "predict": o.predict, "stop_after_s": o.stop_after_s, "submit": o.submit}
    batch = _Batch(specs, out, llm, server_url, options, on_update)
    groups = group_specs(specs, llm=llm, server_url=server_url)
    batch.prepare(groups)
    try:
        batch.reserve()
        batch.run_groups(groups)
    except KeyboardInterrupt:
        batch.abandon("interrupted (KeyboardInterrupt) before the run completed", "interrupted")
        raise
    except BaseException as e:
        batch.abandon(f"not completed: the batch stopped on {_line(e)}", "failed")
        raise
    return batch.outcomes
