"""Tables and figures of the paper-scale H200 runs (issues 12 and 13), from the run folders.

Run here, no GPU needed, after `experiments/h200_campaign.py` filled the campaign folders
of ``results/h200/`` (``paper-scale/``: ``p12-*``; ``paper-scale-repeats/``: ``p12r-*``;
``small-kv-cache/``: ``p12-kv*``, ``p13-kv*``) and ``results/h200x2/`` (``p13-*``)::

    python experiments/h200_scale.py

Rewrites the generated blocks of ``results/h200/README.md`` (``scale-orderings``,
``scale-repeats``, ``kv-sweep-scale``, ``offload``) and ``results/h200x2/README.md``
(``two-gpus``), leaving their prose alone, and writes
``small-kv-cache/figures/offload_two_tier.png``, ``results/h200x2/figures/replicas.png`` and
the comparison figures of a few groups under ``paper-scale/figures/scale-*/`` (replaced:
they are derived from the run folders).
The predictions in the tables were written by the campaign BEFORE each run started
(``predictions-*.json``, beside the runs); the two-GPU predictions are made here from the
split and the one-GPU engine's measured throughputs, with the same simulator.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ggr_kv.analysis.plots import RC, color_for, plot_comparison
from ggr_kv.analysis.readme import replace_block
from ggr_kv.analysis.report import markdown_table

H200, X2 = ROOT / "results" / "h200", ROOT / "results" / "h200x2"
#: the campaign folders of results/h200 read here (results/README.md lists them all)
SCALE, REPEATS, KV = H200 / "paper-scale", H200 / "paper-scale-repeats", H200 / "small-kv-cache"

#: the paper's GGR numbers (Llama-3-8B, 1x L4): Table 2 hit rate %, Fig. 3-4 speedups
#: "vs no cache / vs original" (as ../shared/docs/ggr-paper.md reads them); our tables'
#: counterparts: posts = BIRD, rag = SQuAD
PAPER = {("movies", "filter"): ("86", "3.8 / 2.5"), ("products", "filter"): ("83", "3.8 / 3.0"),
         ("posts", "filter"): ("85", "2.7 / 2.6"), ("beer", "filter"): ("80", "3.8 / 2.0"),
         ("rag", "rag"): ("70", "1.8 / 1.7"), ("movies", "projection"): ("", "3.3 / 2.4"),
         ("products", "projection"): ("", "2.6 / 2.4"),
         ("movies", "aggregation"): ("", "3.5 / 2.5")}
ORDER = ["no_cache", "original", "sorted", "ggr", "blocks"]


def _json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _run_row(folder: Path) -> dict:
    """One run folder's numbers (job time from its repeats; hits as vLLM counted them)."""
    m = _json(folder / "run.json")
    s, rep, c = m["summary"], m.get("repeats") or {}, m.get("counters") or {}
    job = rep.get("job_s") or [m["timings"]["job_s"]]
    return {"run_id": m["run_id"], "dataset": m["dataset"], "query": m["query_type"],
            "method": m["method"], "rows": m["rows"], "prompt_tokens": m["prompt_tokens"],
            "job_s": float(np.median(job)), "job_min": min(job), "job_max": max(job),
            "n": len(job), "hit_rate": s.get("prefix_cache_hit_rate"),
            "collector_hits": c.get("collector_hits"),
            "request_hits": c.get("request_cached_tokens"),
            "simulated_hits": c.get("simulated_hits"), "mismatch": c.get("mismatch"),
            "peak_kv": s.get("max_kv_cache_usage"), "preemptions": s.get("num_preemptions"),
            "num_kv_blocks": m.get("num_kv_blocks"), "enforce_eager":
            (m.get("engine_kwargs") or {}).get("enforce_eager"), "summary": s,
            "folder": folder}


