"""The H200 runs of issues 12 and 13: paper-scale tables, every ordering, predictions first.

One process per GPU (``CUDA_VISIBLE_DEVICES`` set by the caller); each step writes
ordinary run folders under ``--out`` and a JSON of what it did, so a call that hits its
time limit still returns everything finished::

    python experiments/h200_campaign.py singles --plan A --out results/h200/paper-scale \
        --budget-s 520
    python experiments/h200_campaign.py sharded --out results/h200x2 --budget-s 520
    python experiments/h200_campaign.py cache --plan offload --out results/h200/small-kv-cache \
        --budget-s 300

``singles``: one engine (Llama-3.1-8B shape, dummy weights, CUDA graphs, prefix caching
on) per GPU; its two throughputs are measured first (``measure_throughputs``), then every
run's job time and hits are PREDICTED (``ggr_kv.simulate``) and saved before any run
starts; then ``original``, ``sorted``, ``ggr``, ``blocks`` of every table of the plan run
on that engine (repeats interleaved), and ``no_cache`` on a second engine with prefix
caching off while the budget lasts. ``sharded``: the same table and plan on two replicas
(one per GPU) split three ways (`ggr_kv.reorder.shard`), then one engine with tensor
parallelism over both GPUs. ``cache``: a small GPU KV cache, with and without vLLM's CPU
offloading (``--plan offload``) or at several sizes (``--plan kvsweep``).
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

T0 = time.monotonic()
METHODS = ("original", "sorted", "ggr", "blocks")

#: per GPU: (dataset, query type, repeats, orderings); the most important first: a
#: budget that runs out stops later runs (repeat 1 of every run comes before repeat 2)
ALL = (*METHODS, "no_cache")
PLANS = {
    "A": [("movies@10000", "filter", 3, ALL), ("beer@10000", "filter", 3, ALL)],
    "B": [("products@10000", "filter", 1, ALL), ("shortgroups@6000", "filter", 1,
                                                  ("ggr", "blocks")),
          ("movies@4000", "filter", 1, ("blocks",)), ("rag@1500", "rag", 1, ALL),
          ("posts@2000", "filter", 1, ALL)],
    # the key comparisons again, 3 interleaved repeats each (plans A and B ran them once)
    "R": [("movies@10000", "filter", 3, ("sorted", "ggr", "blocks")),
          ("beer@10000", "filter", 3, ("sorted", "ggr", "blocks"))],
    "rag": [("rag@1500", "rag", 1, ALL)],
    "posts": [("posts@2000", "filter", 1, ALL)],
    # the paper's other single-stage query types (multi_llm's second stage depends on the
    # first stage's answers, which dummy weights make arbitrary)
    "types": [("movies@4000", "projection", 1, ALL), ("products@4000", "projection", 1, ALL),
              ("movies@4000", "aggregation", 1, ("original", "ggr", "blocks"))],
    # one GPU, the sharded runs' eager engine: the baseline of results/h200x2
    "onegpu": [("shortgroups@6000", "filter", 3, ("blocks",)),
               ("movies@4000", "filter", 3, ("blocks",))],
    "smoke": [("movies@60", "filter", 2, ALL), ("rag@30", "rag", 1, ("ggr", "no_cache"))],
}
SHARDED_TABLES = {"full": ["shortgroups@6000", "movies@4000"], "smoke": ["shortgroups@60"]}


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f} s] {msg}", flush=True)


def left(args) -> float:
    return args.budget_s - (time.monotonic() - T0)


def engine_config(args, **over):
    from ggr_kv.engine.config import EngineConfig

    kw = {"model": args.model, "max_model_len": args.max_model_len, "seed": 0,
          "enforce_eager": args.enforce_eager, "gpu_memory_utilization": args.gpu_mem}
    kw.update(over)
    return EngineConfig(**kw)


def tables(names_q, query_type_of=None):
    from ggr_kv.datasets import load_dataset

    for name, qtype, repeats, *methods in names_q:
        ds = load_dataset(name)
        yield name, ds, ds.query(qtype), repeats, (methods[0] if methods else METHODS)


def plans_for(ds, query, model_dir: str, methods=METHODS):
    """Every ordering's plan, made once (the runs and the predictions use the same)."""
    from ggr_kv.core.prompts import DEFAULT_INSTRUCTION
    from ggr_kv.reorder import reorder

    out = {}
    for m in methods:
        if m == "no_cache":
            continue
        knobs = {}
        if m == "blocks":
            knobs = {"tokenizer": model_dir, "block_size": 16, "query": query.stages[0].text,
                     "instruction": DEFAULT_INSTRUCTION}
        out[m] = reorder(ds.table(), m, fds=ds.fds, **knobs)
    return out


