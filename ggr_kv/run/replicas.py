"""Data parallelism that keeps prefix groups together: N engine replicas, one shard each.

With vLLM data parallelism every replica has its own prefix cache, and vLLM balances
requests by load, not by prefix (its offline ``LLM`` takes no per-request routing in
0.26-0.33). So `run_sharded` splits the run order itself (`ggr_kv.reorder.shard`: prefix
groups whole, replicas balanced by uncached tokens; or the round-robin / contiguous
baselines), starts one engine process per replica pinned to its device
(``CUDA_VISIBLE_DEVICES``; on a CPU machine its own cores through
``VLLM_CPU_OMP_THREADS_BIND``), waits until every engine is warm, starts them together
(a barrier per repeat, so job times are concurrent wall time, engine starts excluded),
and maps the outputs back to the original rows.

Each replica writes an ordinary run folder (``<run>/replica-<k>-r<repeat>/``, readable
with `ggr_kv.run.runs.load_runs`); ``<run>/sharded.json`` holds the split, each replica's
rows, uncached tokens (predicted and measured), hits and job time, and the job time of
every repeat (first start to last end). Several hosts: give each host's replicas to
vLLM's Ray backend (``EngineConfig(extra={"distributed_executor_backend": "ray"})``) or
run one `run_sharded` process per host on its shards; the split is the same.
"""

from __future__ import annotations

import json
import os
import pickle
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ggr_kv.core.atomic import write_atomic
from ggr_kv.core.jsonutil import dumps
from ggr_kv.core.paths import project_path
from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.prompts import DEFAULT_INSTRUCTION, encode_prompts
from ggr_kv.engine.config import EngineConfig
from ggr_kv.engine.lifetime import exit_with
from ggr_kv.engine.memory import has_gpu
from ggr_kv.reorder.shard import Sharding, shard_order
from ggr_kv.run.prepare import _as_plan, _as_table, as_query, restrict_plan
from ggr_kv.run.rundir import new_run_id, reserve_run_dir

__all__ = [
    "ReplicaRun", "ShardJob", "ShardedRun", "replica_devices", "run_sharded", "run_sharded_many",
    "split_job", "write_sharded",
]

#: seconds a replica may take to start its engine before the run gives up
START_TIMEOUT_S = 1800.0


@dataclass
class ReplicaRun:
    """One replica's share of one repeat.

    Attributes
    ----------
    replica, repeat : indices (from 0 and 1).
    device : what it ran on (``CUDA_VISIBLE_DEVICES`` value, or CPU cores).
    rows : prompts it ran.
    run_dir : its run folder.
    start_s, end_s : its generate window, seconds after the repeat's common start.
    job_s : its generate wall time (s).
    prompt_tokens, prefix_cache_hits, prefix_cache_queries : tokens.
    uncached_tokens : prompt tokens it computed (requests' prompt minus cached tokens).
    predicted_uncached_tokens : what the split predicted for it (unbounded cache).
    """

    replica: int
    repeat: int
    device: str
    rows: int
    run_dir: str
    start_s: float
    end_s: float
    job_s: float
    prompt_tokens: int | None
    prefix_cache_hits: int | None
    prefix_cache_queries: int | None
    uncached_tokens: int | None
    predicted_uncached_tokens: int


@dataclass
class ShardedRun:
    """What `run_sharded` produced (also in ``<path>/sharded.json``).

    Attributes
    ----------
    path : the run's folder (one run folder per replica and repeat inside).
    how, n_replicas : the split.
    job_s : per repeat, first common start to the last replica's end (s).
    job_s_median : their median (s).
    balance : median over repeats of slowest / mean replica job time.
    replicas : every replica of every repeat.
    outputs : ``row`` (original position), ``replica``, ``output`` of the median repeat.
    meta : the split, devices, engine settings, predictions.
    """

    path: Path
    how: str
    n_replicas: int
    job_s: list[float]
    job_s_median: float
    balance: float
    replicas: list[ReplicaRun] = field(repr=False)
    outputs: pd.DataFrame = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def hit_rate(self) -> float:
        """Hits over queries summed over the replicas of every repeat (0-1)."""
        h = sum(r.prefix_cache_hits or 0 for r in self.replicas)
        q = sum(r.prefix_cache_queries or 0 for r in self.replicas)
        return h / q if q else float("nan")


