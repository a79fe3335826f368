"""Tables of issue 22 from the run folders: predicted vs measured job time, spreads,
the per-step profile and the engine-settings trial.

    python experiments/jobtime_table.py results/h200/jobtime            # print
    python experiments/jobtime_table.py results/h200/jobtime --write    # README.md tables

Every number comes from files in the folder: ``predictions-jN.json`` (written before
the runs of call N, with that call's calibration), ``calibration-jN.json``, the run
folders ``jN-*`` (``run.json``: measured job seconds and hits), ``profile-jN.json`` and
``trial-jN.json``. Out of sample three ways:

- **pre-run**: each run against the prediction written before it, from calibration
  jobs only (synthetic prompts; no campaign job in the fit);
- **other call**: each run against the calibration of the other call(s) (another
  engine start on the same machine);
- **leave one table out**: step costs fitted to the calibration jobs plus every
  campaign run of the other tables, predicting this table's runs.

Each way is scored for two models: the per-step cost model the predictions were written
with (`ggr_kv.simulate.stepcost`, host costs added to the engine's) and the two-clock
model (`ggr_kv.simulate.feedtime`: engine steps and prompt submission overlapped):
for pre-run and other call, the calibration's own two-clock model (written with the
predictions by calibrations that hold one; else refitted here from the calibration jobs
only, with their feed times where recorded); for leave one table out, fitted to the
calibration jobs, the other tables' runs and the time each of those runs took to submit
its prompts (`ggr_kv.analysis.jobfeed`, from the run's step records);
``jobtime-loto-variants`` shows what each part of that training data contributes.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from ggr_kv.analysis.jobfeed import job_clocks  # noqa: E402
from ggr_kv.simulate.feedtime import P_GRID, fit_feed_costs  # noqa: E402
from ggr_kv.simulate.stepcost import (  # noqa: E402
    DEFAULT_FIT,
    LEGACY_FIT,
    StepCosts,
    fit_step_costs,
)

WITHIN = 0.10


def load(folder: Path) -> dict:
    """Calibrations, pre-run predictions and measured runs of every call in ``folder``."""
    cals, preds, runs = {}, {}, {}
    for p in sorted(folder.glob("calibration-*.json")):
        cals[p.stem.split("-", 1)[1]] = StepCosts.from_dict(json.loads(p.read_text()))
    for p in sorted(folder.glob("predictions-*.json")):
        call = p.stem.split("-", 1)[1]
        doc = json.loads(p.read_text())
        for r in doc["runs"]:
            # repeat k of call N is predicted in predictions-NrK.json: same call
            r["call"] = re.sub(r"r\d+$", "", call.split("-")[0])
            r["arm"] = doc.get("arm")
            preds[r["run_id"]] = r
    for rid in preds:
        d = folder / rid / "run.json"
        if not d.is_file():
            continue
        rj = json.loads(d.read_text())
        rep = rj.get("repeats") or {}
        if not rep.get("job_s"):
            continue
        clocks = None
        if len(rep["job_s"]) == 1 and (folder / rid / "steps.parquet").is_file():
            clocks = job_clocks(pd.read_parquet(folder / rid / "steps.parquet"),
                                rep["job_s"][0])
        runs[rid] = {"job_s": rep["job_s"],
                     "hit_rate": rj["summary"].get("prefix_cache_hit_rate"),
                     "device": rj["summary"].get("device") or rj.get("device"),
                     "clocks": clocks,
                     # run.json files from before token-id submission sent text
                     "submit": rj.get("submit") or "text",
                     "tokenize_s": [r.get("tokenize_s") for r in rj.get("repeat_runs") or []]}
    replays = None
    if (folder / "replays.json").is_file():
        replays = json.loads((folder / "replays.json").read_text())
    return {"cals": cals, "preds": preds, "runs": runs, "replays": replays}


def repredict(data: dict) -> dict:
    """Re-predictions made after the runs, from calibration data only: per call, the
    step-cost model of `DEFAULT_FIT` fitted to that call's calibration jobs (their
    replays' features from ``replays.json``, their measured medians from the calibration
    file), pricing each run's replay. ``{call: {"costs": StepCosts, "runs": {key: s}}}``."""
    rep = data.get("replays")
    if not rep:
        return {}
    out = {}
    for call, jobs in rep["calibration_jobs"].items():
        cal = data["cals"][call].meta["jobs"]
        costs = fit_step_costs([(jobs[n], cal[n]["median_s"]) for n in jobs],
                               features=DEFAULT_FIT, graph_tokens=rep["graph_tokens"])
        runs = {tuple(k.split("|")): costs.predict(f).job_s for k, f in rep["runs"].items()}
        out[call] = {"costs": costs, "runs": runs}
    return out


