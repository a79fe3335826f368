"""Overhead of `VLLMMetricsCollector` on ``llm.generate`` (target: < 2 % wall time).

One engine, the same prompts (rows of the bundled ``data/movies.csv`` in GGR order,
through the project's serializer), and runs without the collector and with each
collection tier, alternated in a rotating order over several repetitions; the prefix
cache is reset before every run so each one does the same work. Reported: median wall
time per mode, overhead of the medians, and the median of per-repetition paired ratios
(robust to drift on a shared machine). Because end-to-end timings on a busy machine
carry a few % of noise, deterministic costs are measured too: the collector's work per
engine step (output tap + stat logger ``record()``, on real vLLM stats objects), a
collector's start + stop (threads, NVML probe; the step logger is attached once per
engine, not per window) and one ``collect_internal_stats()``, and turned into a bound on
the overhead of the measured runs. Results are appended to ``benchmarks/RESULTS-collector.md`` with
versions and hardware; earlier sections are kept.

    python benchmarks/bench_collector.py                 # tiny dummy-weight Llama, CPU
    python benchmarks/bench_collector.py --rows 512 --reps 9
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QUERY = "Is the review positive or negative? Answer with one word."


def _args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="tiny-llama", help="ggr_kv.engine.models shape or model path")
    p.add_argument("--table", default=str(ROOT / "data" / "movies.csv"))
    p.add_argument("--rows", type=int, default=256, help="prompts per run (table rows)")
    p.add_argument("--method", default="ggr", help="row/field order (ggr_kv.reorder.METHODS)")
    p.add_argument("--max-tokens", type=int, default=16, help="generated tokens per prompt")
    p.add_argument("--reps", type=int, default=7, help="repetitions of every mode")
    p.add_argument(
        "--tiers",
        default="stat_logger,get_metrics_poll",
        help="comma-separated collector tiers to compare with no collector",
    )
    p.add_argument("--resource-interval", type=float, default=0.1, help="seconds")
    p.add_argument("--no-resources", action="store_true", help="collector without psutil/NVML")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS-collector.md"))
    return p.parse_args(argv)


def _fixed_costs(llm, resources: bool, interval: float) -> tuple[float, float, float, float]:
    """Costs measured in isolation: the collector's work per engine step (us), a
    collector's start + stop (ms), one resource sample (ms; psutil over the process tree
    + NVML), and one ``collect_internal_stats()`` (ms).

    The per-step cost is timed on vLLM's own objects, the kind the engine produces once
    per step: an ``EngineCoreOutputs`` (8 request outputs, ``SchedulerStats``) read by
    the output tap, then ``IterationStats`` passed to the step logger's ``record``, with
    a window open (rows kept), as during a run.
    """
    import types

    from vllm.v1.engine import EngineCoreOutput, EngineCoreOutputs
    from vllm.v1.metrics.stats import IterationStats, PrefixCacheStats, SchedulerStats

    from ggr_kv.collector import VLLMMetricsCollector
    from ggr_kv.collector.stat_logger import install_output_tap, step_logger_cls
    from ggr_kv.engine.resources import ResourceSampler

    logger = step_logger_cls()(None, [0])
    pcs = PrefixCacheStats()
    pcs.record(4096, 2048, preempted=False)
    outs = EngineCoreOutputs(
        outputs=[EngineCoreOutput(request_id=str(i), new_token_ids=[1]) for i in range(8)],
        scheduler_stats=SchedulerStats(num_running_reqs=8, prefix_cache_stats=pcs),
    )
    client = types.SimpleNamespace(get_output=lambda: outs)
    install_output_tap(types.SimpleNamespace(engine_core=client), logger.step_log, False)
    it = IterationStats()
    log = logger.step_log
    log.pin(0, log.cursor())
    n = 100_000
    t0 = time.perf_counter()
    for _ in range(n):
        got = client.get_output()
        logger.record(got.scheduler_stats, it, None, 0)
    step_us = (time.perf_counter() - t0) / n * 1e6
    log.unpin(0)
    sampler = ResourceSampler(3600.0, gpu=True)  # its own thread stays idle here
    sampler.start()
    t0 = time.perf_counter()
    for _ in range(200):
        sampler._sample()
    sample_ms = (time.perf_counter() - t0) / 200 * 1e3
    sampler.stop()
    costs = []
    for _ in range(20):
        col = VLLMMetricsCollector(llm, sample_resources=resources, resource_interval_s=interval)
        t0 = time.perf_counter()
        with col:
            pass
        costs.append(time.perf_counter() - t0)
    seed = VLLMMetricsCollector(llm, sample_resources=False)
    t0 = time.perf_counter()
    for _ in range(200):
        seed.collect_internal_stats()
    snap_ms = (time.perf_counter() - t0) / 200 * 1e3
    return step_us, statistics.median(costs) * 1e3, sample_ms, snap_ms


def _markdown(df) -> str:
    """A pipe table (pandas' to_markdown needs the optional tabulate package)."""
    import pandas as pd

    def cell(v) -> str:
        if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:.3f}" if isinstance(v, float) else str(v)

    out = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    out += ["| " + " | ".join(cell(v) for v in rec) + " |" for rec in df.itertuples(index=False)]
    return "\n".join(out)