def replica_devices(n: int) -> tuple[list[str], str]:
    """One device per replica and what they are: ``(["0", "1"], "gpu")`` when this machine
    has ``n`` NVIDIA GPUs, else the CPU cores split into ``n`` sets (``"cpu"``)."""
    from ggr_kv.engine.resources import probe_gpus

    probe = probe_gpus()
    try:
        gpus = list(probe.indices)
    finally:
        probe.shutdown()
    if len(gpus) >= n:
        return [str(i) for i in gpus[:n]], "gpu"
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if len(cores) < n:
        raise ValueError(f"{n} replicas need {n} GPUs or CPU cores; this machine has "
                         f"{len(gpus)} GPU(s) and {len(cores)} core(s)")
    return [",".join(map(str, part)) for part in np.array_split(cores, n)], "cpu"


def _tokens(table, plan, query, instruction: str, engine: EngineConfig):
    from ggr_kv.core.tokenizer import load_tokenizer

    model, _ = engine.resolve_model()
    return encode_prompts(table, plan, load_tokenizer(model), query.stages[0].text, instruction)


def _launch(k: int, folder: Path, spec: dict, device: str, kind: str) -> subprocess.Popen:
    path = folder / f".replica-{k}.pkl"
    write_atomic(path, pickle.dumps(spec))
    env = dict(os.environ)
    if kind == "gpu":
        env["CUDA_VISIBLE_DEVICES"] = device
    else:
        env["VLLM_CPU_OMP_THREADS_BIND"] = device  # this replica's cores
    log = open(folder / f"replica-{k}.log", "w", encoding="utf-8")  # noqa: SIM115 - child owns it
    return subprocess.Popen([sys.executable, "-m", "ggr_kv.run.replicas", str(path)],
                            env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=exit_with(os.getpid()))  # dies with us


def _wait_for(paths: list[Path], procs: list[subprocess.Popen], folder: Path,
              timeout_s: float, what: str) -> None:
    """Wait until every path exists; a replica that exits first fails the run."""
    t0 = time.monotonic()
    while not all(p.exists() for p in paths):
        for k, p in enumerate(procs):
            if p.poll() is not None and not paths[k].exists():
                tail = (folder / f"replica-{k}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"replica {k} exited ({p.returncode}) before {what}; "
                                   f"its log ends:\n{tail}")
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"replicas not {what} after {timeout_s:.0f} s: see {folder}")
        time.sleep(0.05)


def _replica_rows(sharding: Sharding, plan) -> list[np.ndarray]:
    return [np.sort(plan.row_order[s.slots]) for s in sharding.shards]


@dataclass
class ShardJob:
    """One ordering of one table to split over the replicas (see `run_sharded`)."""

    table: Any
    plan: Any = None
    query: Any = ""
    how: str = "groups"
    method: str | None = None
    run_id: str | None = None
    sampling: dict[str, Any] | None = None
    instruction: str = DEFAULT_INSTRUCTION
    dataset: str | None = None  # label for the records (default: the table's name)


def run_sharded(table: Any, plan: Any = None, query: Any = "", *, how: str = "groups",
                method: str | None = None, run_id: str | None = None,
                sampling: dict[str, Any] | None = None,
                instruction: str = DEFAULT_INSTRUCTION, **kw: Any) -> ShardedRun:
    """Run one ordering over ``n_replicas`` engines, each its shard, concurrently.

    Parameters
    ----------
    table, plan, query, instruction, sampling : as `ggr_kv.run.run_table` (``plan`` is a
        ready plan or ``reorder()`` result; None runs the input order).
    how : ``"groups"``, ``"round_robin"`` or ``"contiguous"`` (`ggr_kv.reorder.shard`).
    method : ordering label for the records (default: the plan's method).
    **kw : `run_sharded_many`'s options (``n_replicas``, ``engine``, ``devices``,
        ``out_dir``, ``repeats``, ``block_size``, ``timeout_s``).
    """
    job = ShardJob(table, plan, query, how, method, run_id, sampling, instruction)
    return run_sharded_many([job], **kw)[0]