def campaign_rows(data: dict) -> list[dict]:
    """One row per campaign run (not trial arms, not the profile run)."""
    rows = []
    for rid, p in data["preds"].items():
        if p["arm"] is not None or rid not in data["runs"] or "-prof-" in rid:
            continue
        r = data["runs"][rid]
        rows.append({**p, "measured": r["job_s"], "hit": r["hit_rate"], "device": r["device"],
                     "clocks": r["clocks"], "key": (p["dataset"], p["query_type"], p["method"])})
    return rows


def _fmt_spread(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{xs[0]:.2f} (n=1)"
    return f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}] (n={len(xs)})"


def accuracy(data: dict) -> tuple[list[dict], dict]:
    """Per key: measured median, and each way's predicted / measured-median ratios."""
    rows = campaign_rows(data)
    by_key: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        by_key[r["key"]].append(r)
    meas = {k: [t for r in v for t in r["measured"]] for k, v in by_key.items()}
    med = {k: statistics.median(v) for k, v in meas.items()}
    # leave one table out: calibration jobs of every call + other tables' runs
    cal_samples = []
    for c in data["cals"].values():
        for j in c.meta.get("jobs", {}).values():
            cal_samples.append((j["features"], j["median_s"]))
    loto = {}
    tables = sorted({(k[0], k[1]) for k in by_key})
    for t in tables:
        train = list(cal_samples)
        for k, v in by_key.items():
            if (k[0], k[1]) != t:
                train.append((v[0]["summary"], med[k]))
        if len(train) >= 7:
            fit = fit_step_costs(train, features=LEGACY_FIT)
            for k, v in by_key.items():
                if (k[0], k[1]) == t:
                    loto[k] = fit.predict(v[0]["summary"]).job_s
    # the two-clock model, refitted: per call from its calibration jobs; leave one table out
    # from the step-cost model's data (calibration jobs, other tables' runs) and the feed
    # time of each of those runs (its step records say when the last prompt was in)
    two = {call: _two_clock_of(c) for call, c in data["cals"].items()}
    rep = repredict(data)
    loto2 = loto_two_clock(by_key, med, cal_samples, host=True)
    out = []
    for k in sorted(by_key, key=lambda k: (k[0], k[1], _order(k[2]))):
        v = by_key[k]
        pre = [r["predicted_job_s"] / med[k] for r in v]
        other_by = [(call, c.predict(v[0]["summary"]).job_s / med[k]) for r in v
                    for call, c in data["cals"].items() if call != r["call"]]
        other = [x for _, x in other_by]
        old = [r["predicted_job_s_3term"] / med[k] for r in v if r.get("predicted_job_s_3term")]
        rep_own = [rep[r["call"]]["runs"][k] / med[k] for r in v if r["call"] in rep]
        rep_other = [rep[c]["runs"][k] / med[k] for r in v for c in rep if c != r["call"]]
        pre2 = [(r.get("predicted_job_s_two_clock") or
                 two[r["call"]].predict(v[0]["summary"]).job_s) / med[k] for r in v
                if r.get("predicted_job_s_two_clock") or r["call"] in two]
        other2 = [two[c].predict(v[0]["summary"]).job_s / med[k] for r in v for c in two
                  if c != r["call"]]
        out.append({"key": k, "runs": v, "measured": meas[k], "median": med[k],
                    "pre2": pre2, "other2": other2, "loto2": loto2[k].job_s / med[k] if k in loto2 else math.nan,
                    "bound2": loto2[k].bound if k in loto2 else "",
                    "hit": statistics.median([r["hit"] for r in v if r["hit"] is not None] or
                                             [math.nan]),
                    "pred_hit": v[0]["predicted_hit_rate"],
                    "pre": pre, "other": other, "other_by": other_by,
                    "pre_by": [(r["call"], x) for r, x in zip(v, pre)],
                    "rep": rep_own, "rep_other": rep_other,
                    "loto": loto.get(k, math.nan) / med[k],
                    "old": old, "bound": v[0]["bound"], "device": v[0]["device"]})
    return out, med, {"two_clock": {c: f.to_dict() for c, f in two.items()},
                      "repredict": {c: x["costs"] for c, x in rep.items()}}