def _prompts(a: argparse.Namespace) -> list[str]:
    """The first ``--rows`` rows of ``--table`` in ``--method`` order, as prompts."""
    from ggr_kv.core.prompts import build_prompts
    from ggr_kv.core.table import Table, load_table
    from ggr_kv.reorder import reorder

    df = load_table(a.table).to_frame()
    if a.rows > len(df):
        raise SystemExit(f"--rows {a.rows} but {a.table} has {len(df)} rows")
    t = Table.from_frame(df.head(a.rows), a.table)
    return build_prompts(t, reorder(t, a.method).plan, QUERY)


def _time_modes(llm, prompts, params, modes, a) -> tuple[dict, dict]:
    """Wall time (s) of every mode over ``a.reps`` repetitions in rotating order, after
    one warm-up each; the last collector summary of each collecting mode."""
    from tqdm import tqdm

    from ggr_kv.collector import VLLMMetricsCollector

    def run(mode: str) -> tuple[float, dict | None]:
        if not llm.reset_prefix_cache():
            raise RuntimeError("reset_prefix_cache() failed: blocks still in use")
        t0 = time.perf_counter()
        if mode == "none":
            llm.generate(prompts, params, use_tqdm=False)
            return time.perf_counter() - t0, None
        col = VLLMMetricsCollector(
            llm,
            tier=mode,
            sample_resources=not a.no_resources,
            resource_interval_s=a.resource_interval,
        )
        with col:
            llm.generate(prompts, params, use_tqdm=False)
        return time.perf_counter() - t0, col.summary()

    for mode in modes:  # warm-up: compile paths, lazy imports, NVML probe
        run(mode)
    times: dict[str, list[float]] = {m: [] for m in modes}
    summaries: dict[str, dict] = {}
    for rep in tqdm(range(a.reps), desc="repetitions"):
        order = modes[rep % len(modes) :] + modes[: rep % len(modes)]  # rotate positions
        for mode in order:
            wall, summ = run(mode)
            times[mode].append(wall)
            if summ is not None:
                summaries[mode] = summ
    return times, summaries


def _table(times: dict, summaries: dict, modes: list[str]):
    """Median, spread and overheads per mode (a DataFrame)."""
    import pandas as pd

    base = statistics.median(times["none"])
    rows = []
    for m in modes:
        med = statistics.median(times[m])
        paired = statistics.median(
            [w / n - 1 for w, n in zip(times[m], times["none"], strict=True)]
        )
        s = summaries.get(m, {})
        rows.append(
            {
                "mode": "no collector" if m == "none" else m,
                "median_s": med,
                "min_s": min(times[m]),
                "max_s": max(times[m]),
                "overhead_of_medians_%": 100 * (med / base - 1),
                "paired_overhead_%": 100 * paired,
                "rows_recorded": s.get("num_rows"),
                "hit_rate": s.get("prefix_cache_hit_rate"),
            }
        )
    res = pd.DataFrame(rows)
    res["rows_recorded"] = res["rows_recorded"].astype("Int64")
    return res