def run_sharded_many(
    jobs: list[ShardJob],
    *,
    n_replicas: int = 2,
    engine: EngineConfig | None = None,
    devices: list[str] | None = None,
    out_dir: str | Path = "results",
    repeats: int = 1,
    block_size: int | None = None,
    timeout_s: float = START_TIMEOUT_S,
) -> list[ShardedRun]:
    """Run several sharded jobs on ONE engine per replica (started once, reused).

    Parameters
    ----------
    jobs : the orderings to run, in order; each gets its own run folder.
    n_replicas : engines, one per device.
    engine : settings of every replica's engine (one GPU each: keep tensor parallelism 1).
    devices : one per replica: GPU indices (``CUDA_VISIBLE_DEVICES``), or CPU core lists
        on a machine without enough GPUs (default: `replica_devices`).
    repeats : passes over every job (interleaved: job 1, job 2, ..., job 1, ...); each
        pass starts all replicas together after a barrier.
    block_size : KV block size the split reasons in (default: the engine's setting, else
        16 on GPU and 128 on CPU).
    timeout_s : longest wait for the replicas at a barrier (engine starts included).

    Returns
    -------
    One `ShardedRun` per job, each also written to ``out_dir/<run_id>/sharded.json``.
    """
    engine = engine or EngineConfig()
    if devices is None:
        devices, kind = replica_devices(n_replicas)
    else:
        kind = "gpu" if has_gpu() else "cpu"
    if len(devices) != n_replicas:
        raise ValueError(f"{n_replicas} replicas but {len(devices)} devices: {devices}")
    bs = block_size or engine.block_size or (16 if kind == "gpu" else 128)
    out = project_path(out_dir)
    prepared = [split_job(job, engine, n_replicas, bs, out) for job in jobs]  # all before engines
    folders = [reserve_run_dir(out, p["run_id"], note=f"sharded over {n_replicas} replicas")
               for p in prepared]
    procs = []
    for k in range(n_replicas):
        work = []
        for p, folder in zip(prepared, folders):
            sub, sub_plan, original = restrict_plan(p["table"], p["plan"], p["rows"][k])
            work.append({"table": sub, "plan": sub_plan, "original": original,
                         "query": p["query"], "instruction": p["instruction"],
                         "sampling": p["sampling"], "folder": str(folder),
                         "dataset": p["name"], "method": p["method"]})
        spec = {"engine": engine, "repeats": repeats, "replica": k, "jobs": work,
                "barrier": str(folders[0])}
        procs.append(_launch(k, folders[0], spec, devices[k], kind))
    try:
        done = _drive(folders[0], procs, n_replicas, repeats, len(jobs), timeout_s)
        for f in folders[0].glob(".*-*"):  # barrier files and replica specs: done with
            if f.name.startswith((".ready-", ".go-", ".done-", ".replica-")):
                f.unlink()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return [write_sharded(folder, p["sharding"], p["rows"], done[j], p["how"], devices, kind, engine,
                    p["method"], p["name"], bs)
            for j, (p, folder) in enumerate(zip(prepared, folders))]


def split_job(job: ShardJob, engine: EngineConfig, n: int, bs: int, out: Path) -> dict:
    """A job's table, plan, query and split, made before any engine starts."""
    tbl, name, _, _ = _as_table(job.table)
    name = job.dataset or name
    plan, plan_method, _, _ = _as_plan(job.plan if job.plan is not None
                                       else ReorderPlan.identity(tbl), tbl)
    method = job.method or plan_method or ("original" if job.plan is None else "custom")
    q = as_query(job.query, (job.sampling or {}).get("max_tokens"))
    tokens, offsets = _tokens(tbl, plan, q, job.instruction, engine)
    sharding = shard_order(tokens, offsets, n, block_size=bs, how=job.how)
    run_id = job.run_id or new_run_id(name or "custom", f"{method}-{job.how}{n}", out)
    return {"table": tbl, "plan": plan, "query": q, "instruction": job.instruction,
            "sampling": job.sampling, "name": name, "method": method, "how": job.how,
            "sharding": sharding, "rows": _replica_rows(sharding, plan), "run_id": run_id}


def _drive(barrier: Path, procs, n: int, repeats: int, n_jobs: int, timeout_s: float):
    """Release the replicas pass by pass (job by job within a repeat); returns, per job, a
    list over repeats of ``(go time, the replicas' done records)``."""
    done: list[list] = [[] for _ in range(n_jobs)]
    for r in range(1, repeats + 1):
        for j in range(n_jobs):
            tag = f"{j}-{r}"
            ready = [barrier / f".ready-{k}-{tag}" for k in range(n)]
            _wait_for(ready, procs, barrier, timeout_s, f"ready for job {j} repeat {r}")
            go = time.time()
            write_atomic(barrier / f".go-{tag}", repr(go))
            files = [barrier / f".done-{k}-{tag}.json" for k in range(n)]
            _wait_for(files, procs, barrier, timeout_s, f"done with job {j} repeat {r}")
            done[j].append((go, [json.loads(p.read_text()) for p in files]))
    for p in procs:
        p.wait(timeout=600)
    return done


