"""``ggr-kv predict TABLE --calibration CAL.json``: job time per ordering, before any GPU.

Reorders the table with each ordering, replays vLLM's scheduler on the engine settings
the calibration was made with (`ggr_kv.simulate`), and prices every step of each replay
with the calibrated step costs (`ggr_kv.simulate.stepcost`), or, when the calibration
holds one (``meta["two_clock"]``, written by `ggr_kv.engine.calibrate` since issue 22's
two-clock model), with the engine's steps and the host's prompt feed overlapped
(`ggr_kv.simulate.feedtime`; the step-cost time stays beside it) if it fits the
calibration jobs at least as well. ``--settings`` also
predicts each ordering under other scheduler limits and recommends the fastest, but
only where it beats the engine's own settings by more than ``--margin`` (10%): on one
H100, settings measured within 0.85-1.07x of vLLM's defaults, closer than the model
ranks them (``results/h100/jobtime-4``, table ``jobtime-trial``).
"""

from __future__ import annotations

import argparse
from typing import Any

from ggr_kv.cli.common import add_input_arguments, load_input, positive_int

DEFAULT_ORDERINGS = ("original", "sorted", "ggr", "blocks")


def _settings(text: str) -> tuple[int, int]:
    try:
        tokens, seqs = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give TOKENS:SEQS (max_num_batched_tokens:max_num_seqs), e.g. 8192:512"
        ) from None
    if tokens < 1 or seqs < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: both numbers must be >= 1")
    return tokens, seqs


