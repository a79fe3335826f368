"""Papermill sweeps: run a notebook once per grid point, resumably.

A sweep file (YAML) names a notebook, a grid and the notebook parameters::

    notebook: notebooks/02_inference.ipynb   # relative to the sweep file's project
    out: results/sweeps/cpu-tiny             # the sweep folder (``--out`` overrides)
    base:                                    # notebook parameters of every point
      rows: 8
      max_tokens: 4
      engine_args: {max_num_seqs: 8}
    datasets: [movies]
    orderings: [no_cache, original, ggr]
    models: [tiny-llama]
    engines:                                 # name -> engine_args merged over base's
      default: {}
    overrides:                               # parameters for the points that match
      - match: {dataset: movies, ordering: ggr}
        parameters: {rows: 8}

Several files merge in order (``ggr-kv sweep base.yaml exp.yaml``): mappings merge
key by key, anything else is replaced by the later file.

One grid point = one (dataset, ordering, model, engine) = one run folder
``OUT/<point_id>/`` (the notebook gets ``orderings=[ordering]``, ``out_dir=OUT``,
``comparison=""`` and ``run_id=<point_id>``). The executed notebook is kept in the run
folder. A point whose folder has ``run.json`` is skipped (resume). A failing point is
recorded (``OUT/_failed/<point_id>[-k]/`` with ``error.txt`` and the executed notebook)
and the sweep goes on. At the end ``OUT/summary.csv`` (one row per point: status,
error, and the run's numbers from ``ggr_kv.run.runs``) is rebuilt from the run folders,
each invocation's statuses go to ``OUT/sweep-log/<timestamp>.json``, and the combined
figures go to ``OUT/figures/`` (never overwritten, see ``ggr_kv.analysis.plots``).
"""

from __future__ import annotations

import copy
import datetime as _dt
import json
import os
import re
import shutil
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ggr_kv.core.paths import project_path

__all__ = [
    "GridPoint",
    "PointResult",
    "SweepResult",
    "SweepSpec",
    "grid",
    "load_sweep",
    "merge",
    "run_sweep",
]

_KEYS = ("notebook", "out", "base", "datasets", "orderings", "models", "engines", "overrides")
_AXES = ("dataset", "ordering", "model", "engine")
#: parameters the sweep sets itself on every point
_SET_BY_SWEEP = ("dataset", "orderings", "model", "out_dir", "comparison", "run_id")
_ORDERINGS = ("no_cache", "original", "sorted", "ggr", "ophr")


def merge(base: Any, over: Any) -> Any:
    """Deep-merge ``over`` into a copy of ``base``: mappings key by key, else replace."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = copy.deepcopy(base)
        for k, v in over.items():
            out[k] = merge(out[k], v) if k in out else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


@dataclass(frozen=True)
class SweepSpec:
    """A parsed sweep.

    Attributes
    ----------
    notebook : the notebook each point runs.
    out : the sweep folder.
    base : notebook parameters of every point.
    datasets, orderings, models : grid axes.
    engines : engine name -> engine_args merged over ``base["engine_args"]``.
    overrides : ``{"match": {axis: value}, "parameters": {...}}`` entries, in order.
    sources : the YAML files it came from.
    """

    notebook: Path
    out: Path
    base: dict[str, Any]
    datasets: list[str]
    orderings: list[str]
    models: list[str]
    engines: dict[str, dict[str, Any]]
    overrides: list[dict[str, Any]] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class GridPoint:
    """One grid point: its id (= run folder name), axis values and notebook parameters."""

    point_id: str
    dataset: str
    ordering: str
    model: str
    engine: str
    parameters: dict[str, Any]


@dataclass
class PointResult:
    """What happened to one grid point.

    Attributes
    ----------
    status : ``done`` (ran now), ``skipped`` (run.json already there), ``failed``,
        or ``todo`` (dry run).
    run_dir : the point's run folder.
    notebook : the executed notebook (in the run folder, or in the failure folder).
    error : one-line error of a failed point.
    seconds : wall time spent on the point, s.
    """

    point: GridPoint
    status: str
    run_dir: Path
    notebook: Path | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class SweepResult:
    """A sweep's outcome: per-point results, the summary table and files written."""

    spec: SweepSpec
    points: list[PointResult]
    summary: pd.DataFrame
    summary_csv: Path | None = None
    log: Path | None = None
    figures: dict[str, list[Path]] = field(default_factory=dict)

    @property
    def failed(self) -> list[PointResult]:
        return [p for p in self.points if p.status == "failed"]