def write_sharded(folder, sharding, rows, runs, how, devices, kind, engine, method, name, bs,
                  extra: dict[str, Any] | None = None) -> ShardedRun:
    """Write ``sharded.json`` and ``outputs.csv`` (original row order) of a sharded run from
    its replicas' done records (``runs``: per repeat, ``(go time, records)``); ``extra``
    keys are added to ``sharded.json``."""
    from ggr_kv.run.rundir import read_outputs

    job_s = [max(d["end"] for d in recs) - go for go, recs in runs]
    replicas, balances = [], []
    for r, (go, recs) in enumerate(runs, start=1):
        times = [d["job_s"] for d in recs]
        balances.append(max(times) / (sum(times) / len(times)) if sum(times) else 1.0)
        for d in recs:
            k = d["replica"]
            replicas.append(ReplicaRun(
                replica=k, repeat=r, device=devices[k], rows=len(rows[k]), run_dir=d["run_dir"],
                start_s=d["start"] - go, end_s=d["end"] - go, job_s=d["job_s"],
                prompt_tokens=d.get("prompt_tokens"), prefix_cache_hits=d.get("hits"),
                prefix_cache_queries=d.get("queries"), uncached_tokens=d.get("uncached"),
                predicted_uncached_tokens=sharding.shards[k].uncached_tokens))
    med = sorted(range(len(job_s)), key=lambda i: job_s[i])[(len(job_s) - 1) // 2]
    parts = []
    for d in runs[med][1]:
        o = read_outputs(d["run_dir"])
        o["row"] = np.asarray(d["original"])[o["row"].to_numpy()]
        parts.append(o[["row", "output"]].assign(replica=d["replica"]))
    outputs = pd.concat(parts, ignore_index=True).sort_values("row").reset_index(drop=True)
    outputs = outputs[["row", "replica", "output"]]
    write_atomic(folder / "outputs.csv", lambda p: outputs.to_csv(p, index=False))
    hits = sum(int(d.get("hits") or 0) for d in runs[med][1])
    queries = sum(int(d.get("queries") or 0) for d in runs[med][1])
    meta = {
        "how": how, "n_replicas": len(devices), "devices": devices, "device_kind": kind,
        "method": method, "dataset": name, "block_size_for_split": bs,
        "engine": asdict(engine), "groups": sharding.groups, "split_groups": sharding.split_groups,
        "predicted_uncached_tokens": [s.uncached_tokens for s in sharding.shards],
        "predicted_balance": sharding.balance, "repeats": len(job_s), "job_s": job_s,
        "job_s_median": statistics.median(job_s), "balance": statistics.median(balances),
        "replicas": [asdict(x) for x in replicas],
        "replica_rows": [r.tolist() for r in rows],
        "summary": {"prefix_cache_hits": hits, "prefix_cache_queries": queries,
                    "prefix_cache_hit_rate": hits / queries if queries else None,
                    "repeat": med + 1},
        **(extra or {}),
    }
    write_atomic(folder / "sharded.json", dumps(meta, indent=2) + "\n")
    (folder / "incomplete.json").unlink(missing_ok=True)
    return ShardedRun(folder, how, len(devices), job_s, meta["job_s_median"], meta["balance"],
                      replicas, outputs, meta)


def _worker(spec_path: str) -> int:
    """One replica: start its engine once, then run its shard of every job, pass by pass,
    each at the barrier."""
    from ggr_kv.engine.config import make_llm, shutdown_llm
    from ggr_kv.run.runner import run_table

    with open(spec_path, "rb") as f:
        spec = pickle.load(f)
    barrier, k = Path(spec["barrier"]), spec["replica"]
    llm = make_llm(spec["engine"])
    try:
        for r in range(1, spec["repeats"] + 1):
            for j, job in enumerate(spec["jobs"]):
                tag = f"{j}-{r}"
                write_atomic(barrier / f".ready-{k}-{tag}", "")
                go = barrier / f".go-{tag}"
                while not go.exists():
                    time.sleep(0.005)
                start = time.time()
                res = run_table(job["table"], job["plan"], job["query"], llm=llm,
                                engine=spec["engine"], instruction=job["instruction"],
                                sampling=job["sampling"], dataset=job["dataset"],
                                method=job["method"], out_dir=job["folder"],
                                run_id=f"replica-{k}-r{r}", progress=False)
                end = time.time()
                req = res.requests
                prompt = int(req["prompt_tokens"].sum())
                rec = {"replica": k, "start": start, "end": end, "job_s": res.timings["job_s"],
                       "run_dir": str(res.path), "original": job["original"].tolist(),
                       "prompt_tokens": prompt,
                       "uncached": prompt - int(req["num_cached_tokens"].sum()),
                       "hits": res.summary.get("prefix_cache_hits"),
                       "queries": res.summary.get("prefix_cache_queries")}
                write_atomic(barrier / f".done-{k}-{tag}.json", json.dumps(rec))
    finally:
        shutdown_llm(llm)
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