def _two_clock_of(cal: StepCosts):
    """A calibration's two-clock model: the one it holds (fitted when it was made), else
    refitted from its jobs' times (and their feed times where recorded)."""
    from ggr_kv.simulate.feedtime import FeedCosts

    d = cal.meta.get("two_clock")
    if isinstance(d, dict) and "engine" in d:
        return FeedCosts.from_dict(d)
    jobs = list(cal.meta.get("jobs", {}).values())
    feed = [(j["features"], j["feed_median_s"]) for j in jobs if j.get("feed_median_s")]
    return fit_feed_costs([(j["features"], j["median_s"]) for j in jobs], feed_samples=feed)


def loto_two_clock(by_key: dict, med: dict, cal_samples: list, *, with_cal: bool = True,
                   host: bool = False, p_grid: tuple = P_GRID) -> dict:
    """Two-clock predictions of every job, fitted without its table: to the calibration
    jobs (``with_cal``) and the other tables' job medians, and (``host``) the feed time
    measured in each of their runs (`ggr_kv.analysis.jobfeed.JobClocks.feed_s`)."""
    out = {}
    for t in sorted({(k[0], k[1]) for k in by_key}):
        train = list(cal_samples) if with_cal else []
        feed = []
        for k, v in by_key.items():
            if (k[0], k[1]) != t:
                train.append((v[0]["summary"], med[k]))
                feed += [(r["summary"], r["clocks"].feed_s) for r in v if r["clocks"]]
        fit = fit_feed_costs(train, feed_samples=feed if host else (), p_grid=p_grid)
        for k, v in by_key.items():
            if (k[0], k[1]) == t:
                out[k] = fit.predict(v[0]["summary"])
    return out


def variants_table(data: dict) -> str:
    """Leave one table out, two-clock model: what each choice of training data gives."""
    rows = campaign_rows(data)
    by_key: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        by_key[r["key"]].append(r)
    med = {k: statistics.median([t for r in v for t in r["measured"]]) for k, v in by_key.items()}
    cal = [(j["features"], j["median_s"]) for c in data["cals"].values()
           for j in c.meta.get("jobs", {}).values()]
    lines = ["| trained on | feed times of the runs | p | within 10% | median abs. error |",
             "|---|---|---|---:|---:|"]
    for with_cal in (True, False):
        for host in (False, True):
            for grid, gname in ((P_GRID, "fitted"), ((math.inf,), "inf (max)")):
                pr = loto_two_clock(by_key, med, cal, with_cal=with_cal, host=host, p_grid=grid)
                r = [pr[k].job_s / med[k] for k in pr]
                w, n = _within(r)
                lines.append(
                    f"| {'calibration jobs + ' if with_cal else ''}other tables' runs | "
                    f"{'fitted to' if host else 'not used'} | {gname} | {w} of {n} | "
                    f"{_mae(r):.1%} |")
    return "\n".join(lines)


def _mae(ratios: list[float]) -> float:
    """Median of |predicted / measured - 1|."""
    xs = [abs(x - 1) for x in ratios if not math.isnan(x)]
    return statistics.median(xs) if xs else math.nan


def _order(m: str) -> int:
    return ("original", "sorted", "ggr", "blocks").index(m) if m in (
        "original", "sorted", "ggr", "blocks") else 9


def _within(xs: list[float]) -> tuple[int, int]:
    xs = [x for x in xs if not math.isnan(x)]
    return sum(abs(x - 1) <= WITHIN for x in xs), len(xs)


