"""Sweeps: a grid of datasets x orderings x models x engine settings, resumable.

A sweep file (YAML) names the grid and the point parameters (those of
``notebooks/02_inference.ipynb``)::

    out: results/sweeps/cpu-tiny             # the sweep folder (``--out`` overrides)
    repeats: 3                               # passes per point (median and spread kept)
    base:                                    # parameters of every point
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
    runner: inprocess                        # or papermill (``--papermill``)
    notebook: my_inference.ipynb             # what papermill runs (default: notebook 02)

Relative paths in a sweep file (``out``, ``notebook``, table files in ``datasets``) are
relative to the sweep file's folder, from whatever folder the command runs (``--out`` on
the command line: to the working directory).

Several files merge in order (``ggr-kv sweep base.yaml exp.yaml``): mappings merge key by
key, anything else is replaced by the later file.

One grid point = one (dataset, ordering, model, engine) = one run folder. By default the
points run in this process through `ggr_kv.run.batch.run_batch`, grouped by engine
settings as vLLM's own ``benchmarks/sweep`` does: ONE engine start per group (``no_cache``
points, prefix caching off, form their own group), every point's repeats interleaved on
it. ``runner: papermill`` runs the notebook once per point instead (one engine start per
point; the executed notebook is kept in ``OUT/_notebooks/``).

Nothing is lost or overwritten: each point's state (todo / running / done / failed /
interrupted, every attempt) is in ``OUT/sweep-state.json``; a point's first attempt runs
in ``OUT/<point_id>/``, a retry in ``OUT/<point_id>-try2/`` (a failed attempt keeps its
folder and ``error.txt``); a point with a complete folder is skipped (resume); a second
sweep in the same folder is refused while the first runs (``OUT/.sweep.lock``).
``OUT/summary.csv`` (one row per point: status, error, attempts and the run's numbers from
``ggr_kv.run.runs``) and this invocation's ``OUT/sweep-log/<timestamp>.json`` are
rewritten whole as each point finishes; the combined figures go to ``OUT/figures/`` at the
end (never overwritten, see ``ggr_kv.analysis.plots``).
"""

from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import json
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from itertools import product
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ggr_kv.core.atomic import write_atomic
from ggr_kv.core.jsonutil import dumps, to_jsonable
from ggr_kv.core.paths import CHECKOUT_DIR, slug
from ggr_kv.run.sweepstate import SweepLock, SweepState, done_dir, next_attempt

__all__ = [
    "POINT_DEFAULTS",
    "GridPoint",
    "PointResult",
    "SweepResult",
    "SweepSpec",
    "grid",
    "load_sweep",
    "merge",
    "point_spec",
    "point_settings",
    "record_settings",
    "run_sweep",
    "settings_change",
    "settings_hash",
]

_KEYS = ("notebook", "out", "base", "datasets", "orderings", "models", "engines", "overrides",
         "repeats", "runner")
_AXES = ("dataset", "ordering", "model", "engine")
#: parameters the sweep sets itself on every point
_SET_BY_SWEEP = ("dataset", "orderings", "model", "out_dir", "comparison", "run_id")
RUNNERS = ("inprocess", "papermill")
#: point parameters an in-process sweep understands, with their defaults: those of
#: notebooks/02_inference.ipynb (a test keeps them equal), plus ``repeats``
POINT_DEFAULTS: dict[str, Any] = {
    "dataset": "movies",
    "rows": 12,
    "sample": "head",
    "seed": 0,
    "query_type": "filter",
    "orderings": ["no_cache", "original", "ggr"],
    "model": "tiny-llama",
    "engine_args": {"max_num_seqs": 4},
    "max_tokens": 4,
    "out_dir": "results",
    "comparison": "auto",
    "run_id": "",
    "repeats": 1,
    "kv_space": 0.0,  # notebook only: an in-process sweep takes `ggr-kv sweep --kv-space`
    "live": True,  # notebook only (live curves under the cell)
    "verbose": False,  # the notebook's vLLM/transformers logs; in-process runs keep them quiet
    # notebook only (runner: papermill): where the engines live (`ggr_kv.run.executors`)
    "executor": "local",
    "replicas": 2,
    "ray_address": "",
    "split": "groups",
}
#: parameters only the notebook reads; an in-process sweep refuses them
_NOTEBOOK_ONLY = ("kv_space", "executor", "replicas", "ray_address", "split")
#: the notebook ``runner: papermill`` runs when the file names none: the package's own
_DEFAULT_NOTEBOOK = CHECKOUT_DIR / "notebooks" / "02_inference.ipynb"
#: most points one sweep may have
MAX_POINTS = 10_000
#: largest sweep file read, bytes
MAX_SWEEP_FILE_BYTES = 2**20


