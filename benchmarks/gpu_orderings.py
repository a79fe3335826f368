"""Every bundled dataset x ordering on one GPU, side by side, plus a KV-cache size sweep.

Used for ``results/h200/`` (issue 6); works on any CUDA machine with vLLM:

    python benchmarks/gpu_orderings.py main --model llama-3.1-8b --out results/h200
    python benchmarks/gpu_orderings.py kv-sweep --model llama-3.1-8b --dataset movies \
        --blocks 4000 1500 800 400 --out results/h200

``main`` starts ONE engine with prefix caching off and runs the input order of every
dataset (``no_cache``), stops it, then starts ONE engine with prefix caching on and runs
``original``, ``sorted`` and ``ggr`` of every dataset with the cache reset between runs.
Same rows, query, sampling and engine settings for every ordering of a dataset.
``kv-sweep`` repeats ``original`` and ``ggr`` of one dataset with fewer and fewer KV
blocks (``num_gpu_blocks_override``), one engine per size, to show where eviction and
preemption start and the ordering stops paying off.

``--budget-s`` stops starting new runs when the wall time would run past it, so a call
with a hard time limit still returns what finished.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ggr_kv.datasets import load_dataset  # noqa: E402
from ggr_kv.datasets.queries import get_query  # noqa: E402
from ggr_kv.engine.config import EngineConfig, make_llm, shutdown_llm  # noqa: E402
from ggr_kv.reorder import reorder  # noqa: E402
from ggr_kv.run import run_table  # noqa: E402

QTYPE = {"rag": "rag"}  # every other dataset runs its filter query (the paper's T1)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _left(t0: float, budget_s: float) -> float:
    return budget_s - (time.perf_counter() - t0)


def _engine(args, **over) -> EngineConfig:
    return EngineConfig(
        model=args.model,
        enforce_eager=args.enforce_eager,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        seed=0,
        **over,
    )


def _jobs(args):
    for name in args.datasets:
        ds = load_dataset(name)
        if args.rows and args.rows < len(ds.frame):  # first N rows; smaller tables whole
            ds = load_dataset(name, n=args.rows, sample="head")
        yield name, ds, get_query(name, QTYPE.get(name, "filter"))


def cmd_main(args) -> None:
    t0 = time.perf_counter()
    jobs = list(_jobs(args))
    plans = {}
    for name, ds, _ in jobs:
        for m in ("original", "sorted", "ggr"):
            plans[name, m] = reorder(ds.table(), m, fds=ds.fds)
        _log(f"{name}: {ds.frame.shape[0]} rows, plans ready")

    def run_all(llm, methods):
        for name, ds, q in jobs:
            for m in methods:
                if _left(t0, args.budget_s) < args.reserve_s:
                    _log(f"budget: skipping {name}/{m}")
                    continue
                plan = None if m == "no_cache" else plans[name, m]
                r = run_table(ds, plan, q, llm=llm, dataset=name, method=m,
                              out_dir=args.out, run_id=f"{args.prefix}{name}-{m}", progress=False)
                _log(f"{name:9s} {m:9s} job {r.timings['job_s']:7.2f} s  "
                     f"hit {r.summary.get('prefix_cache_hit_rate')}  kv peak {r.summary.get('max_kv_cache_usage')}")

    if "no_cache" in args.methods:
        t = time.perf_counter()
        llm = make_llm(_engine(args, enable_prefix_caching=False))
        _log(f"no-cache engine started in {time.perf_counter() - t:.1f} s")
        try:
            run_all(llm, ["no_cache"])
        finally:
            shutdown_llm(llm)
    rest = [m for m in args.methods if m != "no_cache"]
    if rest:
        t = time.perf_counter()
        llm = make_llm(_engine(args))
        _log(f"prefix-cache engine started in {time.perf_counter() - t:.1f} s")
        try:
            run_all(llm, rest)
        finally:
            shutdown_llm(llm)


def cmd_kv_sweep(args) -> None:
    t0 = time.perf_counter()
    (name, ds, q), = list(_jobs(argparse.Namespace(**{**vars(args), "datasets": [args.dataset]})))
    plans = {m: reorder(ds.table(), m, fds=ds.fds) for m in args.methods}
    for blocks in args.blocks:
        if _left(t0, args.budget_s) < args.reserve_s:
            _log(f"budget: skipping {blocks} blocks")
            continue
        t = time.perf_counter()
        llm = make_llm(_engine(args, num_gpu_blocks_override=blocks,
                               max_num_seqs=args.max_num_seqs))
        _log(f"engine with {blocks} KV blocks started in {time.perf_counter() - t:.1f} s")
        try:
            for m in args.methods:
                r = run_table(ds, plans[m], q, llm=llm, dataset=name, method=m,
                              out_dir=args.out, run_id=f"{args.prefix}kv{blocks}-{name}-{m}",
                              progress=False)
                _log(f"blocks {blocks:6d} {m:9s} job {r.timings['job_s']:7.2f} s  "
                     f"hit {r.summary.get('prefix_cache_hit_rate')}  preempt {r.summary.get('num_preemptions')}")
        finally:
            shutdown_llm(llm)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["main", "kv-sweep"])
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--out", default="results/h200")
    p.add_argument("--prefix", default="", help="run-id prefix")
    p.add_argument("--datasets", nargs="+", default=["movies", "products", "posts", "beer", "rag"])
    p.add_argument("--dataset", default="movies", help="kv-sweep: the dataset")
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--rows", type=int, default=None, help="first N rows (default: all)")
    p.add_argument("--blocks", type=int, nargs="+", default=[4000, 1500, 800, 400])
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--gpu-memory-utilization", type=float, default=None)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--budget-s", type=float, default=1e9, help="stop starting runs after this")
    p.add_argument("--reserve-s", type=float, default=45.0)
    args = p.parse_args()
    if args.methods is None:
        args.methods = (["no_cache", "original", "sorted", "ggr"] if args.what == "main"
                        else ["original", "ggr"])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (cmd_main if args.what == "main" else cmd_kv_sweep)(args)
    print(json.dumps({"done": args.what, "out": args.out}))


if __name__ == "__main__":
    main()