def accuracy_table(acc: list[dict], med: dict) -> str:
    lines = ["| table, query | ordering | hit rate (measured / simulated) | job s, median [min-max] "
             "| vs original, median [range] | predicted s, pre-run | step-cost model, "
             "predicted / measured: pre-run | other call | leave table out | old 3-term model "
             "| bound by | two-clock model: calibration only | other call | leave table out "
             "| two-clock bound |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for a in acc:
        d, q, m = a["key"]
        base = med.get((d, q, "original"))
        ob = next((x["measured"] for x in acc if x["key"] == (d, q, "original")), [])
        vs = ""
        if base and ob:
            lo, hi = min(ob) / max(a["measured"]), max(ob) / min(a["measured"])
            vs = f"{base / a['median']:.2f}× [{lo:.2f}-{hi:.2f}]"
        preds = _fmt_ratios([r["predicted_job_s"] for r in a["runs"]])
        lines.append(
            f"| {d}, {q} | {m} | {a['hit']:.1%} / {a['pred_hit']:.1%} | "
            f"{_fmt_spread(a['measured'])} | {vs} | {preds} | "
            f"{_fmt_ratios(a['pre'])} | {_fmt_ratios(a['other'])} | {a['loto']:.2f} | "
            f"{_fmt_ratios(a['old'])} | {a['bound']} | {_fmt_ratios(a['pre2'])} | "
            f"{_fmt_ratios(a['other2'])} | {a['loto2']:.2f} | {a['bound2']} |")
    tot = {}
    for name, f in (("pre-run", "pre"), ("other call", "other"), ("old 3-term model", "old")):
        tot[name] = _within([x for a in acc for x in a[f]])
    tot["leave table out"] = _within([a["loto"] for a in acc])
    tot2 = {"calibration only": _within([x for a in acc for x in a["pre2"]]),
            "other call": _within([x for a in acc for x in a["other2"]]),
            "leave table out": _within([a["loto2"] for a in acc])}
    lines.append("")
    mae = {"pre-run": _mae([x for a in acc for x in a["pre"]]),
           "other call": _mae([x for a in acc for x in a["other"]]),
           "old 3-term model": _mae([x for a in acc for x in a["old"]]),
           "leave table out": _mae([a["loto"] for a in acc])}
    mae2 = {"calibration only": _mae([x for a in acc for x in a["pre2"]]),
            "other call": _mae([x for a in acc for x in a["other2"]]),
            "leave table out": _mae([a["loto2"] for a in acc])}
    lines.append("Within 10% of the measured median (median abs. error), step-cost model: "
                 + "; ".join(f"{k} {w} of {n} ({w / n:.0%}; {mae[k]:.1%})"
                             for k, (w, n) in tot.items() if n))
    by = defaultdict(lambda: {"pre": [], "other": []})
    for a in acc:
        for f in ("pre", "other"):
            for call, x in a[f + "_by"]:
                by[call][f].append(x)
    if len(by) > 1:
        lines.append("Step-cost model by calibration, pre-run (its own call's runs) / other "
                     "call (the other calls' runs): " + "; ".join(
                         f"{call} " + " / ".join("%d of %d" % _within(by[call][f]) if by[call][f]
                                                 else "-" for f in ("pre", "other"))
                         for call in sorted(by)))
    lines.append("Two-clock model: " + "; ".join(
        f"{k} {w} of {n} ({w / n:.0%}; {mae2[k]:.1%})" for k, (w, n) in tot2.items() if n))
    devs = sorted({str(a["device"]) for a in acc})
    lines.append(f"Cards: {', '.join(devs)}.")
    return "\n".join(lines)


def repredict_table(acc: list[dict], fits: dict) -> str:
    """Pre-run predictions beside the re-predictions made after the runs from each call's
    calibration jobs only (`repredict`), per job; then each call's refitted costs."""
    lines = ["| table, query | ordering | job s, median (n) | pre-run, predicted / measured | "
             "re-predicted after the runs (calibration only): own call | other call |",
             "|---|---|---:|---|---|---|"]
    for a in acc:
        d, q, m = a["key"]
        lines.append(f"| {d}, {q} | {m} | {a['median']:.2f} ({len(a['measured'])}) | "
                     f"{_fmt_ratios(a['pre'])} | {_fmt_ratios(a['rep'])} | "
                     f"{_fmt_ratios(a['rep_other'])} |")
    lines.append("")
    parts = []
    for name, f in (("pre-run", "pre"), ("re-predicted, own call's calibration", "rep"),
                    ("re-predicted, other call's calibration", "rep_other")):
        xs = [x for a in acc for x in a[f]]
        w, n = _within(xs)
        if n:
            parts.append(f"{name} {w} of {n} ({w / n:.0%}; {_mae(xs):.1%})")
    lines.append("Runs within 10% of their job's measured median (median abs. error): "
                 + "; ".join(parts) + ".")
    lines.append("")
    cols = list(DEFAULT_FIT)
    lines.append("| call | " + " | ".join(cols) + " | max fit residual (calibration jobs) |")
    lines.append("|---|" + "---:|" * (len(cols) + 1))
    for call, c in fits["repredict"].items():
        lines.append(f"| {call} | " + " | ".join(_fmt_coef(k, c.get(k)) for k in cols) +
                     f" | {c.meta['fit']['max_abs_relative_residual']:.1%} |")
    return "\n".join(lines)


def submit_line(data: dict) -> str:
    """How the campaign runs sent their prompts, and what tokenizing ids cost."""
    rows = campaign_rows(data)
    parts = []
    for mode in ("ids", "text"):
        mine = [data["runs"][r["run_id"]] for r in rows
                if data["runs"][r["run_id"]]["submit"] == mode]
        if not mine:
            continue
        if mode == "text":
            parts.append(f"text, tokenized by vLLM inside the job time ({len(mine)} runs)")
            continue
        tok = sorted(x for r in mine for x in r["tokenize_s"] if x is not None)
        cost = (f"; tokenizing before the timer, median {statistics.median(tok):.2f} s "
                f"[{tok[0]:.2f}-{tok[-1]:.2f}], not in job s" if tok else "")
        parts.append(f"token ids ({len(mine)} runs{cost})")
    return "Prompts submitted as: " + "; ".join(parts) + "." if parts else ""


def _fmt_ratios(xs: list[float]) -> str:
    """Distinct values in order (the repeats of one call share their prediction)."""
    return ", ".join(dict.fromkeys(f"{x:.2f}" for x in xs))


def clocks_table(acc: list[dict]) -> str:
    """Per job and call (median of its repeats): when the last prompt was submitted, the
    engine's last step, the job; and which clock the runs waited for."""
    lines = ["| table, query | ordering | call | feed s (last prompt in) | engine's last step s "
             "| job s | steps (during feed) | most waiting | waited for |",
             "|---|---|---|---:|---:|---:|---|---:|---|"]
    pairs = []
    for a in acc:
        by_call: dict[str, list] = defaultdict(list)
        for r in a["runs"]:
            if r["clocks"] is not None:
                by_call[r["call"]].append(r["clocks"])
        med_of = {}
        for call in sorted(by_call):
            cs = by_call[call]
            md = {f: statistics.median(getattr(c, f) for c in cs)
                  for f in ("feed_s", "engine_end_s", "job_s", "steps", "steps_during_feed")}
            bounds = [c.bound for c in cs]
            waited = bounds[0] if len(set(bounds)) == 1 else ", ".join(
                f"{b} {bounds.count(b)}" for b in sorted(set(bounds)))
            med_of[call] = (md, bounds)
            lines.append(f"| {a['key'][0]}, {a['key'][1]} | {a['key'][2]} | {call} | "
                         f"{md['feed_s']:.2f} | {md['engine_end_s']:.2f} | {md['job_s']:.2f} | "
                         f"{md['steps']:.0f} ({md['steps_during_feed']:.0f}) | "
                         f"{max(c.max_waiting for c in cs)} | {waited} |")
        if len(med_of) == 2:
            x, y = (med_of[k] for k in sorted(med_of))
            pairs.append((x, y))
    if pairs:
        fr = sorted(x["feed_s"] / y["feed_s"] for (x, _), (y, _) in pairs)
        jr_f = sorted(x["job_s"] / y["job_s"] for (x, bx), (y, by) in pairs
                      if "feed" in bx + by)
        jr_e = sorted(x["job_s"] / y["job_s"] for (x, bx), (y, by) in pairs
                      if "feed" not in bx + by)
        lines.append("")
        lines.append(
            f"First call / second call, same job (medians of each call's runs): feed time "
            f"{_ratio_summary(fr)} ({sum(f > 1 for f in fr)} of {len(fr)} slower); job time "
            f"where a run waited for the feed {_ratio_summary(jr_f)} (n={len(jr_f)}), where "
            f"every run waited for the engine {_ratio_summary(jr_e)} (n={len(jr_e)}).")
    return "\n".join(lines)


def _ratio_summary(xs: list[float]) -> str:
    if not xs:
        return "-"
    return f"{statistics.median(xs):.2f}× median [{xs[0]:.2f}-{xs[-1]:.2f}]"


def two_clock_table(fits: dict) -> str:
    """The two-clock model fitted to each call's calibration jobs."""
    lines = ["| call | engine: per step | per computed token | per attention pair | per decode "
             "token | per decode context token | feed: per request | per prompt token | "
             "drain per request | p | feed-bound calibration jobs | max fit residual |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for call, d in fits["two_clock"].items():
        e, f = d["engine"]["coef"], d["feed"]
        fit = d["meta"]["fit"]
        lines.append(
            f"| {call} | {e['num_steps'] * 1e6:.3g} µs | {e['prefill_tokens'] * 1e6:.3g} µs | "
            f"{e['prefill_attn'] * 1e9:.3g} ns | {e['decode_tokens'] * 1e6:.3g} µs | "
            f"{e['decode_ctx'] * 1e9:.3g} ns | {f['submit'] * 1e6:.3g} µs | "
            f"{f['tokenize'] * 1e6:.3g} µs | {f['drain'] * 1e6:.3g} µs | "
            f"{'inf' if d['p'] is None else format(d['p'], 'g')} | {fit['feed_bound']} of {fit['samples']} "
            f"| {fit['max_abs_relative_residual']:.1%} |")
    return "\n".join(lines)


def spread_table(acc: list[dict]) -> str:
    """Run-to-run spread and the repeats a user needs for a given precision, overall and
    by the clock the job waited for (`ggr_kv.analysis.jobfeed.JobClocks.bound`)."""
    cvs: dict[str, list[float]] = defaultdict(list)
    lines = ["| table, query | ordering | repeats | CV of job s | CV within a call | call "
             "medians, max / min | waited for | repeats for ±5% / ±10% (95%) |",
             "|---|---|---:|---:|---:|---:|---|---|"]
    within: dict[str, list[float]] = defaultdict(list)
    for a in acc:
        xs = a["measured"]
        if len(xs) < 2:
            continue
        cv = statistics.stdev(xs) / statistics.mean(xs)
        bounds = sorted({r["clocks"].bound for r in a["runs"] if r["clocks"] is not None})
        group = "feed" if "feed" in bounds else "engine"
        cvs["all"].append(cv)
        cvs[group].append(cv)
        wcv = _within_call_cv(a["runs"])
        if not math.isnan(wcv):
            within["all"].append(wcv)
            within[group].append(wcv)
        meds = [statistics.median(t for r in a["runs"] if r["call"] == c for t in r["measured"])
                for c in sorted({r["call"] for r in a["runs"]})]
        lines.append(f"| {a['key'][0]}, {a['key'][1]} | {a['key'][2]} | {len(xs)} | {cv:.1%} | "
                     f"{'-' if math.isnan(wcv) else format(wcv, '.1%')} | "
                     f"{max(meds) / min(meds):.2f} | "
                     f"{' / '.join(bounds)} | {_n_for(cv, 0.05)} / {_n_for(cv, 0.10)} |")
    if cvs:
        lines.append("")
        for g, name in (("all", "all jobs"), ("engine", "jobs that waited for the engine in "
                                                        "every run"),
                        ("feed", "jobs that waited for the feed in some run")):
            if not cvs[g]:
                continue
            pooled = math.sqrt(statistics.mean([c * c for c in cvs[g]]))
            lines.append(
                f"- {name} ({len(cvs[g])}): pooled CV {pooled:.1%}; a job time to ±5% (95%) "
                f"needs {_n_for(pooled, 0.05)} repeats, ±10% needs {_n_for(pooled, 0.10)}; a "
                f"speedup (ratio of two such medians, CV ≈ {pooled * math.sqrt(2):.1%}) needs "
                f"{_n_for(pooled * math.sqrt(2), 0.05)} / {_n_for(pooled * math.sqrt(2), 0.10)}.")
            if within[g]:
                pw = math.sqrt(statistics.mean([c * c for c in within[g]]))
                lines.append(f"  Within one engine start ({len(within[g])} jobs with 2+ runs "
                             f"in a call): pooled CV {pw:.1%}; ±5% needs {_n_for(pw, 0.05)}, "
                             f"±10% needs {_n_for(pw, 0.10)}.")
        far = sum(1 for a in acc if len(a["measured"]) >= 2 and
                  max(abs(x / a["median"] - 1) for x in a["measured"]) > WITHIN)
        lines.append(f"- {far} of {len(cvs['all'])} jobs have a run more than 10% from their "
                     "own median.")
    return "\n".join(lines)


def _within_call_cv(runs: list[dict]) -> float:
    """Pooled CV of the job times within each call (engine start) that ran a job 2+
    times: sqrt(mean of the calls' variances) / mean job time; nan without such a call."""
    by: dict[str, list[float]] = defaultdict(list)
    for r in runs:
        by[r["call"]] += list(r["measured"])
    var = [statistics.variance(v) for v in by.values() if len(v) >= 2]
    if not var:
        return math.nan
    return math.sqrt(statistics.mean(var)) / statistics.mean(t for v in by.values() for t in v)


def _n_for(cv: float, p: float) -> int:
    return max(1, math.ceil((1.96 * cv / p) ** 2))


def profile_table(folder: Path) -> str:
    """Per-step host vs GPU time of the profiled run(s)."""
    out = []
    for p in sorted(folder.glob("profile-*.json")):
        doc = json.loads(p.read_text())
        ev = doc["events"]
        sched = [e for e in ev if e["kind"] == "schedule"]
        gpu = [e for e in ev if e["gpu_t0"] is not None]
        if len(sched) < 2 or not gpu:
            continue
        wall = sched[-1]["t1"] - sched[0]["t0"]
        host = {k: sum(e["t1"] - e["t0"] for e in ev if e["kind"] == k)
                for k in ("schedule", "execute", "sample", "update")}
        # GPU busy: union of [gpu_t0, gpu_t1] spans of execute+sample, per step pair
        spans = sorted((e["gpu_t0"], e["gpu_t1"]) for e in gpu)
        busy, cur = 0.0, None
        for a, b in spans:
            if cur is None or a > cur[1]:
                if cur is not None:
                    busy += cur[1] - cur[0]
                cur = [a, b]
            else:
                cur[1] = max(cur[1], b)
        busy += cur[1] - cur[0]
        gwall = spans[-1][1] - spans[0][0]
        steps = len([s for s in sched if s["tokens"]])
        big = [s for s in sched if (s["tokens"] or 0) >= 2048]
        out.append(
            f"| {doc['run_id']} | {doc['hooks'].get('scheduler')} "
            f"(async {doc['hooks'].get('async')}) | {steps} | {wall:.2f} | {gwall:.2f} | "
            f"{busy:.2f} ({busy / gwall:.0%}) | {host['schedule']:.2f} | "
            f"{host['execute'] + host['sample']:.2f} | {host['update']:.2f} | "
            f"{len(big)} / {steps - len(big)} |")
    if not out:
        return "(no profile)"
    return "\n".join([
        "| run | scheduler | steps | engine-core wall s (first to last schedule) | GPU "
        "timeline s | GPU busy s | host: schedule s | host: execute+sample calls s | host: "
        "update_from_output s | steps >= 2,048 tokens / smaller |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|", *out])


def trial_table(data: dict) -> str:
    rows = [p for p in data["preds"].values() if p["arm"] is not None]
    if not rows:
        return "(no trial)"
    by_w = defaultdict(list)
    by_arm: dict = defaultdict(lambda: defaultdict(list))
    for p in rows:
        r = data["runs"].get(p["run_id"])
        if r is None:
            continue
        arm = (p["arm"]["max_num_batched_tokens"], p["arm"]["max_num_seqs"])
        by_arm[(p["dataset"], p["query_type"], p["method"])][arm].append((p, r))
    for w, arms in by_arm.items():  # runs of one arm (trial passes) pooled
        for arm, prs in arms.items():
            ts = [t for _, r in prs for t in r["job_s"]]
            by_w[w].append((arm, statistics.median(ts), statistics.median(
                p["predicted_job_s"] for p, _ in prs), len(ts), prs[0][1]["clocks"]))
    lines = ["| workload | max_num_batched_tokens : max_num_seqs | job s | vs default | "
             "predicted s | best measured | best predicted | feed s (last prompt in) | waited "
             "for |", "|---|---|---:|---:|---:|---|---|---:|---|"]
    for w, xs in sorted(by_w.items()):
        default = next((x for x in xs if x[0] == (16384, 1024)), xs[0])
        best_m = min(xs, key=lambda x: x[1])[0]
        best_p = min(xs, key=lambda x: x[2])[0]
        for arm, t, pr, n, c in sorted(xs, key=lambda x: x[0], reverse=True):
            feed = f"{c.feed_s:.2f} | {c.bound}" if c is not None and n == 1 else " | "
            lines.append(f"| {w[0]}, {w[1]}, {w[2]} | {arm[0]} : {arm[1]} | {t:.2f} (n={n}) | "
                         f"{default[1] / t:.2f}× | {pr:.2f} | "
                         f"{'yes' if arm == best_m else ''} | {'yes' if arm == best_p else ''} | "
                         f"{feed} |")
    return "\n".join(lines)


def calibration_table(data: dict) -> str:
    lines = ["| call | card | " + " | ".join(_units()) + " | calibration s | max fit residual |",
             "|---|---|" + "---:|" * (len(_units()) + 2)]
    for call, c in data["cals"].items():
        dev = (c.meta.get("engine") or {}).get("device")
        vals = " | ".join(_fmt_coef(k, c.get(k)) for k in _units())
        lines.append(f"| {call} | {dev} | {vals} | {c.meta.get('calibration_s', 0):.1f} | "
                     f"{c.meta['fit']['max_abs_relative_residual']:.1%} |")
    return "\n".join(lines)


def _units() -> list[str]:
    """The first model's features (the costs every calibration file holds)."""
    return list(LEGACY_FIT)


def _fmt_coef(k: str, v: float) -> str:
    if k in ("prefill_attn", "decode_ctx", "prompt_tokens"):
        return f"{v * 1e9:.3g} ns"
    if k == "jobs":
        return f"{v * 1e3:.3g} ms"
    return f"{v * 1e6:.3g} µs"


def render(folder: Path) -> dict[str, str]:
    data = load(folder)
    acc, med, fits = accuracy(data)
    return {"jobtime-calibration": calibration_table(data),
            "jobtime-two-clock": two_clock_table(fits),
            "jobtime-accuracy": "\n".join(x for x in (accuracy_table(acc, med),
                                                        submit_line(data)) if x),
            "jobtime-clocks": clocks_table(acc),
            "jobtime-loto-variants": variants_table(data),
            "jobtime-spread": spread_table(acc),
            "jobtime-profile": profile_table(folder),
            "jobtime-trial": trial_table(data),
            **({"jobtime-repredict": repredict_table(acc, fits)} if fits["repredict"] else {})}


def write(readme: Path, tables: dict[str, str]) -> None:
    """Put each table between its markers in ``readme`` (the prose stays as written)."""
    from ggr_kv.analysis.readme import replace_block

    for name, body in tables.items():
        replace_block(readme, name, body + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--write", action="store_true", help="update the folder's README.md")
    a = ap.parse_args()
    tables = render(a.folder)
    if a.write:
        write(a.folder / "README.md", tables)
    for name, body in tables.items():
        print(f"## {name}\n\n{body}\n")


if __name__ == "__main__":
    main()