def _write(out: Path, meta: dict, res) -> None:
    """Put this run's section first in ``out``, keeping earlier runs."""
    lines = [f"## Run {meta['date']}", ""]
    lines += [f"- {k}: {v}" for k, v in meta.items()]
    lines += ["", _markdown(res), ""]
    head = (
        "# VLLMMetricsCollector overhead\n\n"
        "Wall time of `llm.generate` over the same prompts without and with the collector "
        "(default settings: per-step stat logger plus psutil/NVML sampling), prefix cache reset "
        "before each run, modes alternated in rotating order; plus the deterministic per-step "
        "and per-run costs of the collector, measured in isolation. Target: < 2 % for "
        "`stat_logger`. `paired_overhead_%` is the median over repetitions of "
        "(time with / time without in the same repetition - 1). Produced by "
        "`benchmarks/bench_collector.py`; newest run first, earlier runs kept.\n\n"
    )
    old = out.read_text() if out.exists() else ""
    body = old[old.index("## Run") :] if "## Run" in old else old  # earlier runs, kept
    out.write_text(head + "\n".join(lines) + "\n" + body)
    print(f"appended to {out}")


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import vllm
    from vllm import LLM, SamplingParams

    from ggr_kv.engine.models import resolve_model

    prompts = _prompts(a)
    modes = ["none", *[x.strip() for x in a.tiers.split(",") if x.strip()]]
    model, dummy = resolve_model(a.model, ROOT / "models")
    t_start = time.perf_counter()
    llm = LLM(
        model=model,
        load_format="dummy" if dummy else "auto",
        disable_log_stats=False,
        enforce_eager=True,
        max_model_len=4096,
        seed=0,
    )
    engine_s = time.perf_counter() - t_start
    load_before = os.getloadavg()[0]
    params = SamplingParams(max_tokens=a.max_tokens, ignore_eos=True, temperature=0.0)
    times, summaries = _time_modes(llm, prompts, params, modes, a)
    res = _table(times, summaries, modes)
    print(res.to_string(index=False))
    base = statistics.median(times["none"])
    steps = summaries.get("stat_logger", {}).get("num_steps")
    prompt_tokens = summaries.get("stat_logger", {}).get("prompt_tokens")
    record_us, startstop_ms, sample_ms, snap_ms = _fixed_costs(
        llm, not a.no_resources, a.resource_interval
    )
    # CPU time the collector spends per run, as a share of the run's wall time: per-step
    # records, start+stop, and (with sampling on) one sample per interval
    sampling_share = 0.0 if a.no_resources else sample_ms * 1e-3 / a.resource_interval
    bound = (record_us * 1e-6 * (steps or 0) + startstop_ms * 1e-3) / base + sampling_share

    import torch

    meta = {
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "vllm": vllm.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.system()}",
        "device": next(iter(summaries.values()), {}).get("device"),
        "model": f"{a.model} ({'dummy weights' if dummy else 'weights'})",
        "prompts": f"{len(prompts)} rows of {Path(a.table).name}, {prompt_tokens} prompt tokens",
        "max_tokens": a.max_tokens,
        "engine steps per run": steps,
        "repetitions": a.reps,
        "resource sampling": "off" if a.no_resources else f"every {a.resource_interval} s",
        "engine start (s)": round(engine_s, 1),
        "load average (1 min) before / after the timed runs (other processes share the CPUs)": (
            f"{load_before:.1f} / {os.getloadavg()[0]:.1f}"
        ),
        "collector work per engine step, output tap + record() (us, microbenchmark)": round(
            record_us, 2
        ),
        "collector start+stop (ms, median of 20)": round(startstop_ms, 2),
        "one resource sample (ms, psutil + NVML, mean of 200)": round(sample_ms, 3),
        "one collect_internal_stats() (ms, mean of 200)": round(snap_ms, 3),
        "collector CPU time / run wall time, from these costs (%)": round(100 * bound, 3),
        "command": "python benchmarks/bench_collector.py "
        + " ".join(sys.argv[1:] if argv is None else argv),
    }
    _write(Path(a.out), meta, res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
