"""``ggr-kv run TABLE_OR_DATASET``: run a table through vLLM and save a run folder.

The rows run in the order of ``--plan PLAN.json`` or of ``--method`` (default: the
input order); the query is ``--query TEXT`` or a template (``--query-type``). The
engine is started here (``--model``, engine options) unless ``--server-url`` names a
running vLLM server. Prints the run's summary (``--json``: one JSON object).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HELP = "run a table through vLLM with the metrics collector and save a run folder"


def _engine_arg(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"engine argument {text!r} must look like KEY=VALUE")
    try:
        value = json.loads(raw)  # numbers, true/false, null, lists, objects
    except json.JSONDecodeError:
        value = raw
    return key, value


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "table", metavar="TABLE_OR_DATASET", help="a .csv/.parquet table or a bundled dataset name"
    )
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--plan", default=None, help="plan JSON written by `ggr-kv reorder --out`")
    order.add_argument(
        "--method",
        default=None,
        help="reorder first: original, sorted, ggr, ophr (default: original)",
    )
    q = parser.add_mutually_exclusive_group()
    q.add_argument("--query", default=None, help="query text of every prompt")
    q.add_argument(
        "--query-type",
        default=None,
        help="a query template for the dataset: filter, projection, multi_llm, aggregation, rag",
    )
    parser.add_argument("--instruction", default=None, help="instruction opening every prompt")
    parser.add_argument(
        "--model",
        default="tiny-llama",
        help="a dummy-weight shape (tiny-llama, llama-3.2-1b, llama-3.1-8b) or a model folder / "
        "Hugging Face id with weights (default: tiny-llama)",
    )
    parser.add_argument("--rows", type=_positive, default=None, help="use the first N rows only")
    parser.add_argument(
        "--out-dir", default="results", help="folder of run folders (default: results)"
    )
    parser.add_argument(
        "--run-id", default=None, help="run folder name (default: dataset-method-time)"
    )
    parser.add_argument("--server-url", default=None, help="use this running vLLM server instead")
    parser.add_argument(
        "--max-concurrency",
        type=_positive,
        default=32,
        help="server requests in flight (default 32)",
    )
    parser.add_argument("--max-tokens", type=_positive, default=None, help="output tokens per row")
    eng = parser.add_argument_group("engine (ignored with --server-url)")
    eng.add_argument("--tensor-parallel-size", type=_positive, default=1)
    eng.add_argument("--pipeline-parallel-size", type=_positive, default=1)
    eng.add_argument("--dtype", default="auto")
    eng.add_argument("--gpu-memory-utilization", type=float, default=None, metavar="F")
    eng.add_argument("--max-model-len", type=_positive, default=None, metavar="TOKENS")
    eng.add_argument("--max-num-seqs", type=_positive, default=None, metavar="N")
    eng.add_argument("--max-num-batched-tokens", type=_positive, default=None, metavar="TOKENS")
    eng.add_argument("--block-size", type=_positive, default=None, metavar="TOKENS")
    eng.add_argument("--enforce-eager", action="store_true")
    eng.add_argument(
        "--no-prefix-caching",
        action="store_true",
        help="turn vLLM's prefix cache off (the no-cache baseline)",
    )
    eng.add_argument(
        "--engine-arg",
        action="append",
        type=_engine_arg,
        default=[],
        metavar="KEY=VALUE",
        help="any other vllm.LLM argument (VALUE parsed as JSON), e.g. "
        "distributed_executor_backend=ray; repeat for several",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _load(args: argparse.Namespace) -> tuple[Any, Any, str, Any, Any]:
    """``(what run_table gets, its Table, dataset name, FD groups, query family)``.

    An existing file is read with `load_table` (as ``ggr-kv reorder`` reads it, so its
    plans fit); its FD groups and query family come from the paper's layouts when its
    columns match one. Anything else is a bundled dataset name
    (`ggr_kv.datasets.load_dataset`, first ``--rows`` rows).
    """
    from ggr_kv.core.table import Table, TableError, load_table
    from ggr_kv.datasets.catalog import load_dataset, recognize

    path = Path(args.table)
    if path.exists():
        table = load_table(path)
        if args.rows is not None:
            if args.rows > table.n_rows:
                raise TableError(f"{path}: --rows {args.rows} but the table has {table.n_rows}")
            table = Table.from_frame(table.to_frame().head(args.rows), str(path))
        layout = recognize(table.columns)
        fds = None
        if layout is not None:
            fds = [g for g in layout.fds if all(c in table.columns for c in g)] or None
        family = layout.kind if layout is not None else path.stem
        return table, table, path.stem, fds, family
    ds = load_dataset(args.table, n=args.rows, sample="head")
    return ds, ds.table(), str(ds.name), ds.fds or None, ds


def _query(args: argparse.Namespace, family: Any) -> Any:
    """The query: ``--query-type``'s template for the table's family, else ``--query``."""
    if args.query_type is not None:
        from ggr_kv.datasets.queries import get_query

        return get_query(family, args.query_type)
    return args.query or ""


def _engine(args: argparse.Namespace):
    """`EngineConfig` from the engine options; ``--engine-arg`` may set any field too."""
    from ggr_kv.engine.config import EngineConfig

    fields = {
        "model": args.model,
        "dtype": args.dtype,
        "tensor_parallel_size": args.tensor_parallel_size,
        "pipeline_parallel_size": args.pipeline_parallel_size,
        "gpu_memory_utilization": args.gpu_memory_utilization,
        "max_model_len": args.max_model_len,
        "max_num_seqs": args.max_num_seqs,
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "block_size": args.block_size,
        "enforce_eager": args.enforce_eager,
        "enable_prefix_caching": not args.no_prefix_caching,
    }
    given = dict(args.engine_arg)
    defaults = EngineConfig()
    clash = sorted(
        k for k in given
        if k in fields and fields[k] is not None and fields[k] != getattr(defaults, k, None)
        and fields[k] != given[k]
    )
    if clash:
        raise ValueError(f"--engine-arg sets {clash}, which options on the command line set too")
    settings = {k: v for k, v in fields.items() if v is not None}
    settings.update(given)
    return EngineConfig.from_dict(settings)


_LABELS = (
    ("run_id", "run id"),
    ("path", "run folder"),
    ("dataset", "dataset"),
    ("method", "method"),
    ("query_type", "query type"),
    ("rows", "rows"),
    ("model", "model"),
    ("device", "device"),
    ("vllm_version", "vLLM"),
    ("block_size", "block size (tokens)"),
    ("num_kv_blocks", "KV blocks"),
    ("enable_prefix_caching", "prefix caching"),
    ("prompt_tokens", "prompt tokens"),
    ("output_tokens", "output tokens"),
    ("prefix_cache_queries", "prefix-cache queries (tokens)"),
    ("prefix_cache_hits", "prefix-cache hits (tokens)"),
    ("prefix_cache_hit_rate", "prefix-cache hit rate"),
    ("max_kv_cache_usage", "peak KV usage"),
    ("num_preemptions", "preemptions"),
    ("reorder_s", "reorder s"),
    ("engine_start_s", "engine start s"),
    ("job_s", "job s"),
    ("total_s", "total s"),
    ("mean_score", "mean score (1-5)"),
)


def summarize(result: Any) -> dict[str, Any]:
    """The printed fields of a `RunResult`: run.json's headline values."""
    m = result.meta
    out: dict[str, Any] = {"run_id": result.run_id, "path": str(result.path)}
    for k in ("dataset", "method", "query_type", "rows", "model", "device", "vllm_version",
              "block_size", "num_kv_blocks", "enable_prefix_caching", "prompt_tokens",
              "output_tokens"):
        out[k] = m.get(k)
    for k in ("prefix_cache_queries", "prefix_cache_hits", "prefix_cache_hit_rate",
              "max_kv_cache_usage", "num_preemptions"):
        out[k] = result.summary.get(k)
    out.update(result.timings)
    if m.get("aggregate"):
        out["mean_score"] = m["aggregate"].get("mean_score")
    return out


