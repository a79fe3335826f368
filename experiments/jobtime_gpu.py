"""Issue 22 on one GPU: calibrate the step-cost model, predict every run, then run it.

One process, one engine (Llama-3.1-8B shape, dummy weights, CUDA graphs, vLLM defaults).
Steps, in the order they run, each bounded by ``--budget-s``::

    python experiments/jobtime_gpu.py --out results/h200/jobtime --prefix j3- \
        --steps warmup,calibrate,campaign --only movies@3000,products@1500 \
        --repeats 3 --budget-s 480

- while the engine starts, a second process reorders every table and replays every run
  on the simulator (the engine's settings are checked afterwards; a replay whose KV use
  does not fit the real pool is redone);
- ``calibrate``: `ggr_kv.engine.calibrate.calibrate` (step-cost model) and the old
  three-term `measure_throughputs`, saved as ``calibration-PREFIX.json``;
- predictions of every run by both models, written to ``predictions-PREFIX.json``
  BEFORE any run starts;
- ``profile``: one highly cached job with host-side timers around the scheduler and
  the model runner, and CUDA events around each step's GPU work (``profile-PREFIX.json``);
- ``trial``: scheduler settings changed on the live engine (``max_num_batched_tokens``,
  ``max_num_seqs``: downward only, the engine's buffers are sized for its settings),
  predicted then measured per workload (``trial-PREFIX.json`` + run folders);
- ``warmup``: before calibrating, ``--warmup`` highly cached jobs of the campaign, run
  and kept apart (run folders ``PREFIXwarmK-...``, in no prediction file): the first
  jobs on a fresh engine ran up to 2x slower, and that must not land in the calibration
  or the first campaign jobs;
- ``campaign``: every table x ordering, ``--repeats`` times (as many as the budget
  allows by the predictions), each repeat in its own random order (``--order-seed``),
  one run folder per run (repeat 1: ``PREFIXtag-method``, repeat k: ``PREFIXrk-...``,
  predicted in ``predictions-PREFIXrk.json`` before the first run). The host's state
  around every run (CPU steal and busy time, load, clock) goes to ``hoststate-PREFIX.json``.

Prompts go to the engine as ``--submit`` says, in the calibration jobs and the runs alike:
``ids`` (default: token ids made by the engine's tokenizer before each job's timer,
`ggr_kv.engine.submit`) or ``text`` (vLLM tokenizes inside the job time; how
``results/h200/jobtime/`` and ``jobtime-2/`` ran).

Campaign design (issue 22): the spread of a highly cached job comes from the host that
feeds the engine (`ggr_kv.analysis.jobfeed`), and it differed between engine starts
(first call 1.39x slower to submit the same prompts as the second, 25 of 28 jobs), so
repeats must span engine starts: run each table group in two or more calls (``--only``),
each call ~8 minutes: engine start (60-200 s), replays finished first (they compete for
the CPU with the calibration otherwise), warm-up (~20 s), calibration (~35 s), then the
repeats that fit. E.g. ``--only movies@3000,products@1500 --repeats 3``.
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
os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")  # profile/trial RPCs
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
from ggr_kv.engine.submit import DEFAULT_SUBMIT, SUBMIT_MODES  # noqa: E402 - after the path

T0 = time.monotonic()
METHODS = ("original", "sorted", "ggr", "blocks")
#: (dataset@rows, query type): filter, projection, aggregation and RAG, 1.5k-3k rows
CAMPAIGN = [
    ("movies@3000", "filter"), ("products@1500", "filter"), ("beer@3000", "filter"),
    ("movies@1500", "projection"), ("movies@1500", "aggregation"), ("rag@1500", "rag"),
    ("posts@1500", "filter"),
]
#: engine-settings trial: (max_num_batched_tokens, max_num_seqs) arms x workloads
ARMS = [(16384, 1024), (8192, 1024), (16384, 256), (4096, 1024)]
TRIAL = [("movies@2000", "filter", "blocks"), ("movies@1000", "projection", "blocks"),
         ("rag@500", "rag", "ggr")]
PROFILE = ("movies@3000", "filter", "blocks")
#: what the engine is assumed to have while it starts (H200, vLLM 0.26 defaults)
ASSUMED = {"block_size": 16, "num_blocks": 57144, "max_num_seqs": 1024,
           "max_num_batched_tokens": 16384}
MODEL = "llama-3.1-8b"
#: --smoke: the same steps on the CPU engine with a tiny model (plumbing check)
SMOKE = {"campaign": [("movies@60", "filter"), ("movies@40", "projection")],
         "trial": [("movies@40", "filter", "blocks")], "profile": ("movies@60", "filter", "ggr"),
         "arms": [(8192, 256), (2048, 256), (8192, 16)]}


def campaign_order(keys: list, repeats: int, seed: int) -> list[tuple[int, tuple]]:
    """``(repeat, key)`` in run order: repeat 1 of every key, then repeat 2, ..., each
    repeat a fresh random permutation (``seed``), so no ordering always runs first or
    right after the same job."""
    import random

    rng = random.Random(seed)
    out = []
    for k in range(1, repeats + 1):
        order = list(keys)
        rng.shuffle(order)
        out += [(k, key) for key in order]
    return out


def plan_repeats(predicted_s: list[float], left_s: float, per_run_s: float,
                 want: int) -> int:
    """How many repeats of every job fit in ``left_s`` seconds (at most ``want``, 0 when
    not even one does), each run taking its predicted seconds plus ``per_run_s``."""
    one = sum(predicted_s) + per_run_s * len(predicted_s)
    if one <= 0:
        return want
    return max(0, min(want, int(left_s // one)))


def host_state() -> dict:
    """CPU counters of this machine (s since boot, all CPUs), load and mean clock (MHz)."""
    out: dict = {"t": time.time()}
    try:
        with open("/proc/stat", encoding="ascii") as f:
            cpu = f.readline().split()[1:]
        hz = os.sysconf("SC_CLK_TCK")
        names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
        out.update({n: int(v) / hz for n, v in zip(names, cpu)})
        out["loadavg"] = os.getloadavg()
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            mhz = [float(line.split(":")[1]) for line in f if line.startswith("cpu MHz")]
        out["cpu_mhz_mean"] = sum(mhz) / len(mhz) if mhz else None
    except (OSError, ValueError, IndexError):
        pass
    return out


def log(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f} s] {msg}", flush=True)


def tag_of(name: str, qtype: str) -> str:
    return name.replace("@", "-") + ("" if qtype == "filter" else f"-{qtype}")


def prepare(items, model_dir: str, config: dict) -> dict:
    """Datasets, plans and replays of ``items`` [(dataset, qtype, method)] (own process)."""
    from ggr_kv.core.plan import ReorderPlan
    from ggr_kv.core.prompts import DEFAULT_INSTRUCTION
    from ggr_kv.core.tokenizer import load_tokenizer
    from ggr_kv.datasets import load_dataset
    from ggr_kv.reorder import reorder
    from ggr_kv.simulate import simulate_plan

    tok = load_tokenizer(model_dir)
    out, cache = {}, {}
    for name, qtype, m in items:
        if name not in cache:
            cache[name] = load_dataset(name)
        ds = cache[name]
        q = ds.query(qtype)
        knobs = {}
        if m == "blocks":
            knobs = {"tokenizer": model_dir, "block_size": config["block_size"],
                     "query": q.stages[0].text, "instruction": DEFAULT_INSTRUCTION}
        t = time.perf_counter()
        res = reorder(ds.table(), m, fds=ds.fds, **knobs)
        reorder_s = time.perf_counter() - t
        plan = res.plan if res is not None else ReorderPlan.identity(ds.table())
        sim = simulate_plan(ds.table(), plan, q.stages[0].text, None, tok,
                            q.stages[0].max_tokens, progress=False, **config)
        out[(name, qtype, m)] = {"ds": ds, "query": q, "res": res, "reorder_s": reorder_s,
                                 "summary": dict(sim.summary), "config": dict(config),
                                 "work": sim.work[["scheduled_tokens", "num_scheduled"]].copy()}
    return out


def live_config(llm) -> dict:
    from ggr_kv.engine.throughput import scheduler_config

    c = scheduler_config(llm).to_dict()
    return {k: c[k] for k in ASSUMED}


def refit(prep: dict, config: dict, model_dir: str) -> dict:
    """Redo replays whose KV use would not fit the live pool (or other settings)."""
    redo = []
    for key, p in prep.items():
        c = p["config"]
        need = p["summary"]["peak_kv_usage"] * (c["num_blocks"] - 1)
        same = all(c[k] == config[k] for k in ("block_size", "max_num_seqs",
                                               "max_num_batched_tokens"))
        if not same or need >= config["num_blocks"] - 1 or p["summary"]["num_preemptions"]:
            redo.append(key)
    if redo:
        log(f"re-replaying {len(redo)} runs at the live settings {config}")
        prep.update(prepare(redo, model_dir, config))
    return prep


def predict(prep: dict, keys, costs, tp, prefix: str, path: Path, extra=None) -> list[dict]:
    """Predicted job time of every run by the step-cost model (and the old model)."""
    from ggr_kv.simulate.jobtime import predict_job_time

    from ggr_kv.simulate.feedtime import FeedCosts

    two = costs.meta.get("two_clock")
    two = FeedCosts.from_dict(two) if isinstance(two, dict) and "engine" in two else None
    from ggr_kv.simulate.stepcost import work_features

    rows = []
    for key in keys:
        p = prep[key]
        name, qtype, m = key
        # the replay's totals and the work features of its steps (eager_requests)
        p["summary"].update(work_features(p["work"], costs.graph_tokens))
        p["summary"]["graph_tokens"] = costs.graph_tokens
        pr = costs.predict(p["summary"])
        pr2 = two.predict(p["summary"]) if two is not None else None
        old = predict_job_time(_totals(p["summary"]), tp).job_s if tp is not None else None
        rows.append({"run_id": f"{prefix}{tag_of(name, qtype)}-{m}", "dataset": name,
                     "query_type": qtype, "method": m, "predicted_job_s": pr.job_s,
                     "predicted_job_s_3term": old, "bound": pr.bound,
                     "predicted_job_s_two_clock": pr2.job_s if pr2 is not None else None,
                     "bound_two_clock": pr2.bound if pr2 is not None else None,
                     "parts": pr.parts, "predicted_hit_rate": p["summary"]["hit_rate"],
                     "summary": p["summary"], "config": p["config"],
                     "reorder_s": p["reorder_s"]})
    doc = {"created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "submit": SUBMIT,
           "step_costs": costs.to_dict(),
           "throughputs": tp.to_dict() if tp is not None else None, "runs": rows}
    doc.update(extra or {})
    _write(path, doc)
    return rows


def _totals(summary: dict):
    from ggr_kv.simulate.api import SimTotals

    import numpy as np

    fields = {k: summary[k] for k in SimTotals.__dataclass_fields__ if k in summary}
    return SimTotals(**fields, num_cached_tokens=np.zeros(0), seconds=0.0)


def _write(path: Path, doc: dict) -> None:
    from ggr_kv.core.jsonutil import to_jsonable

    path.write_text(json.dumps(to_jsonable(doc), indent=1, default=str), encoding="utf-8")


def specs_for(prep: dict, keys, prefix: str, args):
    from ggr_kv.engine.config import EngineConfig
    from ggr_kv.run import RunSpec

    out = []
    for key in keys:
        name, qtype, m = key
        p = prep[key]
        out.append(RunSpec(p["ds"], m, p["query"], plan=p["res"], repeats=1,
                           engine=EngineConfig(model=MODEL, max_model_len=args.max_model_len,
                                               seed=0),
                           dataset=name, run_id=f"{prefix}{tag_of(name, qtype)}-{m}"))
    return out


#: how prompts go to the engine (``--submit``; set in main)
SUBMIT = DEFAULT_SUBMIT


def run_specs(llm, specs, out: Path, stop_s: float):
    from ggr_kv.run import run_batch

    def on_update(o) -> None:
        if (line := o.line()) is not None:
            log(line)

    return run_batch(specs, llm=llm, out_dir=out, on_error="continue", on_update=on_update,
                     progress=False, predict=False, stop_after_s=max(stop_s, 0),
                     submit=SUBMIT)


# -- in the engine core process (through collective_rpc; the worker is in that process) --
def _core():
    """The EngineCore whose ``collective_rpc`` runs this function (found up the stack:
    vLLM freezes its startup objects out of ``gc.get_objects()``)."""
    f = sys._getframe()
    while f is not None:
        o = f.f_locals.get("self")
        if o is not None and hasattr(o, "scheduler") and hasattr(o, "model_executor"):
            return o
        f = f.f_back
    raise RuntimeError("no EngineCore up the stack: the worker runs in another process "
                       "(this needs the 'uni' executor, vLLM's default on one GPU)")


def _rpc_set_limits(worker, tokens: int, seqs: int):
    s = _core().scheduler
    s.max_num_scheduled_tokens = tokens
    s.max_num_running_reqs = seqs
    if hasattr(s, "max_num_active_reqs"):
        s.max_num_active_reqs = seqs
    return {"max_num_scheduled_tokens": s.max_num_scheduled_tokens,
            "max_num_running_reqs": s.max_num_running_reqs,
            "scheduler": type(s).__name__, "async": bool(getattr(_core(), "async_scheduling",
                                                                   False))}


def _rpc_profile_on(worker):
    import time as _t

    import torch

    core = _core()
    sched, runner = core.scheduler, worker.model_runner
    cuda = torch.cuda.is_available()
    rec: list = []
    orig = {}

    def wrap(obj, name, kind):
        f = getattr(obj, name, None)
        if f is None:
            return
        orig[(id(obj), name)] = (obj, name, f)

        def w(*a, **k):
            ev = None
            if cuda and kind in ("execute", "sample"):
                ev = torch.cuda.Event(enable_timing=True)
                ev.record()
            t = _t.perf_counter()
            r = f(*a, **k)
            t2 = _t.perf_counter()
            ev2 = None
            if ev is not None:
                ev2 = torch.cuda.Event(enable_timing=True)
                ev2.record()
            n = None
            if kind == "schedule":
                n = (int(getattr(r, "total_num_scheduled_tokens", 0)),
                     len(getattr(r, "num_scheduled_tokens", {}) or {}))
            rec.append((kind, t, t2, ev, ev2, n))
            return r

        setattr(obj, name, w)

    wrap(sched, "schedule", "schedule")
    wrap(sched, "update_from_output", "update")
    wrap(runner, "execute_model", "execute")
    wrap(runner, "sample_tokens", "sample")
    worker._ggr_prof = (rec, orig)
    return {"wrapped": [n for (_, n, _) in orig.values()], "scheduler": type(sched).__name__,
            "async": bool(getattr(core, "async_scheduling", False))}


def _rpc_profile_off(worker):
    import torch

    rec, orig = worker._ggr_prof
    for obj, name, _ in orig.values():
        try:
            delattr(obj, name)
        except AttributeError:
            pass
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    base = None
    out = []
    for kind, t, t2, ev, ev2, n in rec:
        g0 = g1 = None
        if ev is not None:
            if base is None:
                base = ev
            g0 = base.elapsed_time(ev) / 1e3
            g1 = base.elapsed_time(ev2) / 1e3
        out.append({"kind": kind, "t0": t, "t1": t2, "gpu_t0": g0, "gpu_t1": g1,
                    "tokens": n[0] if n else None, "reqs": n[1] if n else None})
    del worker._ggr_prof
    return out


def do_profile(llm, prep, key, out: Path, prefix: str, args) -> None:
    """One run of ``key`` with per-step host timers and GPU events in the engine core."""
    info = llm.collective_rpc(_rpc_profile_on)[0]
    log(f"profile hooks: {info}")
    specs = specs_for(prep, [key], f"{prefix}prof-", args)
    t = time.perf_counter()
    run_specs(llm, specs, out, 120)
    wall = time.perf_counter() - t
    rec = llm.collective_rpc(_rpc_profile_off)[0]
    _write(out / f"profile-{prefix.rstrip('-')}.json",
           {"run_id": specs[0].run_id, "hooks": info, "wall_s": wall, "events": rec})
    log(f"profile: {len(rec)} events, run wall {wall:.2f} s")


def do_trial(llm, arm_preps, costs, out: Path, prefix: str, args, model_dir: str) -> None:
    """Each arm: set the scheduler's limits live, predict, run every trial workload."""
    base = live_config(llm)
    rows = []
    passes = [(k, arm, p) for k in range(1, max(1, args.trial_repeats) + 1)
              for arm, p in arm_preps.items()]
    for k, (tokens, seqs), p in passes:
        if tokens > base["max_num_batched_tokens"] or seqs > base["max_num_seqs"]:
            log(f"arm {tokens}/{seqs} skipped: above the engine's own limits")
            continue
        if left(args) < args.reserve_s + 60:
            log("trial: budget spent")
            break
        cfg = dict(base, max_num_batched_tokens=tokens, max_num_seqs=seqs)
        p = arm_preps[(tokens, seqs)] = refit(p, cfg, model_dir)
        got = llm.collective_rpc(_rpc_set_limits, args=(tokens, seqs))[0]
        arm = f"{prefix}t{tokens}x{seqs}-" + ("" if k == 1 else f"r{k}-")
        pred = predict(p, list(p), costs, None, arm, out / f"predictions-{arm.rstrip('-')}.json",
                       {"arm": {"max_num_batched_tokens": tokens, "max_num_seqs": seqs}})
        outc = run_specs(llm, specs_for(p, list(p), arm, args), out,
                         left(args) - args.reserve_s - 30)
        for r, o in zip(pred, outc):
            rows.append({"arm": [tokens, seqs], "pass": k, "set": got, "run_id": r["run_id"],
                         "predicted_job_s": r["predicted_job_s"], "status": o.status})
    llm.collective_rpc(_rpc_set_limits, args=(base["max_num_batched_tokens"],
                                              base["max_num_seqs"]))
    _write(out / f"trial-{prefix.rstrip('-')}.json", {"base": base, "rows": rows})


