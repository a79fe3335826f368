"""Replay a jobtime run folder's calibration jobs and campaign runs again, for step-cost
models that need the replays' per-step work (issue 22), without a GPU.

    python experiments/jobtime_repredict.py results/h100/jobtime-3

Writes ``replays.json`` in the folder: the features (`ggr_kv.simulate.stepcost.FEATURES`,
``eager_requests`` included) of every calibration job of every ``calibration-*.json``
(its prompts rebuilt from the recorded sizes and seed, tokenized with the model's
tokenizer; each replay is checked against the features recorded at calibration time)
and of every campaign run of the ``predictions-*.json`` files (dataset, ordering, query
and engine settings as recorded; checked against the recorded replay totals). No
measured time is read: ``experiments/jobtime_table.py`` fits each call's calibration jobs
and prices the runs from this file ("re-predicted after the runs, calibration only").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from ggr_kv.simulate.stepcost import GRAPH_TOKENS, features_of  # noqa: E402

CHECKED = ("num_steps", "prefill_tokens", "prefill_attn", "decode_tokens", "decode_ctx",
           "prompt_tokens", "num_requests")


def _tokenizer(model: str, tmp: Path):
    from ggr_kv.core.tokenizer import load_tokenizer
    from ggr_kv.engine.models import make_model_dir

    d = make_model_dir(model, tmp / model)
    return str(d), load_tokenizer(str(d))


def _check(what: str, got: dict, want: dict) -> None:
    bad = {k: (got[k], want[k]) for k in CHECKED if k in want and float(got[k]) != float(want[k])}
    if bad:
        raise SystemExit(f"{what}: the replay differs from the recorded one {bad}")


def calibration_features(cal: dict, tok, graph: int) -> dict[str, dict]:
    """Features of each calibration job, replayed from its recorded sizes and seed."""
    from ggr_kv.engine.calibrate import CalibJob, _texts
    from ggr_kv.simulate import SchedulerConfig, simulate

    meta = cal["step_costs"]["meta"]
    cfg = SchedulerConfig(**meta["scheduler"])
    out = {}
    for i, (name, j) in enumerate(meta["jobs"].items()):
        job = CalibJob(name, j["prompts"], j["shared"], j["unique"], j["out"])
        ids = [np.asarray(tok.encode(t), dtype=np.int64)
               for t in _texts(tok, job, meta["seed"] + 101 * i)]
        off = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum([len(x) for x in ids], out=off[1:])
        sim = simulate(np.concatenate(ids), off, np.full(len(ids), j["out"], dtype=np.int64),
                       cfg, progress=False)
        f = features_of(sim, graph_tokens=graph)
        _check(f"calibration job {name}", f, j["features"])
        out[name] = f
    return out


def run_features(pred: dict, model_dir: str, tok, graph: int) -> dict:
    """Features of one campaign run, replayed from its dataset, ordering and settings."""
    from ggr_kv.core.plan import ReorderPlan
    from ggr_kv.core.prompts import DEFAULT_INSTRUCTION
    from ggr_kv.datasets import load_dataset
    from ggr_kv.reorder import reorder
    from ggr_kv.simulate import simulate_plan

    ds = load_dataset(pred["dataset"])
    q = ds.query(pred["query_type"])
    config = pred["config"]
    knobs = {}
    if pred["method"] == "blocks":
        knobs = {"tokenizer": model_dir, "block_size": config["block_size"],
                 "query": q.stages[0].text, "instruction": DEFAULT_INSTRUCTION}
    res = reorder(ds.table(), pred["method"], fds=ds.fds, **knobs)
    plan = res.plan if res is not None else ReorderPlan.identity(ds.table())
    sim = simulate_plan(ds.table(), plan, q.stages[0].text, None, tok,
                        q.stages[0].max_tokens, progress=False, **config)
    f = features_of(sim, graph_tokens=graph)
    _check(pred["run_id"], f, pred["summary"])
    return f


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--model", default="llama-3.1-8b", help="model shape (its tokenizer)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, tok = _tokenizer(a.model, Path(tmp))
        cals, runs, graphs = {}, {}, {}
        for p in sorted(a.folder.glob("calibration-*.json")):
            doc = json.loads(p.read_text())
            eng = doc["step_costs"]["meta"].get("engine") or {}
            graph = eng.get("cudagraph_max_tokens")
            graph = GRAPH_TOKENS if graph is None else int(graph)
            call = p.stem.split("-", 1)[1]
            graphs[call] = graph
            cals[call] = calibration_features(doc, tok, graph)
            print(f"{p.name}: {len(cals[call])} calibration jobs replayed", flush=True)
        graph = sorted(set(graphs.values()))
        if len(graph) != 1:
            raise SystemExit(f"calls with different CUDA-graph sizes {graphs}")
        for p in sorted(a.folder.glob("predictions-*.json")):
            for r in json.loads(p.read_text())["runs"]:
                key = f"{r['dataset']}|{r['query_type']}|{r['method']}"
                if key in runs or r.get("arm") is not None:
                    continue
                runs[key] = run_features(r, model_dir, tok, graph[0])
                print(f"{key}: replayed", flush=True)
    doc = {"made_by": "python experiments/jobtime_repredict.py " + a.folder.as_posix(),
           "graph_tokens": graph[0],
           "graph_tokens_source": "engine" if any(
               (json.loads(p.read_text())["step_costs"]["meta"].get("engine") or {})
               .get("cudagraph_max_tokens") is not None
               for p in a.folder.glob("calibration-*.json"))
           else f"assumed: vLLM 0.26's default ({GRAPH_TOKENS}); not recorded by these calls",
           "calibration_jobs": cals, "runs": runs}
    (a.folder / "replays.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {a.folder / 'replays.json'}")


if __name__ == "__main__":
    main()