def on_update(o) -> None:
    """Log a run as it finishes (run_batch's on_update)."""
    if (line := o.line()) is not None:
        log(line)


def predict_all(llm, specs, tp, path: Path) -> None:
    """Predicted job time and hits of every spec, written before any of them runs."""
    from ggr_kv.core.tokenizer import load_tokenizer
    from ggr_kv.engine.config import engine_facts
    from ggr_kv.simulate import predict_job_time, simulate_plan

    facts = engine_facts(llm)
    tok = load_tokenizer(facts["model"])  # the model's own tokenizer, loaded once
    rows = []
    for s in specs:
        plan = s.plan.plan if s.plan is not None else None
        table = s.table.table()
        if plan is None:  # no_cache: the input order, nothing shared
            from ggr_kv.core.plan import ReorderPlan

            plan = ReorderPlan.identity(table)
        sim = simulate_plan(table, plan, s.query.stages[0].text, None, tok,
                            s.query.stages[0].max_tokens, block_size=facts["block_size"],
                            enable_prefix_caching=s.method != "no_cache",
                            num_blocks=facts["num_kv_blocks"], max_num_seqs=facts["max_num_seqs"],
                            max_num_batched_tokens=facts["max_num_batched_tokens"])
        p = predict_job_time(sim, tp)
        rows.append({"run_id": s.run_id, "dataset": s.dataset, "method": s.method,
                     "predicted_job_s": p.job_s, "bound": p.bound,
                     "predicted_hit_rate": sim.summary["hit_rate"],
                     "predicted_hits": sim.summary["prefix_cache_hits"],
                     "prompt_tokens": sim.summary["prompt_tokens"], "work": p.to_dict()})
        log(f"predicted {s.run_id}: {p.job_s:.2f} s, hit rate {sim.summary['hit_rate']:.4f}")
    path.write_text(
        json.dumps({"throughputs": tp.to_dict(), "engine": facts, "runs": rows}, indent=1,
                   default=str))


def cmd_singles(args) -> None:
    from ggr_kv.engine.config import make_llm, shutdown_llm
    from ggr_kv.engine.throughput import measure_throughputs
    from ggr_kv.run import RunSpec, run_batch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = list(tables(PLANS[args.plan]))
    model_dir = str(engine_config(args).resolve_model()[0])
    specs = []
    for (name, ds, q, repeats, methods), (_, qtype, *_) in zip(work, PLANS[args.plan]):
        plans = plans_for(ds, q, model_dir, methods)
        tag = name.replace("@", "-") + ("" if qtype == "filter" else f"-{qtype}")
        log(f"planned {name}: " + ", ".join(f"{m} {r.seconds:.1f} s" for m, r in plans.items()))
        for m in methods:  # no_cache: the caching engine, every request its own cache_salt
            specs.append(RunSpec(ds, m, q, plan=plans.get(m), repeats=1 if m == "no_cache"
                                 else repeats, engine=engine_config(args), dataset=name,
                                 run_id=f"{args.prefix}{tag}-{m}", no_cache_by="salt"))
    t = time.monotonic()
    llm = make_llm(engine_config(args))
    start_s = time.monotonic() - t
    log(f"engine started in {start_s:.1f} s")
    tp = measure_throughputs(llm, repeats=args.calib_repeats, decode_batch=args.calib_batch,
                             decode_len=args.calib_decode_len, progress=False)
    tp.meta["engine_start_s"] = start_s
    log(f"throughputs: prefill {tp.prefill_tok_s:.0f} tok/s, decode {tp.decode_tok_s:.0f} "
        f"tok/s, step {tp.step_overhead_s * 1e3:.1f} ms")
    predict_all(llm, specs, tp, out / f"predictions-{args.prefix}{args.plan}.json")
    outcomes = run_batch(specs, llm=llm, out_dir=out, on_error="continue", on_update=on_update,
                         progress=False, stop_after_s=max(left(args) - args.reserve_s, 0))
    shutdown_llm(llm)
    print(json.dumps({"plan": args.plan, "statuses": [o.status for o in outcomes],
                      "engine_start_s": start_s}))


