"""Every bundled dataset x ordering on one GPU, side by side, plus a KV-cache size sweep.

Used for ``results/h200/orderings-800rows/`` (issues 6, 12); works on any CUDA machine with vLLM:

    python experiments/gpu_orderings.py main --model llama-3.1-8b --repeats 3 \
        --out results/h200/orderings-800rows
    python experiments/gpu_orderings.py kv-sweep --model llama-3.1-8b --dataset movies \
        --blocks 4000 1500 800 400 --out results/h200/orderings-800rows

Both are one `ggr_kv.run.run_batch` call: every plan is made and every prompt checked
against ``max_model_len`` before an engine starts; runs are grouped by engine settings and
each group starts ONE engine. ``main``: one engine with prefix caching off for every
dataset's ``no_cache`` run, one with caching on for ``original``, ``sorted`` and ``ggr``
of every dataset. ``kv-sweep``: one engine per KV-cache size (``num_gpu_blocks_override``)
running ``original`` and ``ggr`` of one dataset, to show where eviction and preemption
start and the ordering stops paying off. Repeats interleave on each engine (A B C A B C),
the prefix cache emptied before each; run.json keeps every repeat, the median and spread,
the engine's cold start, and the collector / requests / simulator hit counts side by side.

``--budget-s`` starts no repeat after ``budget - reserve`` seconds, so a call with a hard
time limit still writes every run that has at least one repeat.
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

from ggr_kv.datasets import load_dataset
from ggr_kv.datasets.queries import get_query
from ggr_kv.engine.config import EngineConfig
from ggr_kv.run import RunSpec, run_batch

QTYPE = {"rag": "rag"}  # every other dataset runs its filter query (the paper's T1)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _engine(args, **over) -> EngineConfig:
    return EngineConfig(
        model=args.model,
        enforce_eager=args.enforce_eager,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_model_len=args.max_model_len,
        max_num_seqs=args.max_num_seqs,
        seed=0,
        **over,
    )


def _jobs(args, names):
    for name in names:
        ds = load_dataset(name)
        if args.rows and args.rows < len(ds.frame):  # first N rows; smaller tables whole
            ds = load_dataset(name, n=args.rows, sample="head")
        yield name, ds, get_query(name, QTYPE.get(name, "filter"))


def _report(o) -> None:
    """Log a run as it finishes (run_batch's on_update)."""
    if (line := o.line()) is not None:
        _log(line)


def cmd_main(args) -> list:
    specs = [
        RunSpec(ds, m, q, repeats=args.repeats,
                engine=_engine(args, enable_prefix_caching=m != "no_cache"),
                run_id=f"{args.prefix}{name}-{m}", dataset=name)
        for name, ds, q in _jobs(args, args.datasets)
        for m in args.methods
    ]
    return specs


def cmd_kv_sweep(args) -> list:
    ((name, ds, q),) = list(_jobs(args, [args.dataset]))
    return [
        RunSpec(ds, m, q, repeats=args.repeats,
                engine=_engine(args, num_gpu_blocks_override=blocks),
                run_id=f"{args.prefix}kv{blocks}-{name}-{m}", dataset=name)
        for blocks in args.blocks
        for m in args.methods
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["main", "kv-sweep"])
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--out", default="results/h200/orderings-800rows")
    p.add_argument("--prefix", default="", help="run-id prefix")
    p.add_argument("--datasets", nargs="+", default=["movies", "products", "posts", "beer", "rag"])
    p.add_argument("--dataset", default="movies", help="kv-sweep: the dataset")
    p.add_argument("--methods", nargs="+", default=None)
    p.add_argument("--rows", type=int, default=None, help="first N rows (default: all)")
    p.add_argument("--repeats", type=int, default=1, help="passes per run (median and spread)")
    p.add_argument("--blocks", type=int, nargs="+", default=[4000, 1500, 800, 400])
    p.add_argument("--max-num-seqs", type=int, default=None)
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--gpu-memory-utilization", type=float, default=None)
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--budget-s", type=float, default=None, help="stop starting runs after this")
    p.add_argument("--reserve-s", type=float, default=45.0)
    p.add_argument("--no-predict", action="store_true", help="skip the simulator's counts")
    args = p.parse_args()
    if args.methods is None:
        args.methods = (["no_cache", "original", "sorted", "ggr"] if args.what == "main"
                        else ["original", "ggr"])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    specs = (cmd_main if args.what == "main" else cmd_kv_sweep)(args)
    stop = None if args.budget_s is None else max(args.budget_s - args.reserve_s, 0.0)
    outcomes = run_batch(specs, out_dir=args.out, on_error="continue", on_update=_report,
                         progress=False, predict=not args.no_predict, stop_after_s=stop)
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "failed", "not_run")}
    print(json.dumps({"done": args.what, "out": args.out, "runs": counts}))


if __name__ == "__main__":
    main()
