"""``ggr-kv reorder TABLE --method M``: reorder rows and fields, print PHC and hit rates."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ggr_kv.cli.commands.score import (
    LABELS,
    add_score_arguments,
    compute_score,
    load_score_tokenizer,
    run_metadata,
)
from ggr_kv.cli.common import (
    add_input_arguments,
    check_out_path,
    emit,
    key_value,
    load_input,
    positive_int,
)

#: options for an ordering that takes a finite cache's settings as knobs (``blocks``)
_CACHE_OPTIONS = ("kv_blocks", "max_num_seqs", "output_len", "max_num_batched_tokens")


def _methods_help() -> str:
    """One line per registered method: its name and what it optimizes."""
    from ggr_kv.reorder.registry import method_names, objective_of

    text = "; ".join(f"{m} ({objective_of(m)})" for m in method_names())
    return "reorder method: " + text.replace("%", "%%")


def _fd_group(text: str) -> tuple[str, ...] | str:
    if text.strip() in ("auto", "none"):
        return text.strip()
    cols = tuple(c.strip() for c in text.split(","))
    if len(cols) < 2 or not all(cols):
        raise argparse.ArgumentTypeError(
            f"FD group {text!r} must name two or more columns separated by commas"
        )
    return cols


def _cache_readers() -> list:
    from ggr_kv.reorder.registry import orderings

    return [o for o in orderings() if set(_CACHE_OPTIONS) <= set(o.knobs)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    from ggr_kv.reorder.registry import method_names

    parser.add_argument("--method", required=True, choices=method_names(),
                        help=_methods_help())
    parser.add_argument(
        "--fd",
        action="extend",
        nargs="+",
        type=_fd_group,
        default=None,
        metavar="COL,COL",
        help="a functional-dependency group (columns that determine each other); "
        "give several groups after one --fd or repeat --fd; 'auto' discovers exact ones; "
        "default: the groups a bundled dataset (or the paper's layout of the table) declares; "
        "'none' for no groups",
    )
    parser.add_argument(
        "--knob",
        action="append",
        type=key_value("knob"),
        default=[],
        metavar="KEY=VALUE",
        help="a method setting passed to ggr_kv.reorder.reorder (VALUE parsed as JSON)",
    )
    readers = " / ".join(o.name for o in _cache_readers())
    cache = parser.add_argument_group(
        f"{readers} (--tokenizer, --block-size, --query and --instruction describe the "
        "prompts; these order rows for a finite KV cache)"
    )
    cache.add_argument("--kv-blocks", type=positive_int, default=None, metavar="N",
                       help="the engine's KV blocks (num_gpu_blocks); default: unbounded")
    cache.add_argument("--max-num-seqs", type=positive_int, default=None, metavar="N")
    cache.add_argument("--output-len", type=positive_int, default=None, metavar="TOKENS")
    cache.add_argument("--max-num-batched-tokens", type=positive_int, default=None,
                       metavar="TOKENS")
    parser.add_argument("--out", default=None, metavar="PLAN.json", help="write the plan here")
    parser.add_argument("--force", action="store_true", help="let --out replace an existing file")
    add_score_arguments(parser)


def main(args: argparse.Namespace) -> int:
    from ggr_kv.core.atomic import write_atomic
    from ggr_kv.reorder.methods import reorder
    from ggr_kv.reorder.registry import get_ordering, objective_of

    ordering = get_ordering(args.method)
    out = None
    if args.out:  # before the solver runs, not after
        out = check_out_path(args.out, force=args.force, inputs=[args.table])
    tokenizer = load_score_tokenizer(args)
    inp = load_input(args.table, sep=args.sep)
    table = inp.table
    fds: list[tuple[str, ...]] | str | None = args.fd
    for word in ("auto", "none"):
        if fds and word in fds:
            if len(fds) > 1:
                raise ValueError(f"--fd {word} stands alone; do not list groups beside it")
            fds = word
    if fds is None:
        fds = inp.fds
    elif fds == "none":
        fds = None
    knobs = dict(args.knob)
    given = [o for o in _CACHE_OPTIONS if getattr(args, o) is not None]
    takes = set(ordering.knobs)
    bad = [o for o in given if o not in takes]
    if bad:
        readers = [o.name for o in _cache_readers()]
        raise ValueError(f"--{bad[0].replace('_', '-')} orders rows for a finite cache: "
                         f"only --method {' / '.join(readers)} reads it")
    facts = {"tokenizer": tokenizer if tokenizer is not None else "llama3",
             "block_size": args.block_size or 16, "query": args.query,
             "instruction": args.instruction}
    for k in ordering.context:  # score exactly the prompts the options describe
        knobs.setdefault(k, facts[k])
    knobs.update({o: getattr(args, o) for o in given})
    if "progress" in takes:
        knobs.setdefault("progress", sys.stderr.isatty())  # a tqdm bar on a terminal
    res = reorder(table, args.method, fds=fds, **knobs)
    found = res.info.get("fd_groups")
    if fds == "auto":
        print(f"--fd auto found {len(found or [])} FD group(s): "
              + ("; ".join(",".join(g) for g in found) if found else "none"), file=sys.stderr)
    if out is not None:
        import json

        check_out_path(out, force=args.force, inputs=[args.table])  # again: files may move
        # the FD groups used travel with the plan (readers of plans ignore extra keys)
        text = json.dumps({**res.plan.to_dict(), "method": res.method,
                           "fd_groups": found, "fd_source": fds if isinstance(fds, str)
                           else ("given" if fds else "none")})
        write_atomic(out, text, overwrite=args.force)
    result: dict[str, Any] = {"table": str(args.table), "method": res.method,
                              "optimizes": objective_of(res.method)}
    if res.info.get("winner"):
        result["winner"] = res.info["winner"]
    result["seconds"] = float(res.seconds)
    result["plan"] = str(out) if out is not None else None
    result.update(compute_score(table, res.plan, args, tokenizer))
    if args.json:
        result["fds"] = fds if isinstance(fds, str) else [list(g) for g in fds or []] or None
        result["knobs"] = {k: v for k, v in knobs.items() if k not in ("tokenizer", "progress")}
        result["info"] = res.info
        result.update(run_metadata(args))
    emit(result, args.json, LABELS)
    return 0