def _guard(name: str, fn, *a):
    """Run one optional step; a failure is logged and the next step runs."""
    import traceback

    try:
        return fn(*a)
    except Exception:  # noqa: BLE001 - one step's failure must not cost the campaign
        log(f"{name} FAILED:\n{traceback.format_exc()}")
        return None


def do_calibrate(llm, args, out: Path, start_s: float):
    """Step costs (and the old three-term model), saved before any prediction."""
    from ggr_kv.engine.calibrate import calibrate
    from ggr_kv.engine.throughput import measure_throughputs
    from ggr_kv.simulate.stepcost import save_calibration

    costs = calibrate(llm, repeats=args.calib_repeats, scale=1 / 16 if args.smoke else 1.0,
                      on_job=lambda j, s: log(f"calib {j}: {s:.3f} s"), submit=SUBMIT)
    costs.meta["engine_start_s"] = start_s
    tp = measure_throughputs(llm, repeats=1, decode_batch=32 if args.smoke else 256,
                             decode_len=16 if args.smoke else 64, progress=False,
                             submit=SUBMIT)
    costs.meta["throughputs_3term"] = tp.to_dict()
    path = out / f"calibration-{args.prefix.rstrip('-')}.json"
    if path.exists():
        path.unlink()
    save_calibration(costs, path)
    log(f"calibrated: {costs.coef}; residuals "
        f"{[round(r, 3) for r in costs.meta['fit']['relative_residuals']]}")
    return costs, tp