def _print(summary: dict[str, Any]) -> None:
    width = max(len(label) for _, label in _LABELS)
    for key, label in _LABELS:
        v = summary.get(key)
        if v is None:
            continue
        if key.endswith("_rate") or key == "max_kv_cache_usage":
            text = f"{v:.4f} ({100 * v:.1f}%)"
        elif key.endswith("_s"):
            text = f"{v:.3f}"
        elif isinstance(v, bool):
            text = "on" if v else "off"
        elif isinstance(v, int):
            text = f"{v:,}"
        elif isinstance(v, float):
            text = f"{v:,.4g}"
        else:
            text = str(v)
        print(f"{label:<{width}}  {text}")
    sys.stdout.flush()


def main(args: argparse.Namespace) -> int:
    import os

    # vLLM logs to stdout by default; keep stdout for the summary (--json is parsed)
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    from ggr_kv.core.jsonutil import dumps
    from ggr_kv.core.paths import project_path
    from ggr_kv.core.plan import ReorderPlan
    from ggr_kv.core.prompts import DEFAULT_INSTRUCTION
    from ggr_kv.run.rundir import check_run_dir_free
    from ggr_kv.run.runner import run_table

    if args.run_id is not None:
        check_run_dir_free(project_path(args.out_dir), args.run_id)  # before any slow work
    engine = None if args.server_url else _engine(args)
    data, table, dataset, fds, family = _load(args)
    query = _query(args, family)
    if args.plan is not None:
        plan: Any = ReorderPlan.from_json(Path(args.plan), table)
    elif args.method is not None and args.method != "original":
        from ggr_kv.reorder.methods import reorder

        plan = reorder(table, args.method, fds=fds)
    else:
        plan = None
    result = run_table(
        data,
        plan,
        query,
        instruction=args.instruction or DEFAULT_INSTRUCTION,
        engine=engine,
        sampling={"max_tokens": args.max_tokens} if args.max_tokens else None,
        dataset=dataset,
        # a plan file's name says nothing reliable about its method: label it "custom"
        method=args.method or ("custom" if args.plan else "original"),
        out_dir=args.out_dir,
        run_id=args.run_id,
        server_url=args.server_url,
        max_concurrency=args.max_concurrency,
        progress=not args.no_progress,
    )
    summary = summarize(result)
    if args.json:
        print(dumps(summary))
    else:
        _print(summary)
    return 0