def _from_file(path: str | Path, folder: Path) -> Path:
    """THE path rule of sweep files: a relative path is relative to the file's folder."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (folder / p).resolve()


def _dataset_path(name: str, folder: Path) -> str:
    """A dataset that is a table file (relative to the sweep file), made absolute; a
    dataset name (``movies``, ``movies@10k``) unchanged."""
    if Path(name).suffix.lower() in (".csv", ".tsv", ".parquet", ".pq") or "/" in name:
        return str(_from_file(name, folder))
    return name


def _orderings() -> tuple[str, ...]:
    from ggr_kv.reorder.registry import ordering_names

    return ordering_names()


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
    notebook : the notebook a papermill sweep runs (None: in-process only).
    out : the sweep folder.
    base : parameters of every point.
    datasets, orderings, models : grid axes.
    engines : engine name -> engine_args merged over ``base["engine_args"]``.
    overrides : ``{"match": {axis: value}, "parameters": {...}}`` entries, in order.
    sources : the YAML files it came from.
    repeats : passes per point (a point's ``repeats`` parameter overrides it).
    runner : ``inprocess`` (engine groups, this process) or ``papermill``.
    """

    notebook: Path | None
    out: Path
    base: dict[str, Any]
    datasets: list[str]
    orderings: list[str]
    models: list[str]
    engines: dict[str, dict[str, Any]]
    overrides: list[dict[str, Any]] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)
    repeats: int = 1
    runner: str = "inprocess"