def cmd_sharded(args) -> None:
    from ggr_kv.run import RunSpec, run_batch
    from ggr_kv.run.replicas import ShardJob, run_sharded_many

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = str(engine_config(args).resolve_model()[0])
    jobs, tp_specs = [], []
    for name in SHARDED_TABLES[args.plan]:
        (name, ds, q, _, _), = tables([(name, "filter", 1)])
        plan = plans_for(ds, q, model_dir, methods=("blocks",))["blocks"]
        for how in ("groups", "round_robin", "contiguous"):
            jobs.append(ShardJob(ds, plan, q, how, method="blocks",
                                 run_id=f"{args.prefix}{name.replace('@', '-')}-blocks-{how}2"))
        tp_specs.append(RunSpec(ds, "blocks", q, plan=plan, repeats=args.repeats,
                                engine=engine_config(args, tensor_parallel_size=2),
                                run_id=f"{args.prefix}{name.replace('@', '-')}-blocks-tp2",
                                dataset=name))
    runs = run_sharded_many(jobs, n_replicas=2, engine=engine_config(args), out_dir=out,
                            repeats=args.repeats, devices=args.devices)
    for r in runs:
        log(f"{r.path.name}: job {r.job_s_median:.2f} s {r.job_s} balance {r.balance:.3f} "
            f"hit {r.hit_rate:.4f}")
    if left(args) > args.tp_min_s:
        run_batch(tp_specs, out_dir=out, on_error="continue", on_update=on_update, progress=False,
                  stop_after_s=max(left(args) - args.reserve_s, 0))
    else:
        log(f"tp2 skipped: {left(args):.0f} s left")


def cmd_cache(args) -> None:
    """A small GPU KV cache: with and without CPU offloading, or at several sizes."""
    from ggr_kv.run import RunSpec, run_batch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model_dir = str(engine_config(args).resolve_model()[0])
    (name, ds, q, _, _), = tables([(args.dataset, "filter", 1)])
    plans = plans_for(ds, q, model_dir, methods=("original", "ggr", "blocks"))
    settings = []
    if args.plan == "offload":
        for gib in (None, args.offload_gib):
            extra = {"kv_offloading_size": gib} if gib else {}
            settings.append((f"kv{args.blocks[0]}" + (f"-offload{gib:g}" if gib else ""),
                             engine_config(args, num_gpu_blocks_override=args.blocks[0],
                                           extra=extra)))
    else:
        settings = [(f"kv{b}", engine_config(args, num_gpu_blocks_override=b))
                    for b in args.blocks]
    specs = [RunSpec(ds, m, q, plan=res, repeats=args.repeats, engine=cfg, dataset=name,
                     run_id=f"{args.prefix}{tag}-{name.replace('@', '-')}-{m}")
             for tag, cfg in settings for m, res in plans.items()]
    run_batch(specs, out_dir=out, on_error="continue", on_update=on_update, progress=False,
              stop_after_s=max(left(args) - args.reserve_s, 0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["singles", "sharded", "cache"])
    p.add_argument("--plan", default="A")
    p.add_argument("--out", default="results/h200/paper-scale")
    p.add_argument("--prefix", default="")
    p.add_argument("--model", default="llama-3.1-8b")
    p.add_argument("--max-model-len", type=int, default=4096)
    p.add_argument("--gpu-mem", type=float, default=None)
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--budget-s", type=float, default=520)
    p.add_argument("--reserve-s", type=float, default=25)
    p.add_argument("--tp-min-s", type=float, default=150)
    p.add_argument("--calib-repeats", type=int, default=2)
    p.add_argument("--calib-batch", type=int, default=256)
    p.add_argument("--calib-decode-len", type=int, default=64)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--devices", nargs="+", default=None)
    p.add_argument("--dataset", default="movies@4000")
    p.add_argument("--blocks", type=int, nargs="+", default=[3000])
    p.add_argument("--offload-gib", type=float, default=16.0)
    args = p.parse_args()
    {"singles": cmd_singles, "sharded": cmd_sharded, "cache": cmd_cache}[args.what](args)
    log("finished")


if __name__ == "__main__":
    main()