def singles(campaign: Path) -> pd.DataFrame:
    """Every single-GPU run of a campaign folder with a prediction (its
    ``predictions-*.json``), one row each, grouped by engine + table."""
    rows = []
    for pf in sorted(campaign.glob("predictions-*.json")):
        pred = _json(pf)
        for p in pred["runs"]:
            folder = campaign / p["run_id"]
            if not (folder / "run.json").exists():
                continue  # planned, not run (the call's budget ran out)
            r = _run_row(folder)
            w = p["work"]["work"]
            r.update(engine=pf.stem, predicted_s=p["predicted_job_s"],
                     predicted_hit_rate=p["predicted_hit_rate"],
                     predicted_cached=w["prompt_tokens"] * w["hit_rate"])
            rows.append(r)
    # a run planned by one call and run by a later one: the later call's prediction
    df = pd.DataFrame(rows).drop_duplicates("run_id", keep="last")
    df["order"] = df["method"].map(ORDER.index)
    df = df.sort_values(["dataset", "query", "engine", "order"]).reset_index(drop=True)
    key = ["engine", "dataset", "query"]
    for base in ("original", "no_cache", "sorted"):
        b = df[df["method"] == base].set_index(key)["job_s"]
        df[f"vs_{base}"] = [b.get(tuple(k), np.nan) for k in df[key].to_numpy()] / df["job_s"]
    h0 = df[df["method"] == "original"].set_index(key)["hit_rate"]
    h_orig = np.array([h0.get(tuple(k), np.nan) for k in df[key].to_numpy()], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        ideal = (1 - h_orig) / (1 - df["hit_rate"].astype(float))
    df["ideal"] = ideal.where(df["method"] != "no_cache")
    df["over_ideal"] = df["vs_original"] / df["ideal"]
    df["pred_err"] = df["predicted_s"] / df["job_s"] - 1
    return df


def _job(r) -> str:
    if r["n"] > 1:
        return f"{r['job_s']:.2f} [{r['job_min']:.2f}-{r['job_max']:.2f}] (n={r['n']})"
    return f"{r['job_s']:.2f}"


def _counters(r) -> str:
    if r["method"] == "no_cache":
        return "0 = 0 = 0"
    same = r["collector_hits"] == r["request_hits"] == r["simulated_hits"]
    return "equal" if same else (f"{r['collector_hits']:,} / {r['request_hits']:,} / "
                                 f"{r['simulated_hits']:,}")


def _x(v) -> str:
    return "" if pd.isna(v) else f"{v:.2f}×"


def _pct(v) -> str:
    return "n/a" if v is None or pd.isna(v) else f"{100 * v:.1f}%"


def _paper(dataset: str, query: str) -> str:
    hit, speedups = PAPER.get((dataset.split("@")[0], query), ("", ""))
    return f"{hit}%; {speedups}" if hit else speedups


def paper_scale_table(df: pd.DataFrame) -> str:
    out = pd.DataFrame({
        "table, query": df["dataset"] + ", " + df["query"], "ordering": df["method"],
        "prompt tokens": df["prompt_tokens"].map("{:,}".format),
        "job s": df.apply(_job, axis=1), "vs original": df["vs_original"].map(_x),
        "vs no cache": df["vs_no_cache"].map(_x), "hit rate": df["hit_rate"].map(_pct),
        "ideal vs original": df["ideal"].map(_x),
        "measured / ideal": df["over_ideal"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}"),
        "predicted s": df["predicted_s"].map("{:.2f}".format),
        "predicted / measured": (df["pred_err"] + 1).map("{:.2f}".format),
        "hits: collector / requests / simulator": df.apply(_counters, axis=1),
        "peak KV": df["peak_kv"].map(_pct), "preemptions": df["preemptions"],
        "paper's GGR: hit rate; vs no cache / vs original": [
            _paper(d, q) if m == "ggr" else ""
            for d, q, m in zip(df["dataset"], df["query"], df["method"])]})
    return markdown_table(out)


def repeats_table(df: pd.DataFrame) -> str:
    out = pd.DataFrame({
        "table": df["dataset"], "ordering": df["method"], "job s, median [min-max]":
        df.apply(_job, axis=1), "vs sorted": df["vs_sorted"].map(_x),
        "hit rate": df["hit_rate"].map(_pct),
        "predicted s": df["predicted_s"].map("{:.2f}".format),
        "predicted / measured": (df["pred_err"] + 1).map("{:.2f}".format)})
    return markdown_table(out)


def _cache_runs(pattern: str) -> pd.DataFrame:
    df = pd.DataFrame([_run_row(f) for f in sorted(KV.glob(pattern))])
    df["order"] = df["method"].map(ORDER.index)
    return df


def kv_sweep_table() -> str:
    df = _cache_runs("p1[23]-kv*-movies-4000-*")
    df = df[~df["run_id"].str.contains("offload")]
    df = df.sort_values(["num_kv_blocks", "order"], ascending=[False, True])
    s = df["summary"]
    out = pd.DataFrame({
        "KV blocks (tokens)": [f"{b:,} ({16 * b:,})" for b in df["num_kv_blocks"]],
        "ordering": df["method"], "job s": df.apply(_job, axis=1),
        "hit rate (vLLM counters)": df["hit_rate"].map(_pct),
        "hit rate (requests)": (df["request_hits"] / df["prompt_tokens"]).map(_pct),
        "simulated hits": df["simulated_hits"].map("{:,}".format),
        "collector - requests, tokens": (df["collector_hits"] - df["request_hits"]).map(
            "{:,}".format),
        "lookups counted again (queries / hits)": [
            f"{x.get('prefix_preempted_queries', 0):,} / {x.get('prefix_preempted_hits', 0):,}"
            for x in s],
        "preemptions": df["preemptions"], "peak KV": df["peak_kv"].map(_pct)})
    return markdown_table(out)


def offload_table() -> str:
    df = _cache_runs("p13-kv3000*-movies-4000-*")
    df["offload"] = df["run_id"].str.contains("offload")
    df = df.sort_values(["order", "offload"])
    s = df["summary"]
    gib = 1 << 30
    out = pd.DataFrame({
        "ordering": df["method"], "CPU offload": df["offload"].map({True: "16 GiB",
                                                                   False: "none"}),
        "job s, median [min-max]": df.apply(_job, axis=1),
        "GPU-tier hit rate": df["hit_rate"].map(_pct),
        "CPU-tier queries / hits (tokens)": [
            "no tier" if x.get("offload_queries") is None
            else f"{x['offload_queries']:,} / {x['offload_hits']:,}" for x in s],
        "loaded / stored, GiB": [
            "" if x.get("offload_load_bytes") is None
            else f"{x['offload_load_bytes'] / gib:.1f} / {x['offload_store_bytes'] / gib:.1f}"
            for x in s],
        "peak CPU-tier usage": [_pct(x.get("max_cpu_cache_usage")) for x in s],
        "preemptions": df["preemptions"], "peak GPU KV": df["peak_kv"].map(_pct)})
    return markdown_table(out)


def _median_repeat(folder: Path) -> pd.DataFrame:
    steps = pd.read_parquet(folder / "steps.parquet")
    rep = (_json(folder / "run.json").get("repeats") or {}).get("median_repeat")
    if rep is not None and "repeat" in steps:
        steps = steps[steps["repeat"] == rep]
    return steps


def offload_figure(out: Path) -> None:
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        for f in sorted(KV.glob("p13-kv3000-offload16-movies-4000-*")):
            m = f.name.rsplit("-", 1)[1]
            st = _median_repeat(f)
            kw = {"color": color_for(m)}
            axes[0].plot(st["t_s"], st["prefix_hits"].cumsum() / 1e3, label=f"{m} GPU tier",
                         **kw)
            axes[0].plot(st["t_s"], st["connector_hits"].fillna(0).cumsum() / 1e3, ls=":",
                         label=f"{m} CPU tier", **kw)
            axes[1].plot(st["t_s"], 100 * st["kv_cache_usage"], label=f"{m} GPU", **kw)
            axes[1].plot(st["t_s"], 100 * st["cpu_cache_usage"], ls=":", label=f"{m} CPU", **kw)
            axes[2].plot(st["t_s"], st["num_preemptions"].cumsum(), label=m, **kw)
        _finish_time_panels(fig, axes, out, [
            "prefix-cache hits, cumulative (k tokens)", "KV cache usage (%)",
            "preemptions, cumulative"],
            "H200, movies@4000, 3,000 GPU KV blocks + 16 GiB CPU offload (vLLM 0.26, "
            "Llama-3.1-8B shape, eager): the two tiers per step")


def _finish_time_panels(fig, axes, out: Path, titles: list[str], suptitle: str) -> None:
    """Titles, time axes and legends of curve panels; the figure saved as PNG and closed."""
    for ax, t in zip(axes, titles):
        ax.set_title(t)
        ax.set_xlabel("time in job (s)")
        ax.legend(fontsize=7)
    fig.suptitle(suptitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------- two GPUs
WAYS = {"1gpu": "one GPU", "tp2": "tensor parallel 2", "groups2": "2 replicas, groups",
        "contiguous2": "2 replicas, contiguous", "round_robin2": "2 replicas, round robin"}


@functools.cache
def _blocks_plan(dataset: str, tokenizer: str):
    """(table, filter stage, `blocks` plan) of a table, as the sharded runs split it."""
    from ggr_kv.core.prompts import DEFAULT_INSTRUCTION
    from ggr_kv.datasets import load_dataset
    from ggr_kv.reorder import reorder

    ds = load_dataset(dataset)
    q = ds.query("filter").stages[0]
    table = ds.table()
    return table, q, reorder(table, "blocks", fds=ds.fds, tokenizer=tokenizer, block_size=16,
                             query=q.text, instruction=DEFAULT_INSTRUCTION).plan


def _predict_sharded(meta: dict, tp, tok) -> float:
    """The slowest replica's predicted job time, s (simulator on its rows, measured
    one-GPU throughputs of the same engine settings)."""
    from ggr_kv.run.prepare import restrict_plan
    from ggr_kv.simulate import predict_job_time, simulate_plan

    table, q, plan = _blocks_plan(meta["dataset"], tok.name)
    times = []
    for k, rows in enumerate(meta["replica_rows"]):
        sub, sub_plan, _ = restrict_plan(table, plan, np.asarray(rows))
        run_dir = Path(meta["replicas"][k]["run_dir"])  # as written on the GPU machine
        rj = _json(X2 / run_dir.parent.name / run_dir.name / "run.json")
        ea = rj["engine_args"]
        sim = simulate_plan(sub, sub_plan, q.text, None, tok, q.max_tokens, block_size=16,
                            num_blocks=rj["num_kv_blocks"], max_num_seqs=ea["max_num_seqs"],
                            max_num_batched_tokens=ea["max_num_batched_tokens"])
        times.append(predict_job_time(sim, tp).job_s)
    return max(times)


def two_gpu_rows() -> pd.DataFrame:
    from ggr_kv.core.tokenizer import load_tokenizer
    from ggr_kv.simulate import Throughputs

    pred = _json(X2 / "predictions-p13-1gpu-onegpu.json")
    tp = Throughputs.from_dict(pred["throughputs"])
    tok = load_tokenizer("llama3")
    one = {p["dataset"]: p["predicted_job_s"] for p in pred["runs"]}
    rows = []
    for f in sorted(X2.glob("p13-*")):
        way = f.name.rsplit("-", 1)[1]
        if (f / "sharded.json").exists():
            meta = _json(f / "sharded.json")
            reps = pd.DataFrame(meta["replicas"])
            per = reps.groupby("replica")[["prefix_cache_hits", "prefix_cache_queries"]].sum()
            job = meta["job_s"]
            rows.append({"dataset": meta["dataset"], "way": way, "job": job,
                         "hit_rate": per["prefix_cache_hits"].sum()
                         / per["prefix_cache_queries"].sum(),
                         "per_replica": " / ".join(_pct(h / q) for h, q in per.to_numpy()),
                         "balance": meta["balance"], "predicted_balance":
                         meta["predicted_balance"], "split": meta["split_groups"],
                         "groups": meta["groups"], "predicted_s": _predict_sharded(meta, tp, tok)})
        else:
            r = _run_row(f)
            job = (_json(f / "run.json").get("repeats") or {}).get("job_s") or [r["job_s"]]
            rows.append({"dataset": r["dataset"], "way": way, "job": job,
                         "hit_rate": r["hit_rate"], "per_replica": "", "balance": np.nan,
                         "predicted_balance": np.nan, "split": np.nan, "groups": np.nan,
                         "predicted_s": one.get(r["dataset"]) if way == "blocks" else np.nan})
    df = pd.DataFrame(rows)
    df.loc[df["way"] == "blocks", "way"] = "1gpu"
    df["job_s"] = df["job"].map(np.median)
    df["order"] = df["way"].map(list(WAYS).index)
    df = df.sort_values(["dataset", "order"]).reset_index(drop=True)
    for base in ("1gpu", "round_robin2"):
        b = df[df["way"] == base].set_index("dataset")["job_s"]
        df[f"vs_{base}"] = df["dataset"].map(b) / df["job_s"]
    return df


def two_gpu_table(df: pd.DataFrame) -> str:
    out = pd.DataFrame({
        "table": df["dataset"], "how": df["way"].map(WAYS),
        "job s, median [min-max]": [f"{np.median(j):.2f} [{min(j):.2f}-{max(j):.2f}] "
                                    f"(n={len(j)})" for j in df["job"]],
        "vs one GPU": df["vs_1gpu"].map(_x), "vs round robin": df["vs_round_robin2"].map(_x),
        "hit rate": df["hit_rate"].map(_pct), "hit rate per replica": df["per_replica"],
        "balance (slowest / mean replica)": [
            "" if pd.isna(b) else f"{b:.3f} (predicted {p:.3f})"
            for b, p in zip(df["balance"], df["predicted_balance"])],
        "prefix groups kept whole": [f"{int(g - s)} of {int(g)}" if w == "groups2" else ""
                                     for s, g, w in zip(df["split"], df["groups"], df["way"])],
        "predicted s": df["predicted_s"].map(lambda v: "" if pd.isna(v) else f"{v:.2f}")})
    return markdown_table(out)


def replicas_figure(out: Path) -> None:
    with plt.rc_context(RC):
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
        for how, color in (("groups2", "C2"), ("round_robin2", "C3")):
            folder = X2 / f"p13-shortgroups-6000-blocks-{how}"
            meta = _json(folder / "sharded.json")
            med = int(np.argsort(meta["job_s"])[(len(meta["job_s"]) - 1) // 2]) + 1
            for k, ls in ((0, "-"), (1, "--")):
                st = pd.read_parquet(folder / f"replica-{k}-r{med}" / "steps.parquet")
                lab = f"{WAYS[how].split(', ')[1]}, replica {k}"
                axes[0].plot(st["t_s"], 100 * st["hit_rate_cum"], ls=ls, color=color, label=lab)
                axes[1].plot(st["t_s"], 100 * st["kv_cache_usage"], ls=ls, color=color,
                             label=lab)
        _finish_time_panels(fig, axes, out, [
            "prefix-cache hit rate, cumulative (%)", "KV cache usage (%)"],
            "2x H200, shortgroups@6000 (blocks order): a replica per GPU, split by prefix "
            "group or round robin (median repeat)")


def cached_term_check(runs: pd.DataFrame, train: str = "predictions-p12-A") -> str:
    """What the job-time model misses, tested out of sample: a cost per cached prompt token
    (attention over the cached context), fitted on one call's runs (relative least
    squares of measured - predicted), added to every other run's prediction.

    ``runs``: `singles` rows (their predictions and measured job times)."""
    fit, test = runs[runs["engine"] == train], runs[runs["engine"] != train]
    x = (fit["predicted_cached"] / fit["job_s"]).to_numpy()
    y = ((fit["job_s"] - fit["predicted_s"]) / fit["job_s"]).to_numpy()
    c = float(x @ y / (x @ x))
    before = test["predicted_s"] / test["job_s"]
    after = (test["predicted_s"] + c * test["predicted_cached"]) / test["job_s"]
    within = lambda r: f"{(abs(r - 1) <= 0.1).sum()} of {len(r)} within 10%"
    return (f"a cached-token cost of {c * 1e6:.2f} us/token fitted on the {len(fit)} runs of "
            f"{train}, on the other {len(test)}: predicted / measured median "
            f"{before.median():.2f} -> {after.median():.2f}, range {before.min():.2f}-"
            f"{before.max():.2f} -> {after.min():.2f}-{after.max():.2f}, {within(before)} -> "
            f"{within(after)}")


#: comparison figures (every curve per engine step) of some single-engine groups
CURVES = {"scale-movies-filter": "p12-movies-10000-*",
          "scale-products-projection": "p12-products-4000-projection-*",
          "scale-rag": "p12-rag-1500-*"}


def curve_figures() -> None:
    """The standard comparison figures (hit rate, KV usage, queue, token rates, job time)
    of a few groups, as PNG (replaced on every run: derived from the run folders)."""
    for name, pattern in CURVES.items():
        figs = plot_comparison(sorted(SCALE.glob(pattern)), save=False)
        out = SCALE / "figures" / name
        out.mkdir(parents=True, exist_ok=True)
        for fig_name, fig in figs.figures.items():
            fig.savefig(out / f"{fig_name}.png", dpi=100)
            plt.close(fig)


def main() -> None:
    single, repeats = singles(SCALE), singles(REPEATS)
    readme = H200 / "README.md"
    replace_block(readme, "scale-orderings", paper_scale_table(single) + "\n")
    replace_block(readme, "scale-repeats", repeats_table(repeats) + "\n")
    replace_block(readme, "kv-sweep-scale", kv_sweep_table() + "\n")
    replace_block(readme, "offload", offload_table() + "\n")
    (KV / "figures").mkdir(exist_ok=True)
    offload_figure(KV / "figures" / "offload_two_tier.png")
    curve_figures()
    busy = single[single["method"] != "no_cache"]
    print(f"prediction / measurement over {len(busy)} caching runs: median "
          f"{(busy['pred_err'] + 1).median():.2f}, range {(busy['pred_err'] + 1).min():.2f}-"
          f"{(busy['pred_err'] + 1).max():.2f}")
    print(cached_term_check(pd.concat([single, repeats], ignore_index=True)))
    two = two_gpu_rows()
    replace_block(X2 / "README.md", "two-gpus", two_gpu_table(two) + "\n")
    (X2 / "figures").mkdir(exist_ok=True)
    replicas_figure(X2 / "figures" / "replicas.png")
    print(f"wrote the blocks of {readme} and {X2 / 'README.md'}")


if __name__ == "__main__":
    main()