@dataclass(frozen=True)
class GridPoint:
    """One grid point: its id (= first run folder's name), axis values and parameters."""

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
    status : ``done`` (ran now), ``skipped`` (done before), ``failed``, ``interrupted``,
        ``todo`` (dry run, or not reached).
    run_dir : the point's run folder (the complete one, else the last attempt's).
    notebook : the executed notebook (papermill).
    error : one-line error of a failed point.
    seconds : wall time spent on the point, s.
    group : its engine group (in-process).
    """

    point: GridPoint
    status: str
    run_dir: Path
    notebook: Path | None = None
    error: str | None = None
    seconds: float = 0.0
    group: int | None = None


@dataclass
class SweepResult:
    """A sweep's outcome: per-point results, the summary table and files written.

    Attributes
    ----------
    engine_starts : engines this invocation started (in-process: one per group run).
    groups : engine groups of the points that ran (in-process), as point-id lists.
    """

    spec: SweepSpec
    points: list[PointResult]
    summary: pd.DataFrame
    summary_csv: Path | None = None
    log: Path | None = None
    figures: dict[str, list[Path]] = field(default_factory=dict)
    engine_starts: int = 0
    groups: list[list[str]] = field(default_factory=list)

    @property
    def failed(self) -> list[PointResult]:
        return [p for p in self.points if p.status in ("failed", "interrupted")]


# ----------------------------------------------------------------------------- reading


def _as_list(value: Any, key: str, src: str) -> list[str]:
    if isinstance(value, (str, int, float)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ValueError(f"{src}: '{key}' must be a non-empty list, got {value!r}")
    return [str(v) for v in value]


def _read_yaml(f: Path) -> dict[str, Any]:
    """One sweep file as a mapping; a YAML error names the file, line and column."""
    if not f.is_file():
        raise FileNotFoundError(f"{f}: no such sweep file (or not a regular file)")
    if f.stat().st_size > MAX_SWEEP_FILE_BYTES:
        raise ValueError(f"{f}: {f.stat().st_size:,} bytes; a sweep file is at most "
                         f"{MAX_SWEEP_FILE_BYTES:,}")
    try:
        with open(f, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
    except UnicodeDecodeError as e:
        raise ValueError(f"{f}: not a text (UTF-8) YAML file: byte {e.start} is "
                         f"{e.object[e.start:e.start + 1]!r}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        what = " ".join(str(x) for x in (getattr(e, "context", None),
                                         getattr(e, "problem", None)) if x) or str(e)
        raise ValueError(f"{f}{where}: not valid YAML: {what}") from None
    if not isinstance(data, dict):
        raise ValueError(  # noqa: TRY004 - bad file content, reported like other bad values
            f"{f}: a sweep file must be a mapping, got {type(data).__name__}"
        )
    bad = sorted(set(data) - set(_KEYS))
    if bad:
        raise ValueError(f"{f}: unknown keys {bad}. Valid keys: {list(_KEYS)}")
    return data


def _positive(value: Any, key: str, src: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{src}: '{key}' must be a positive integer, got {value!r}")
    return value


def load_sweep(
    paths: str | Path | Sequence[str | Path],
    out: str | Path | None = None,
    *,
    runner: str | None = None,
    repeats: int | None = None,
) -> SweepSpec:
    """Read and merge sweep YAML files (later files override earlier ones).

    Relative paths in a sweep file (``out``, ``notebook``, table files in ``datasets``)
    are relative to the first file's folder, wherever the command runs; ``out`` given
    here is relative to the working directory. The notebook is read only by
    ``runner: papermill`` (default: the package's ``notebooks/02_inference.ipynb``).
    ``out``, ``runner`` and ``repeats`` override the files' values.

    Raises
    ------
    FileNotFoundError : a sweep file or the notebook is missing.
    ValueError : invalid YAML (file, line and column named), an unknown key, a missing
        axis, an unknown ordering or parameter (the message names the file and lists the
        valid choices).
    """
    files = [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]
    if not files:
        raise ValueError("no sweep file given")
    raw: dict[str, Any] = {}
    for f in files:
        raw = merge(raw, _read_yaml(f))
    src = " + ".join(str(f) for f in files)
    start = files[0].resolve().parent
    for key in ("datasets", "orderings", "models"):
        if key not in raw:
            raise ValueError(f"{src}: missing '{key}'")
    runner = runner or raw.get("runner") or "inprocess"
    if runner not in RUNNERS:
        raise ValueError(f"{src}: unknown runner {runner!r}; valid runners: {list(RUNNERS)}")
    notebook = None
    if runner == "papermill":  # an in-process sweep (and its dry run) never reads it
        notebook = _from_file(raw["notebook"], start) if "notebook" in raw else _DEFAULT_NOTEBOOK
        if not notebook.is_file():
            raise FileNotFoundError(f"{src}: notebook {notebook} does not exist")
        _check_notebook(notebook, src)
    if out is not None:  # from the command line: relative to the working directory
        out_dir = Path(out).expanduser().resolve()
    else:
        out_dir = _from_file(raw.get("out", "results/sweep"), start)
    raw["datasets"] = [_dataset_path(d, start) for d in _as_list(raw["datasets"], "datasets", src)]
    spec = SweepSpec(
        notebook=notebook,
        out=out_dir,
        base=_base(raw, src),
        datasets=_as_list(raw["datasets"], "datasets", src),
        orderings=_check_orderings(_as_list(raw["orderings"], "orderings", src), src),
        models=_as_list(raw["models"], "models", src),
        engines=_engines(raw, src),
        overrides=_overrides(raw, src),
        sources=files,
        repeats=_positive(repeats if repeats is not None else raw.get("repeats", 1), "repeats",
                          src),
        runner=runner,
    )
    _check_parameters(spec, src)
    return spec


def _check_orderings(orderings: list[str], src: str) -> list[str]:
    valid = _orderings()
    bad = [o for o in orderings if o not in valid]
    if bad:
        raise ValueError(f"{src}: unknown orderings {bad}. Valid orderings: {list(valid)}")
    return orderings


def _engines(raw: dict[str, Any], src: str) -> dict[str, dict[str, Any]]:
    engines = raw.get("engines") or {"default": {}}
    if not isinstance(engines, dict) or not all(
        isinstance(v or {}, dict) for v in engines.values()
    ):
        raise ValueError(f"{src}: 'engines' must map a name to engine arguments, got {engines!r}")
    return {str(k): dict(v or {}) for k, v in engines.items()}


def _base(raw: dict[str, Any], src: str) -> dict[str, Any]:
    base = raw.get("base") or {}
    if not isinstance(base, dict):
        raise ValueError(f"{src}: 'base' must be a mapping of point parameters")  # noqa: TRY004
    return base


def _overrides(raw: dict[str, Any], src: str) -> list[dict[str, Any]]:
    overrides = raw.get("overrides") or []
    for i, o in enumerate(overrides):
        if not isinstance(o, dict) or set(o) - {"match", "parameters"}:
            raise ValueError(f"{src}: overrides[{i}] must have 'match' and 'parameters' only")
        bad = sorted(set(o.get("match") or {}) - set(_AXES))
        if bad:
            raise ValueError(
                f"{src}: overrides[{i}].match has unknown axes {bad}; axes: {list(_AXES)}"
            )
    return overrides


def _check_notebook(notebook: Path, src: str) -> None:
    """A Jupyter notebook (.ipynb, JSON with ``cells``); the message never quotes the file."""
    ok = notebook.suffix == ".ipynb"
    if ok:
        try:
            with open(notebook, "rb") as fh:
                ok = fh.read(1).lstrip() in (b"{", b"")
                fh.seek(0)
                ok = ok and isinstance(json.load(fh).get("cells"), list)
        except (OSError, ValueError, AttributeError):
            ok = False
    if not ok:
        raise ValueError(f"{src}: notebook {notebook} is not a Jupyter notebook (.ipynb JSON "
                         "with cells)")


def _notebook_parameters(notebook: Path) -> set[str]:
    import papermill as pm

    return set(pm.inspect_notebook(str(notebook)))


def _check_parameters(spec: SweepSpec, src: str) -> None:
    given = set(spec.base) | {k for o in spec.overrides for k in (o.get("parameters") or {})}
    for k in ("rows", "max_tokens", "seed", "repeats"):
        for params in [spec.base, *(o.get("parameters") or {} for o in spec.overrides)]:
            if k in params and (isinstance(params[k], bool) or not isinstance(params[k], int)):
                raise ValueError(f"{src}: parameter '{k}' must be an integer, got {params[k]!r}")
    if spec.runner == "papermill":
        declared = _notebook_parameters(spec.notebook)
        needed = given | set(_SET_BY_SWEEP) | {"engine_args"}
        needed |= {"repeats"} if spec.repeats > 1 else set()
        bad = sorted(needed - declared)
        if bad:
            raise ValueError(
                f"{src}: {spec.notebook.name} has no parameters {bad}. "
                f"Its parameters: {sorted(declared)}"
            )
        return
    if "kv_space" in given:
        raise ValueError(f"{src}: 'kv_space' is the notebook's; an in-process sweep's engines "
                         "share one KV size: ggr-kv sweep --kv-space GIB")
    only = sorted(given & set(_NOTEBOOK_ONLY))
    if only:
        raise ValueError(f"{src}: {only} are notebook 02's parameters: use runner: papermill "
                         "to run points on other executors")
    bad = sorted(given - set(POINT_DEFAULTS))
    if bad:
        raise ValueError(
            f"{src}: an in-process sweep has no parameters {bad}. Its parameters: "
            f"{sorted(set(POINT_DEFAULTS) - set(_SET_BY_SWEEP))} (use runner: papermill for "
            "another notebook's own)"
        )


# ----------------------------------------------------------------------------- grid


def _axis_name(text: str) -> str:
    """An axis value as a point-id part: a table path by its file's stem, else the text."""
    p = Path(text)
    is_path = "/" in text or "\\" in text or p.suffix.lower() in (".csv", ".tsv", ".parquet")
    name = (
        (p.stem if p.suffix.lower() in (".csv", ".tsv", ".parquet") else p.name)
        if is_path
        else text
    )
    return slug(name, "-", "x")


def grid(spec: SweepSpec) -> list[GridPoint]:
    """Every (dataset, ordering, model, engine) point with its parameters.

    Raises ValueError for more than `MAX_POINTS` points (before building any) or two
    points with one folder name."""
    sizes = [len(spec.datasets), len(spec.models), len(spec.engines), len(spec.orderings)]
    n = sizes[0] * sizes[1] * sizes[2] * sizes[3]
    if n > MAX_POINTS:
        raise ValueError(
            f"the sweep grid has {n:,} points (datasets x models x engines x orderings = "
            f"{' x '.join(map(str, sizes))}), above the limit of {MAX_POINTS:,}; split it "
            "into several sweep files"
        )
    points = []
    for dataset, model, engine, ordering in product(
        spec.datasets, spec.models, spec.engines, spec.orderings
    ):
        axes = {"dataset": dataset, "ordering": ordering, "model": model, "engine": engine}
        params = {"repeats": spec.repeats, **copy.deepcopy(spec.base)}
        params["engine_args"] = merge(params.get("engine_args") or {}, spec.engines[engine])
        for o in spec.overrides:
            if all(str(axes[k]) == str(v) for k, v in (o.get("match") or {}).items()):
                params = merge(params, o.get("parameters") or {})
        point_id = "__".join(_axis_name(axes[k]) for k in _AXES)
        params.update(
            dataset=dataset,
            orderings=[ordering],
            model=model,
            out_dir=str(spec.out),
            comparison="",
            run_id=point_id,
        )
        points.append(GridPoint(point_id, dataset, ordering, model, engine, params))
    dup = sorted(i for i, k in Counter(p.point_id for p in points).items() if k > 1)
    if dup:
        raise ValueError(f"grid points share folder names {dup}; give datasets distinct names")
    return points


def _engine_settings(point: GridPoint) -> Any:
    from ggr_kv.engine.config import EngineConfig

    p = point.parameters
    return EngineConfig.from_dict({**(p.get("engine_args") or {}), "model": p["model"]})


def point_spec(point: GridPoint, run_id: str) -> Any:
    """The `ggr_kv.run.RunSpec` of a point, as notebook 02 builds its run: the dataset's
    first ``rows`` rows (``sample``, ``seed``), its ``query_type`` query, ``max_tokens``
    (0: the query's own), ``engine_args`` with ``model``, ``repeats``."""
    from ggr_kv.datasets import load_dataset
    from ggr_kv.run.prepare import RunSpec

    p = {**POINT_DEFAULTS, **point.parameters}
    ds = load_dataset(p["dataset"], n=p["rows"] or None, sample=p["sample"], seed=p["seed"])
    sampling = {"max_tokens": p["max_tokens"]} if p["max_tokens"] else None
    return RunSpec(ds, point.ordering, ds.query(p["query_type"]), repeats=int(p["repeats"]),
                   engine=_engine_settings(point), run_id=run_id, sampling=sampling)


def engine_groups(points: Sequence[GridPoint]) -> list[list[GridPoint]]:
    """Points grouped by the engine they need (one engine start per group), in order."""
    from ggr_kv.run.batch import group_specs
    from ggr_kv.run.prepare import RunSpec

    specs = [RunSpec(None, p.ordering, engine=_engine_settings(p)) for p in points]
    return [[points[i] for i in g.members] for g in group_specs(specs)]


# ----------------------------------------------------------------------------- running


class _Sweep:
    """One invocation: state, summary and log kept current as points finish."""

    def __init__(self, spec: SweepSpec, points: list[GridPoint], progress: bool) -> None:
        from ggr_kv import __version__

        self.spec, self.points, self.progress = spec, points, progress
        self.state = SweepState(spec.out)
        self.results: dict[str, PointResult] = {}
        stamp = _dt.datetime.now().astimezone()
        log_dir = spec.out / "sweep-log"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log = _free(log_dir / f"{stamp.strftime('%Y%m%dT%H%M%S')}.json")
        write_atomic(self.log, "", overwrite=False)
        self.started = stamp.isoformat(timespec="seconds")
        self.version = __version__
        self.engine_starts = 0
        self.groups: list[list[str]] = []

    def result(self, p: GridPoint, status: str, run_dir: Path | None = None, **kw: Any) -> None:
        old = self.results.get(p.point_id)
        seconds = kw.pop("seconds", 0.0) + (old.seconds if old else 0.0)
        rd = run_dir or (old.run_dir if old else self.spec.out / p.point_id)
        self.results[p.point_id] = PointResult(p, status, rd, seconds=seconds, **kw)

    def ordered(self) -> list[PointResult]:
        return [self.results.get(p.point_id) or PointResult(p, "todo", self.spec.out / p.point_id)
                for p in self.points]

    def flush(self, ended: str | None = None) -> None:
        """Rewrite summary.csv and this invocation's log (each whole, atomically)."""
        res = self.ordered()
        write_atomic(self.spec.out / "summary.csv", _summary(res).to_csv(index=False))
        log = {
            "started": self.started,
            "updated": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "ended": ended,  # None while running, then "complete", "interrupted" or "error: ..."
            "ggr_kv": self.version,
            "sources": [str(s) for s in self.spec.sources],
            "spec": {k: (str(v) if isinstance(v, Path) else v)
                     for k, v in asdict(self.spec).items() if k != "sources"},
            "engine_starts": self.engine_starts,
            "engine_groups": self.groups,
            "points": [{"point_id": r.point.point_id, "status": r.status, "error": r.error,
                        "seconds": r.seconds, "run_dir": str(r.run_dir),
                        "notebook": str(r.notebook) if r.notebook else None, "group": r.group}
                       for r in res],
        }
        write_atomic(self.log, dumps(log, indent=2) + "\n")


def _free(path: Path) -> Path:
    k, p = 1, path
    while p.exists():
        k += 1
        p = path.with_name(f"{path.stem}-{k}{path.suffix}")
    return p


def _run_inprocess(sw: _Sweep, todo: list[GridPoint]) -> None:
    """The todo points through `run_batch`: one engine per engine group."""
    from ggr_kv.engine.config import engine_starts
    from ggr_kv.run.batch import group_specs, run_batch

    by_index: dict[int, GridPoint] = {}
    specs = []
    for p in todo:
        run_id = next_attempt(sw.spec.out, p.point_id)
        try:
            specs.append(point_spec(p, run_id))
        except Exception as e:  # noqa: BLE001 - a bad point is recorded, the others run
            sw.state.update(p.point_id, "failed", error=_first_line(e))
            sw.result(p, "failed", error=_first_line(e))
            continue
        by_index[len(specs) - 1] = p
    if not specs:
        return
    groups = group_specs(specs)
    sw.groups += [[by_index[i].point_id for i in g.members] for g in groups]
    group_of = {by_index[i].point_id: k for k, g in enumerate(groups) for i in g.members}
    sw.flush()

    def on_update(o: Any) -> None:
        p = by_index[o.index]
        status = {"not_run": "todo", "pending": "todo"}.get(o.status, o.status)
        if status == "done" and o.run_dir is not None:
            record_settings(Path(o.run_dir), p)
        sw.state.update(p.point_id, status, run_dir=o.run_dir, error=o.error,
                        seconds=o.seconds if status != "running" else None)
        sw.result(p, "done" if status == "done" else status, o.run_dir, error=o.error,
                  seconds=o.seconds if status != "running" else 0.0, group=group_of[p.point_id])
        if status != "running":
            sw.flush()

    before = engine_starts()
    try:
        run_batch(specs, out_dir=sw.spec.out, on_error="continue", on_update=on_update,
                  progress=sw.progress)
    finally:
        sw.engine_starts += engine_starts() - before


def _run_papermill(sw: _Sweep, todo: list[GridPoint], kernel_name: str | None,
                   timeout: float | None) -> None:
    """The todo points one at a time through the notebook (papermill)."""
    import papermill as pm
    from tqdm.auto import tqdm

    nb_dir = sw.spec.out / "_notebooks"
    nb_dir.mkdir(parents=True, exist_ok=True)
    declared = _notebook_parameters(sw.spec.notebook)
    for p in tqdm(todo, desc="sweep", unit="point", disable=not sw.progress):
        run_id = next_attempt(sw.spec.out, p.point_id)
        run_dir = sw.spec.out / run_id
        params = {k: v for k, v in {**p.parameters, "run_id": run_id}.items() if k in declared}
        nb = _free(nb_dir / f"{run_id}.ipynb")
        sw.state.update(p.point_id, "running", run_dir=run_dir, notebook=nb)
        sw.result(p, "running", run_dir, notebook=nb)
        t0 = time.perf_counter()
        error = None
        try:
            pm.execute_notebook(str(sw.spec.notebook), str(nb), parameters=params,
                                kernel_name=kernel_name, progress_bar=False,
                                cwd=str(sw.spec.notebook.parent), execution_timeout=timeout)
            if not (run_dir / "run.json").is_file():
                error = f"the notebook finished without writing {run_dir / 'run.json'}"
        except KeyboardInterrupt:
            sw.state.update(p.point_id, "interrupted", error="interrupted",
                            seconds=time.perf_counter() - t0)
            sw.result(p, "interrupted", run_dir, notebook=nb, error="interrupted")
            raise
        except Exception as e:  # noqa: BLE001 - a failing point is recorded, the sweep goes on
            error = _papermill_error(e)
        status = "failed" if error else "done"
        if status == "done":
            record_settings(run_dir, p)
        secs = time.perf_counter() - t0
        sw.state.update(p.point_id, status, error=error, seconds=secs)
        sw.result(p, status, run_dir, notebook=nb, error=error, seconds=secs)
        sw.flush()


# ----------------------------------------------------------------------------- settings

#: point parameters that do not change what a point measures (not in its settings hash)
_NOT_SETTINGS = ("out_dir", "comparison", "run_id", "verbose")
#: the key of run.json that holds the sweep point's settings and their hash
SETTINGS_KEY = "sweep_point"


def point_settings(point: GridPoint) -> dict[str, Any]:
    """What a point measures: its resolved parameters (dataset, ordering, model, rows,
    engine_args, query, repeats, ...), without where it is written."""
    return to_jsonable({k: v for k, v in point.parameters.items() if k not in _NOT_SETTINGS})


def settings_hash(point: GridPoint) -> str:
    """sha256 (16 hex digits) of `point_settings` as canonical JSON."""
    text = json.dumps(point_settings(point), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def record_settings(run_dir: Path, point: GridPoint) -> None:
    """Add the point's settings and their hash to a complete run's ``run.json`` (rewritten
    whole, atomically: readers see the old file or the new one)."""
    rj = run_dir / "run.json"
    if not rj.is_file():
        return
    data = json.loads(rj.read_text(encoding="utf-8"))
    data[SETTINGS_KEY] = {"point_id": point.point_id, "settings_hash": settings_hash(point),
                          "settings": point_settings(point)}
    write_atomic(rj, dumps(data, indent=2) + "\n")


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def settings_change(run_dir: Path, point: GridPoint) -> str | None:
    """None when the complete run in ``run_dir`` was made with the point's settings, else
    what differs (``rows 8 -> 16, engine_args.max_num_seqs 8 -> 4``)."""
    try:
        rec = json.loads((run_dir / "run.json").read_text(encoding="utf-8")).get(SETTINGS_KEY)
    except (OSError, ValueError, AttributeError):
        rec = None
    if not isinstance(rec, dict) or "settings_hash" not in rec:
        return "its run.json records no sweep settings"
    if rec["settings_hash"] == settings_hash(point):
        return None
    old, new = _flat(rec.get("settings") or {}), _flat(point_settings(point))
    diff = [f"{k} {old.get(k, '-')} -> {new.get(k, '-')}" for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)]
    return ", ".join(diff[:4]) + (f", ... ({len(diff)} settings)" if len(diff) > 4 else "") \
        or "settings hash differs"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _papermill_error(exc: BaseException) -> str:
    """One line for a failed notebook: the cell's exception, ANSI colors removed."""
    from papermill.exceptions import PapermillExecutionError

    if isinstance(exc, PapermillExecutionError):
        line = f"{exc.ename}: {exc.evalue}"
    else:
        line = _first_line(exc)
    return re.sub(r"\x1b\[[0-9;]*m", "", line).splitlines()[0] if line else "error"


def _summary(results: list[PointResult]) -> pd.DataFrame:
    from ggr_kv.run.runs import load_runs

    df = pd.DataFrame([
        {"point_id": r.point.point_id, "dataset": r.point.dataset, "ordering": r.point.ordering,
         "model": r.point.model, "engine": r.point.engine, "status": r.status, "error": r.error,
         "seconds": round(r.seconds, 3), "group": r.group, "run_dir": str(Path(r.run_dir).resolve())}
        for r in results
    ])
    done = [r.run_dir for r in results if (Path(r.run_dir) / "run.json").is_file()]
    if done:
        runs, _ = load_runs(done)
        keep = [c for c in runs.columns
                if c not in ("dataset", "model", "ordering", "engine", "group")]
        runs = runs[keep].assign(run_dir=[str(Path(p).resolve()) for p in runs["path"]])
        df = df.merge(runs.drop(columns="path"), on="run_dir", how="left")
    return df


def _figures(spec: SweepSpec, res: SweepResult) -> None:
    done = [r.run_dir for r in res.points if (Path(r.run_dir) / "run.json").is_file()]
    if not done:
        return
    from ggr_kv.analysis.plots import fig_hit_rate_bars, fig_job_time, save_figure
    from ggr_kv.run.runs import load_runs

    runs, _ = load_runs(done)
    fig_dir = spec.out / "figures"
    res.figures["sweep_job_time"] = save_figure(fig_job_time(runs), fig_dir, "sweep_job_time")
    res.figures["sweep_hit_rate"] = save_figure(fig_hit_rate_bars(runs), fig_dir, "sweep_hit_rate")


def _dry_run(spec: SweepSpec, pts: list[GridPoint]) -> SweepResult:
    state = SweepState(spec.out) if spec.out.is_dir() else None
    res = []
    for p in pts:
        st = state.status(p.point_id) if state is not None else "todo"
        rd = (done_dir(spec.out, p.point_id) if st == "done" else None) or spec.out / p.point_id
        why = settings_change(rd, p) if st == "done" else None
        error = (state.points.get(p.point_id) or {}).get("error") if state is not None else None
        res.append(PointResult(p, ("changed" if why else "skipped") if st == "done" else st, rd,
                               error=why or error))
    groups = [[p.point_id for p in g] for g in engine_groups(pts)] if spec.runner == "inprocess" \
        else [[p.point_id] for p in pts]
    gid = {pid: k for k, g in enumerate(groups) for pid in g}
    for r in res:
        r.group = gid[r.point.point_id]
    return SweepResult(spec, res, _summary(res), groups=groups)


def run_sweep(
    spec: SweepSpec,
    *,
    dry_run: bool = False,
    progress: bool = True,
    kernel_name: str | None = None,
    timeout: float | None = None,
    points: Iterable[GridPoint] | None = None,
    rerun_changed: bool = False,
) -> SweepResult:
    """Run every grid point not done yet; record failures and go on.

    Parameters
    ----------
    dry_run : list the grid (``skipped`` for points done, else their state: ``todo``,
        ``failed``, ``interrupted``) and the engine groups, running and writing nothing.
    kernel_name : Jupyter kernel for papermill (default: the notebook's own).
    timeout : per-cell timeout for papermill, s (default none).
    points : run these points instead of the whole grid.
    rerun_changed : a point whose complete folder was made with other settings (see
        `settings_change`) runs again in a new attempt folder; without it the sweep
        refuses to start and names those points and what changed.

    Raises
    ------
    RuntimeError : another sweep is working in ``spec.out``.
    ValueError : done points whose settings changed, without ``rerun_changed``.
    KeyboardInterrupt : after recording the points it stopped as ``interrupted`` and
        rewriting the summary and log.
    """
    pts = list(points) if points is not None else grid(spec)
    if dry_run:
        return _dry_run(spec, pts)
    with SweepLock(spec.out):
        sw = _Sweep(spec, pts, progress)
        sw.state.recover()
        todo, changed = [], []
        for p in pts:
            d = done_dir(spec.out, p.point_id)
            why = settings_change(d, p) if d is not None else None
            if d is not None and why is None:
                sw.result(p, "skipped", d)
            else:
                todo.append(p)
                if why is not None:
                    changed.append(f"{p.point_id} ({why})")
        if changed and not rerun_changed:
            raise ValueError(
                f"{spec.out}: {len(changed)} done point(s) were run with other settings: "
                f"{'; '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}. Pass "
                "--rerun-changed to run them again in new attempt folders (the old ones "
                "stay), or another --out"
            )
        sw.flush()
        ended = "complete"
        try:
            if spec.runner == "papermill":
                _run_papermill(sw, todo, kernel_name, timeout)
            else:
                _run_inprocess(sw, todo)
        except KeyboardInterrupt:
            ended = "interrupted"
            raise
        except BaseException as e:
            ended = f"error: {_first_line(e)}"
            raise
        finally:
            sw.flush(ended=ended)
        res = SweepResult(spec, sw.ordered(), _summary(sw.ordered()), spec.out / "summary.csv",
                          sw.log, engine_starts=sw.engine_starts, groups=sw.groups)
    _figures(spec, res)
    return res