def _as_list(value: Any, key: str, src: str) -> list[str]:
    if isinstance(value, (str, int, float)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{src}: '{key}' must be a non-empty list, got {value!r}")
    return [str(v) for v in value]


def load_sweep(
    paths: str | Path | Sequence[str | Path], out: str | Path | None = None
) -> SweepSpec:
    """Read and merge sweep YAML files (later files override earlier ones).

    Relative ``notebook`` and ``out`` paths are resolved against the ggr-kv project
    folder above the first file (``ggr_kv.run.runs.project_path``). ``out`` overrides the
    file's ``out``.

    Raises
    ------
    FileNotFoundError : a sweep file or the notebook is missing.
    ValueError : an unknown key, a missing axis, an unknown ordering or notebook
        parameter (the message names the file and lists the valid choices).
    """
    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not files:
        raise ValueError("no sweep file given")
    raw: dict[str, Any] = {}
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"{f}: no such sweep file")
        data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(  # noqa: TRY004 - bad file content, reported like other bad values
                f"{f}: a sweep file must be a mapping, got {type(data).__name__}"
            )
        bad = sorted(set(data) - set(_KEYS))
        if bad:
            raise ValueError(f"{f}: unknown keys {bad}. Valid keys: {list(_KEYS)}")
        raw = merge(raw, data)
    src = " + ".join(str(f) for f in files)
    start = files[0].resolve().parent
    for key in ("notebook", "datasets", "orderings", "models"):
        if key not in raw:
            raise ValueError(f"{src}: missing '{key}'")
    notebook = project_path(raw["notebook"], start)
    if not notebook.is_file():
        raise FileNotFoundError(f"{src}: notebook {notebook} does not exist")
    if out is not None:  # from the command line: relative to the working directory
        out_dir = Path(out).expanduser().resolve()
    else:
        out_dir = project_path(raw.get("out", "results/sweep"), start)
    orderings = _as_list(raw["orderings"], "orderings", src)
    bad = [o for o in orderings if o not in _ORDERINGS]
    if bad:
        raise ValueError(f"{src}: unknown orderings {bad}. Valid orderings: {list(_ORDERINGS)}")
    engines = raw.get("engines") or {"default": {}}
    if not isinstance(engines, dict) or not all(
        isinstance(v or {}, dict) for v in engines.values()
    ):
        raise ValueError(f"{src}: 'engines' must map a name to engine arguments, got {engines!r}")
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise ValueError(f"{src}: 'base' must be a mapping of notebook parameters")  # noqa: TRY004
    overrides = raw.get("overrides") or []
    for i, o in enumerate(overrides):
        if not isinstance(o, dict) or set(o) - {"match", "parameters"}:
            raise ValueError(f"{src}: overrides[{i}] must have 'match' and 'parameters' only")
        bad = sorted(set(o.get("match") or {}) - set(_AXES))
        if bad:
            raise ValueError(
                f"{src}: overrides[{i}].match has unknown axes {bad}; axes: {list(_AXES)}"
            )
    spec = SweepSpec(
        notebook=notebook,
        out=out_dir,
        base=base,
        datasets=_as_list(raw["datasets"], "datasets", src),
        orderings=orderings,
        models=_as_list(raw["models"], "models", src),
        engines={str(k): dict(v or {}) for k, v in engines.items()},
        overrides=overrides,
        sources=files,
    )
    _check_parameters(spec, src)
    return spec


def _check_parameters(spec: SweepSpec, src: str) -> None:
    import papermill as pm

    declared = set(pm.inspect_notebook(str(spec.notebook)))
    given = set(spec.base) | {k for o in spec.overrides for k in (o.get("parameters") or {})}
    given |= set(_SET_BY_SWEEP) | ({"engine_args"} if spec.engines else set())
    bad = sorted(given - declared)
    if bad:
        raise ValueError(
            f"{src}: {spec.notebook.name} has no parameters {bad}. "
            f"Its parameters: {sorted(declared)}"
        )


def _slug(text: str) -> str:
    p = Path(text)
    is_path = "/" in text or "\\" in text or p.suffix.lower() in (".csv", ".tsv", ".parquet")
    name = (
        (p.stem if p.suffix.lower() in (".csv", ".tsv", ".parquet") else p.name)
        if is_path
        else text
    )
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "x"


