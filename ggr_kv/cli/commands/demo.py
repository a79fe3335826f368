"""``ggr-kv demo``: ``ggr-kv compare`` on the bundled default, CPU engine.

120 movie rows, every ordering but ``ophr`` (exponential), 3 timed jobs each on one warm
engine, interleaved, 4 output tokens per row, into a new ``results/demo-<dataset>-<time>/``
folder: a run folder per ordering, ``figures/``, ``report.md``, ``live_curves.png``,
``vllm.log`` and ``demo.json`` (the arguments, wall time). It ends with the table the
README shows (``make demo-table`` writes it into the README).

The default model, ``demo-llama`` (8 layers, hidden 512, dummy weights, real Llama-3
tokenizer), makes prefill most of a job's time on a CPU, so the prefix cache's savings
show in job times, as they do on a GPU with a real model
(``benchmarks/bench_demo_shape.py`` measures it). The 2-layer ``tiny-llama`` that tests
use makes prefill nearly free: orderings with 0% and 71% hits then take the same time.
The notebooks show the same steps one cell at a time (``make lab``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import shutil
from pathlib import Path

from ggr_kv.cli.common import positive_int

#: vLLM's KV block size on the CPU backend (tokens)
CPU_BLOCK_SIZE = 128


def _default_orderings() -> list[str]:
    """The orderings of default comparisons (the registry's; not ``ophr``, exponential, nor
    the ``trie`` baseline). ``no_cache`` is left out by default: three more full-prefill
    jobs would add a minute or two."""
    from ggr_kv.reorder.registry import method_names

    return list(method_names(default_only=True))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default="movies", help="bundled dataset (default: movies)")
    p.add_argument("--rows", type=positive_int, default=120, help="rows to run through vLLM")
    p.add_argument("--model", default="demo-llama",
                   help="models.SHAPES name or model path (default: demo-llama)")
    p.add_argument("--repeats", type=positive_int, default=3,
                   help="timed jobs per ordering; the table shows the median [min-max]")
    p.add_argument("--max-tokens", type=positive_int, default=4,
                   help="output tokens per row (few: the demo is about prefill)")
    p.add_argument("--out-dir", default="results", help="folder of result folders")
    p.add_argument("--orderings", nargs="+", default=None,
                   help="orderings to run (default: every method but ophr; add no_cache for "
                        "the baseline without prefix caching)")
    p.add_argument("--kv-space", type=float, default=None, metavar="GIB",
                   help="GiB of KV cache (default: 2, less when memory is short)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="show vLLM's and transformers' logs")


def compare_argv(args: argparse.Namespace, name: str) -> list[str]:
    """The ``ggr-kv compare`` arguments the demo runs."""
    argv = [args.dataset, "--rows", str(args.rows), "--model", args.model,
            "--repeats", str(args.repeats), "--max-tokens", str(args.max_tokens),
            "--out-dir", args.out_dir, "--name", name,
            "--methods", ",".join(args.orderings or _default_orderings())]
    if args.kv_space is not None:
        argv += ["--kv-space", str(args.kv_space)]
    return argv + [f for f, on in (("--verbose", args.verbose),
                                   ("--no-progress", args.no_progress)) if on]


def main(args: argparse.Namespace) -> int:
    from ggr_kv.cli.commands import compare

    parser = argparse.ArgumentParser(prog="ggr-kv compare")
    compare.add_arguments(parser)
    name = f"demo-{args.dataset}-{_dt.datetime.now().strftime('%Y%m%d-%H%M%S')}"
    cargs = parser.parse_args(compare_argv(args, name))
    print(f"[demo] ggr-kv compare {' '.join(compare_argv(args, name))}", flush=True)
    compare.compare(cargs, record_name="demo.json", prefix="demo")
    print("README table: make demo-table")
    exe = shutil.which("ggr-kv")
    if exe is None:
        venv = Path(".venv/bin/ggr-kv")
        hint = f"{venv} (or `source .venv/bin/activate` first)" if venv.exists() else "ggr-kv"
        print(f"more: {hint} --help; the README's 'Use it' section")
    return 0