def left(args) -> float:
    return args.budget_s - (time.monotonic() - T0)


def do_campaign(llm, prep, camp, costs, tp, preds, facts, out: Path, args) -> None:
    """Every campaign job ``--repeats`` times (as the budget allows), each repeat in its
    own random order, one run at a time with the host's state recorded around it."""
    import zlib

    want = max(1, args.repeats)
    if preds is not None:
        left_s = left(args) - args.reserve_s
        n = plan_repeats([r["predicted_job_s"] for r in preds], left_s, args.per_run_s, want)
        if n < want:
            log(f"campaign: {n} of {want} repeats fit in {left_s:.0f} s")
        want = max(1, n)
        for k in range(2, want + 1):  # predicted before the first run, like repeat 1
            pre = f"{args.prefix}r{k}-"
            predict(prep, camp, costs, tp, pre, out / f"predictions-{pre.rstrip('-')}.json",
                    {"engine": facts, "repeat": k})
    seed = args.order_seed if args.order_seed is not None else zlib.crc32(args.prefix.encode())
    states = []
    for k, key in campaign_order(camp, want, seed):
        if left(args) < args.reserve_s + 10:
            log("campaign: budget spent")
            break
        pre = args.prefix if k == 1 else f"{args.prefix}r{k}-"
        before = host_state()
        o = run_specs(llm, specs_for(prep, [key], pre, args), out, left(args) - args.reserve_s)
        states.append({"run_id": f"{pre}{tag_of(key[0], key[1])}-{key[2]}", "repeat": k,
                       "before": before, "after": host_state(),
                       "status": [x.status for x in o]})
    _write(out / f"hoststate-{args.prefix.rstrip('-')}.json",
           {"order_seed": seed, "repeats": want, "runs": states})
    log(f"campaign: {len(states)} runs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/h200/jobtime")
    ap.add_argument("--prefix", default="j1-")
    ap.add_argument("--steps", default="warmup,calibrate,campaign")
    ap.add_argument("--budget-s", type=float, default=540)
    ap.add_argument("--reserve-s", type=float, default=20)
    ap.add_argument("--max-model-len", type=int, default=4096)
    ap.add_argument("--calib-repeats", type=int, default=2)
    ap.add_argument("--only", default=None,
                    help="comma list of dataset@rows (every query type of it) or "
                         "dataset@rows:query_type to run")
    ap.add_argument("--methods", default=",".join(METHODS),
                    help="comma list of the orderings to run")
    ap.add_argument("--trial", default=None,
                    help="trial workloads instead of TRIAL: dataset@rows:query_type:method,...")
    ap.add_argument("--arms", default=None,
                    help="trial arms instead of ARMS: tokens:seqs,... (the first is the "
                         "engine's own setting; arms go downward only)")
    ap.add_argument("--trial-repeats", type=int, default=1,
                    help="passes over every arm, each pass in the same arm order")
    ap.add_argument("--repeats", type=int, default=3,
                    help="repeats of every campaign job (fewer when the budget says so)")
    ap.add_argument("--warmup", type=int, default=4, help="warm-up jobs before calibrating")
    ap.add_argument("--order-seed", type=int, default=None,
                    help="seed of the campaign's run order (default: from the prefix)")
    ap.add_argument("--per-run-s", type=float, default=3.0,
                    help="seconds a run takes beyond its job (reset, records)")
    ap.add_argument("--smoke", action="store_true", help="tiny model on the CPU engine")
    ap.add_argument("--submit", choices=SUBMIT_MODES, default=DEFAULT_SUBMIT,
                    help="prompts as token ids tokenized before the timer (default) or text")
    args = ap.parse_args()
    global CAMPAIGN, TRIAL, PROFILE, ARMS, MODEL, ASSUMED, SUBMIT
    SUBMIT = args.submit
    if args.smoke:
        CAMPAIGN, TRIAL, PROFILE, ARMS = (SMOKE["campaign"], SMOKE["trial"], SMOKE["profile"],
                                          SMOKE["arms"])
        MODEL = "tiny-llama"
        args.max_model_len = None
    if args.trial:
        TRIAL = [tuple(x.split(":")) for x in args.trial.split(",")]
    if args.arms:
        ARMS = [tuple(int(v) for v in x.split(":")) for x in args.arms.split(",")]
    steps = args.steps.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from ggr_kv.engine.config import EngineConfig, engine_facts, make_llm, shutdown_llm

    ecfg = EngineConfig(model=MODEL, max_model_len=args.max_model_len, seed=0)
    model_dir = str(ecfg.resolve_model()[0])
    only = None if args.only is None else args.only.split(",")
    camp = [(n, q, m) for n, q in CAMPAIGN for m in METHODS
            if m in args.methods.split(",")
            and (only is None or n in only or f"{n}:{q}" in only)]
    items = list(camp)
    if "profile" in steps:
        items.append(PROFILE)
    if args.smoke:  # the CPU engine's settings, known only once it runs: replay after
        ASSUMED = {"block_size": 128, "num_blocks": 200, "max_num_seqs": 256,
                   "max_num_batched_tokens": 8192}
    pool = ProcessPoolExecutor(6, mp_context=get_context("spawn"))
    by_table: dict = {}
    for it in dict.fromkeys(items):  # one task per table: its dataset is loaded once
        by_table.setdefault(it[:2], []).append(it)
    futs = [pool.submit(prepare, its, model_dir, ASSUMED) for its in by_table.values()]
    arm_futs = {}
    if "trial" in steps:
        for tokens, seqs in ARMS:
            arm_futs[(tokens, seqs)] = pool.submit(
                prepare, TRIAL, model_dir,
                dict(ASSUMED, max_num_batched_tokens=tokens, max_num_seqs=seqs))
    t = time.monotonic()
    llm = make_llm(ecfg)
    start_s = time.monotonic() - t
    facts = engine_facts(llm)
    log(f"engine started in {start_s:.1f} s: {facts['device']}, "
        f"{facts['num_kv_blocks']} blocks, vLLM {facts['vllm_version']}, prompts as {SUBMIT}")
    # the replays finish before anything is timed: they compete for the host's CPU
    prep = {}
    for f in futs:
        prep.update(f.result())
    arm_preps = {k: f.result() for k, f in arm_futs.items()}
    pool.shutdown()
    log(f"prepared {len(prep)} runs")
    cfg = live_config(llm)
    prep = refit(prep, cfg, model_dir)
    if "warmup" in steps and args.warmup > 0:
        warm = sorted((k for k in camp if k[2] != "original"),
                      key=lambda k: -prep[k]["summary"]["hit_rate"])[:args.warmup]
        for i, key in enumerate(warm, start=1):
            run_specs(llm, specs_for(prep, [key], f"{args.prefix}warm{i}-", args), out, 60)
        log(f"warm-up: {len(warm)} jobs")
    costs = tp = None
    if "calibrate" in steps:
        costs, tp = _guard("calibrate", do_calibrate, llm, args, out, start_s) or (None, None)
    preds = None
    if costs is not None:
        preds = predict(prep, camp, costs, tp, args.prefix,
                        out / f"predictions-{args.prefix.rstrip('-')}.json", {"engine": facts})
        log("predictions written")
    if "profile" in steps and left(args) > 120:
        _guard("profile", do_profile, llm, prep, PROFILE, out, args.prefix, args)
    if "trial" in steps and costs is not None and left(args) > 150:
        _guard("trial", do_trial, llm, arm_preps, costs, out, args.prefix, args, model_dir)
    if "campaign" in steps:
        do_campaign(llm, prep, camp, costs, tp, preds, facts, out, args)
    shutdown_llm(llm)
    log("finished")


if __name__ == "__main__":
    main()