def grid(spec: SweepSpec) -> list[GridPoint]:
    """Every (dataset, ordering, model, engine) point with its notebook parameters."""
    points = []
    for dataset, model, engine, ordering in product(
        spec.datasets, spec.models, spec.engines, spec.orderings
    ):
        axes = {"dataset": dataset, "ordering": ordering, "model": model, "engine": engine}
        params = copy.deepcopy(spec.base)
        params["engine_args"] = merge(params.get("engine_args") or {}, spec.engines[engine])
        for o in spec.overrides:
            if all(str(axes[k]) == str(v) for k, v in (o.get("match") or {}).items()):
                params = merge(params, o.get("parameters") or {})
        point_id = "__".join(_slug(axes[k]) for k in _AXES)
        params.update(
            dataset=dataset,
            orderings=[ordering],
            model=model,
            out_dir=str(spec.out),
            comparison="",
            run_id=point_id,
        )
        points.append(GridPoint(point_id, dataset, ordering, model, engine, params))
    ids = [p.point_id for p in points]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"grid points share folder names {dup}; give datasets distinct names")
    return points


def _free(path: Path) -> Path:
    k, p = 1, path
    while p.exists():
        k += 1
        p = path.with_name(f"{path.name}-{k}")
    return p


def _error_text(exc: BaseException) -> tuple[str, str]:
    """(one-line message, full text) of a failure, ANSI colors removed."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        line = f"{exc.ename}: {exc.evalue}"
        full = f"cell {exc.cell_index} (execution count {exc.exec_count}):\n{exc.source}\n\n"
        full += "\n".join(exc.traceback)
    else:
        line = f"{type(exc).__name__}: {exc}"
        full = "".join(traceback.format_exception(exc))
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    return ansi.sub("", line).splitlines()[0] if line else "error", ansi.sub("", full)


def _run_point(
    spec: SweepSpec, point: GridPoint, *, kernel_name: str | None, timeout: float | None
) -> PointResult:
    import papermill as pm

    run_dir = spec.out / point.point_id
    t0 = time.perf_counter()
    if (run_dir / "run.json").is_file():
        nb = run_dir / spec.notebook.name
        return PointResult(point, "skipped", run_dir, nb if nb.is_file() else None)
    failed_root = spec.out / "_failed"
    if run_dir.exists():  # a partial folder from an interrupted run: keep it, out of the way
        failed_root.mkdir(parents=True, exist_ok=True)
        shutil.move(str(run_dir), _free(failed_root / f"{point.point_id}-partial"))
    running = spec.out / "_running"
    running.mkdir(parents=True, exist_ok=True)
    tmp_nb = running / f"{point.point_id}.ipynb"
    if tmp_nb.exists():
        tmp_nb.unlink()  # a log of an interrupted attempt of this same point
    error: BaseException | None = None
    try:
        pm.execute_notebook(
            str(spec.notebook),
            str(tmp_nb),
            parameters=point.parameters,
            kernel_name=kernel_name,
            progress_bar=False,
            cwd=str(spec.notebook.parent),
            execution_timeout=timeout,
        )
        if not (run_dir / "run.json").is_file():
            raise RuntimeError(f"the notebook finished without writing {run_dir / 'run.json'}")
    except Exception as e:  # noqa: BLE001 - any failure is recorded and the sweep goes on
        error = e
    seconds = time.perf_counter() - t0
    if error is None:
        nb = run_dir / spec.notebook.name
        shutil.move(str(tmp_nb), _free(nb))
        return PointResult(point, "done", run_dir, nb, seconds=seconds)
    line, full = _error_text(error)
    fdir = _free(failed_root / point.point_id)
    fdir.mkdir(parents=True)
    nb = None
    if tmp_nb.exists():
        nb = fdir / spec.notebook.name
        shutil.move(str(tmp_nb), nb)
    if run_dir.exists():
        shutil.move(str(run_dir), fdir / "run_partial")
    (fdir / "error.txt").write_text(
        f"point: {point.point_id}\nparameters: {json.dumps(point.parameters, default=str)}\n"
        f"error: {line}\n\n{full}\n",
        encoding="utf-8",
    )
    return PointResult(point, "failed", run_dir, nb, error=line, seconds=seconds)


def _summary(spec: SweepSpec, results: list[PointResult]) -> pd.DataFrame:
    from ggr_kv.run.runs import load_runs

    rows = [
        {
            "point_id": r.point.point_id,
            "dataset": r.point.dataset,
            "ordering": r.point.ordering,
            "model": r.point.model,
            "engine": r.point.engine,
            "status": r.status,
            "error": r.error,
            "seconds": round(r.seconds, 3),
            "run_dir": str(r.run_dir),
        }
        for r in results
    ]
    df = pd.DataFrame(rows)
    done = [r.run_dir for r in results if (r.run_dir / "run.json").is_file()]
    if done:
        runs, _ = load_runs(done)
        keep = [c for c in runs.columns if c not in ("dataset", "model", "ordering", "engine")]
        runs = runs[keep].assign(run_dir=[str(Path(p)) for p in runs["path"]])
        df["run_dir"] = [str(Path(p).resolve()) for p in df["run_dir"]]
        df = df.merge(runs.drop(columns="path"), on="run_dir", how="left")
    return df


def _write_outputs(spec: SweepSpec, res: SweepResult) -> None:
    from ggr_kv import __version__

    spec.out.mkdir(parents=True, exist_ok=True)
    # summary.csv is an index rebuilt from the run folders (which are never rewritten)
    tmp = spec.out / f".summary.csv.{os.getpid()}"
    res.summary.to_csv(tmp, index=False)
    os.replace(tmp, spec.out / "summary.csv")
    res.summary_csv = spec.out / "summary.csv"
    stamp = _dt.datetime.now().astimezone()
    log_dir = spec.out / "sweep-log"
    log_dir.mkdir(exist_ok=True)
    res.log = _free(log_dir / f"{stamp.strftime('%Y%m%dT%H%M%S')}.json")
    log = {
        "finished": stamp.isoformat(timespec="seconds"),
        "ggr_kv": __version__,
        "sources": [str(s) for s in spec.sources],
        "spec": {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(spec).items()
            if k != "sources"
        },
        "points": [
            {
                "point_id": r.point.point_id,
                "status": r.status,
                "error": r.error,
                "seconds": r.seconds,
                "notebook": str(r.notebook) if r.notebook else None,
            }
            for r in res.points
        ],
    }
    with open(res.log, "x", encoding="utf-8") as f:
        json.dump(log, f, indent=2, default=str)
    done = [r.run_dir for r in res.points if (r.run_dir / "run.json").is_file()]
    if done:
        from ggr_kv.analysis.plots import fig_hit_rate_bars, fig_job_time, save_figure
        from ggr_kv.run.runs import load_runs

        runs, _ = load_runs(done)
        fig_dir = spec.out / "figures"
        res.figures["sweep_job_time"] = save_figure(fig_job_time(runs), fig_dir, "sweep_job_time")
        res.figures["sweep_hit_rate"] = save_figure(
            fig_hit_rate_bars(runs), fig_dir, "sweep_hit_rate"
        )


def run_sweep(
    spec: SweepSpec,
    *,
    dry_run: bool = False,
    progress: bool = True,
    kernel_name: str | None = None,
    timeout: float | None = None,
    points: Iterable[GridPoint] | None = None,
) -> SweepResult:
    """Run every grid point not done yet; record failures and go on.

    Parameters
    ----------
    dry_run : list the grid (status ``skipped`` for points already done, ``todo`` for
        the rest) without running or writing anything.
    kernel_name : Jupyter kernel for the notebooks (default: the notebook's own).
    timeout : per-cell timeout, s (default none).
    points : run these points instead of the whole grid.
    """
    from tqdm.auto import tqdm

    pts = list(points) if points is not None else grid(spec)
    if dry_run:
        res = [
            PointResult(
                p,
                "skipped" if (spec.out / p.point_id / "run.json").is_file() else "todo",
                spec.out / p.point_id,
            )
            for p in pts
        ]
        return SweepResult(spec, res, _summary(spec, res))
    results: list[PointResult] = []
    bar = tqdm(pts, desc="sweep", unit="point", disable=not progress)
    for p in bar:
        bar.set_postfix_str(p.point_id)
        results.append(_run_point(spec, p, kernel_name=kernel_name, timeout=timeout))
        counts = pd.Series([r.status for r in results]).value_counts().to_dict()
        bar.set_postfix(counts)
    bar.close()
    running = spec.out / "_running"
    if running.is_dir() and not any(running.iterdir()):
        running.rmdir()
    res = SweepResult(spec, results, _summary(spec, results))
    _write_outputs(spec, res)
    return res