def _fraction(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        x = -1.0
    if not 0 <= x < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give a fraction from 0 to below 1, e.g. 0.1")
    return x


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser, rows=True)
    parser.add_argument("--calibration", required=True, metavar="FILE",
                        help="a calibration JSON (ggr_kv.engine.calibrate, e.g. "
                        "results/h200/jobtime/calibration-j1.json)")
    parser.add_argument("--query-type", default=None, metavar="TYPE",
                        help="a bundled dataset's query (filter, projection, aggregation, rag)")
    parser.add_argument("--query", default=None, help="query text (instead of --query-type)")
    parser.add_argument("--output-len", type=positive_int, default=None, metavar="TOKENS",
                        help="tokens generated per row (default: the query's, else 16)")
    parser.add_argument("--tokenizer", default="llama3", metavar="NAME",
                        help="the model's tokenizer (default llama3: the Llama-3.1-8B shape)")
    parser.add_argument("--orderings", default=",".join(DEFAULT_ORDERINGS),
                        help="comma-separated orderings (default: %(default)s)")
    parser.add_argument("--num-blocks", type=positive_int, default=None, metavar="N",
                        help="KV blocks (default: the calibrated engine's)")
    parser.add_argument("--settings", type=_settings, nargs="+", default=None,
                        metavar="TOKENS:SEQS",
                        help="also predict under these max_num_batched_tokens:max_num_seqs "
                        "and recommend the fastest per ordering")
    parser.add_argument("--margin", type=_fraction, default=0.10, metavar="FRACTION",
                        help="recommend other settings only when predicted this much faster "
                        "than the engine's own (default %(default)s: the model's error)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _engine(costs: Any, args: argparse.Namespace) -> dict[str, Any]:
    sched = dict(costs.meta.get("scheduler") or {})
    need = ("block_size", "num_blocks", "max_num_seqs", "max_num_batched_tokens")
    if any(k not in sched for k in need):
        raise ValueError(f"{args.calibration}: the calibration names no engine settings "
                         f"(meta.scheduler needs {list(need)})")
    if args.num_blocks is not None:
        sched["num_blocks"] = args.num_blocks
    return sched


def main(args: argparse.Namespace) -> int:
    import json

    from ggr_kv.core.tokenizer import load_tokenizer
    from ggr_kv.reorder import reorder
    from ggr_kv.reorder.methods import METHODS
    from ggr_kv.simulate import simulate_plan
    from ggr_kv.simulate.stepcost import load_calibration

    costs = load_calibration(args.calibration)  # bad files fail before any work
    engine = _engine(costs, args)
    two = _two_clock(costs, args.calibration)
    orderings = [m.strip() for m in args.orderings.split(",") if m.strip()]
    bad = [m for m in orderings if m not in METHODS]
    if bad:
        raise ValueError(f"--orderings: unknown {bad}; known: {list(METHODS)}")
    inp = load_input(args.table, rows=args.rows, sep=args.sep)
    query, out_len = _query(inp, args)
    tok = load_tokenizer(args.tokenizer)
    arms = [(engine["max_num_batched_tokens"], engine["max_num_seqs"])]
    arms += [a for a in (args.settings or []) if a not in arms]
    rows = []
    for m in orderings:
        knobs = {}
        if m == "blocks":
            knobs = {"tokenizer": tok, "block_size": engine["block_size"], "query": query}
        plan = reorder(inp.table, m, fds=inp.fds, **knobs).plan
        for tokens, seqs in arms:
            cfg = dict(engine, max_num_batched_tokens=tokens, max_num_seqs=seqs)
            sim = simulate_plan(inp.table, plan, query, None, tok, out_len, progress=False, **cfg)
            p = costs.predict(sim)
            row = {"ordering": m, "max_num_batched_tokens": tokens, "max_num_seqs": seqs,
                   "hit_rate": sim.summary["hit_rate"], "model": "step-cost",
                   "predicted_job_s": p.job_s, "bound": p.bound, "parts": p.parts,
                   "step_cost_job_s": p.job_s}
            if two is not None:  # the engine and the prompt feed, overlapped
                q = two.predict(sim)
                row.update(model="two-clock", predicted_job_s=q.job_s, bound=q.bound,
                           parts=q.parts, engine_s=q.engine_s, feed_s=q.feed_s)
            rows.append(row)
    base = next((r["predicted_job_s"] for r in rows if r["ordering"] == "original"
                 and (r["max_num_batched_tokens"], r["max_num_seqs"]) == arms[0]), None)
    best = _recommend(rows, arms[0], args.margin)
    result = {"table": str(args.table), "rows": inp.table.n_rows, "calibration":
              str(args.calibration), "engine": engine, "predictions": rows,
              "recommended": {m: [r["max_num_batched_tokens"], r["max_num_seqs"]]
                              for m, r in best.items()}}
    if args.json:
        print(json.dumps(result, indent=1, default=float))
        return 0
    print(f"{args.table}: {inp.table.n_rows} rows, {out_len} output tokens each; engine "
          f"{engine['num_blocks']} KV blocks of {engine['block_size']} tokens")
    print(f"{'ordering':<10} {'tokens:seqs':>12} {'hit rate':>9} {'job s':>9} {'vs original':>12}"
          f"  bound by")
    for r in rows:
        vs = f"{base / r['predicted_job_s']:.2f}x" if base else ""
        print(f"{r['ordering']:<10} {r['max_num_batched_tokens']:>6}:{r['max_num_seqs']:<5} "
              f"{r['hit_rate']:>9.1%} {r['predicted_job_s']:>9.2f} {vs:>12}  {r['bound']}")
    if len(arms) > 1:
        for m, r in best.items():
            own = (r["max_num_batched_tokens"], r["max_num_seqs"]) == arms[0]
            keep = (f" (the engine's own: no other setting predicted more than "
                    f"{args.margin:.0%} faster)") if own else ""
            print(f"recommended for {m}: max_num_batched_tokens={r['max_num_batched_tokens']} "
                  f"max_num_seqs={r['max_num_seqs']} ({r['predicted_job_s']:.2f} s){keep}")
    return 0


def _recommend(rows: list[dict], own: tuple[int, int], margin: float) -> dict[str, dict]:
    """Per ordering, the fastest predicted row if it beats the row at the engine's own
    settings ``own`` by more than ``margin`` (a fraction of its job time), else that row."""
    best = {}
    for m in dict.fromkeys(r["ordering"] for r in rows):
        mine = [r for r in rows if r["ordering"] == m]
        default = next(r for r in mine if (r["max_num_batched_tokens"], r["max_num_seqs"]) == own)
        fastest = min(mine, key=lambda r: r["predicted_job_s"])
        gain = 1 - fastest["predicted_job_s"] / default["predicted_job_s"]
        best[m] = fastest if gain > margin else default
    return best


def _two_clock(costs: Any, path: str) -> Any:
    """The calibration's two-clock model (`ggr_kv.simulate.feedtime`), or ``None`` when
    it has none (older files, or a fit that failed) or when the step costs fit the
    calibration jobs better (e.g. the CPU engine, whose per-request work is the engine's)."""
    from ggr_kv.simulate.feedtime import FeedCosts

    d = costs.meta.get("two_clock")
    if not isinstance(d, dict) or "error" in d:
        return None
    try:
        two = FeedCosts.from_dict(d)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: its two_clock model is not readable ({e})") from None
    # the model that fits the calibration jobs better (RMS relative residual) predicts
    mine, theirs = _rms_residual(two.meta), _rms_residual(costs.meta)
    if mine is not None and theirs is not None and mine > theirs:
        return None
    return two


def _rms_residual(meta: dict) -> float | None:
    r = (meta.get("fit") or {}).get("relative_residuals")
    return (sum(x * x for x in r) / len(r)) ** 0.5 if r else None


def _query(inp: Any, args: argparse.Namespace) -> tuple[str, int]:
    """The query text and output length from --query-type or --query."""
    if args.query_type is not None and args.query is not None:
        raise ValueError("give --query-type or --query, not both")
    if args.query_type is not None:
        if not hasattr(inp.family, "query"):
            raise ValueError(f"{args.table}: --query-type needs a bundled dataset; "
                             "give --query TEXT for a file")
        stage = inp.family.query(args.query_type).stages[0]
        return stage.text, args.output_len or int(stage.max_tokens)
    return args.query or "", args.output_len or 16
