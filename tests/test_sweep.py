"""Sweeps: grid, parameter merging, engine groups, state, resume, failures.

The vLLM tests run a real tiny sweep in process (two tables x {original, ggr} on ONE
tiny-llama engine, plus a dataset name that does not exist), resume it after a simulated
kill, and run one point through the notebook with papermill.
"""

from __future__ import annotations

import ast
import json
import subprocess
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest
import yaml

from ggr_kv.analysis.sweep import POINT_DEFAULTS, grid, load_sweep, merge, run_sweep
from ggr_kv.cli.main import main as cli_main
from ggr_kv.run.rundir import INCOMPLETE_FILE, reserve_run_dir
from ggr_kv.run.sweepstate import SweepLock, SweepState, next_attempt

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
INFERENCE = ROOT / "notebooks" / "02_inference.ipynb"


def write_yaml(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def sweep_file(tmp_path: Path, **changes) -> Path:
    data = {
        "notebook": str(INFERENCE),
        "out": "out",
        "base": {"rows": 6, "max_tokens": 2, "engine_args": {"max_num_seqs": 4}},
        "datasets": ["movies"],
        "orderings": ["original", "ggr"],
        "models": ["tiny-llama"],
    }
    data.update(changes)
    return write_yaml(tmp_path / "sweep.yaml", data)


# -- notebooks as papermill sees them -------------------------------------------------
@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_parameters_cell_is_first_typed_and_fully_parsed(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    first = nb.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    assert sum("parameters" in c.metadata.get("tags", []) for c in nb.cells) == 1
    tree = ast.parse(first.source)
    declared = [n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)]
    assert len(declared) == len(tree.body), "only typed constants in the parameters cell"
    for line in first.source.splitlines():
        assert "  # " in line, f"parameter without a help comment: {line}"
    # papermill must see every one of them (a second '=' on a line hides it)
    params = pm.inspect_notebook(str(nb_path))
    assert list(params) == declared
    for name, p in params.items():
        assert p["help"], name
        assert p["inferred_type_name"] != "None", name


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebooks_are_stored_without_stray_outputs(nb_path):
    nb = nbformat.read(nb_path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if cell.source.startswith("# NBVAL_CHECK_OUTPUT"):
            assert cell.outputs, "a checked cell keeps its reference output"
            assert all(o.output_type == "stream" for o in cell.outputs)
            assert cell.execution_count is not None  # nbval ignores "unrun" reference cells
        else:
            assert not cell.outputs and cell.execution_count is None


# -- grid and parameters --------------------------------------------------------------
def test_grid_merges_base_engines_and_overrides(tmp_path):
    f = sweep_file(
        tmp_path,
        datasets=["movies", "products"],
        orderings=["no_cache", "ggr"],
        models=["tiny-llama", "llama-3.1-8b"],
        engines={"default": {}, "small": {"max_num_seqs": 2, "block_size": 32}},
        overrides=[
            {
                "match": {"dataset": "products", "ordering": "ggr"},
                "parameters": {"rows": 3, "engine_args": {"seed": 7}},
            }
        ],
    )
    spec = load_sweep(f)
    assert spec.out == tmp_path / "out"  # relative to the sweep file outside a checkout
    points = grid(spec)
    assert len(points) == 2 * 2 * 2 * 2
    ids = [p.point_id for p in points]
    assert len(set(ids)) == len(ids)
    p = next(p for p in points if p.point_id == "products__ggr__llama-3.1-8b__small")
    assert p.parameters["orderings"] == ["ggr"]
    assert p.parameters["rows"] == 3
    assert p.parameters["engine_args"] == {"max_num_seqs": 2, "block_size": 32, "seed": 7}
    assert p.parameters["run_id"] == p.point_id and p.parameters["comparison"] == ""
    assert p.parameters["repeats"] == 1
    q = next(p for p in points if p.point_id == "movies__no_cache__tiny-llama__default")
    assert q.parameters["rows"] == 6 and q.parameters["engine_args"] == {"max_num_seqs": 4}
    assert spec.base["engine_args"] == {"max_num_seqs": 4}  # merging never mutates the spec


def test_later_files_override_earlier_ones(tmp_path):
    base = sweep_file(tmp_path)
    exp = write_yaml(
        tmp_path / "exp.yaml",
        {"base": {"rows": 9, "engine_args": {"seed": 1}}, "orderings": ["sorted"]},
    )
    spec = load_sweep([base, exp], out=tmp_path / "elsewhere")
    assert spec.base == {"rows": 9, "max_tokens": 2, "engine_args": {"max_num_seqs": 4, "seed": 1}}
    assert spec.orderings == ["sorted"]
    assert spec.out == tmp_path / "elsewhere"
    assert merge({"a": {"b": 1}}, {"a": {"c": 2}, "d": [1]}) == {"a": {"b": 1, "c": 2}, "d": [1]}


def test_a_sweep_file_anywhere_resolves_paths_from_its_own_folder(tmp_path, monkeypatch, capsys):
    """The shipped sweep copied outside the checkout, run from a third folder: its paths
    are relative to the file; an in-process dry run reads no notebook."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "elsewhere").mkdir()
    f = tmp_path / "mine" / "cpu-tiny.yaml"
    f.write_text((ROOT / "sweeps" / "cpu-tiny.yaml").read_text() + "notebook: nowhere.ipynb\n")
    (tmp_path / "mine" / "t.csv").write_text("a,b\n1,x\n2,y\n")
    monkeypatch.chdir(tmp_path / "elsewhere")
    spec = load_sweep(f)
    assert spec.out == (tmp_path / "results" / "sweeps" / "cpu-tiny").resolve()
    assert cli_main(["sweep", str(f), "--dry-run"]) == 0
    assert "6 grid points, 2 engine start(s)" in capsys.readouterr().out
    g = write_yaml(tmp_path / "mine" / "file.yaml", {"datasets": ["t.csv"], "orderings": ["ggr"],
                                                     "models": ["tiny-llama"], "out": "o"})
    spec = load_sweep(g)
    assert spec.datasets == [str((tmp_path / "mine" / "t.csv").resolve())]
    assert spec.out == (tmp_path / "mine" / "o").resolve()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"orderings": ["ggr", "fastest"]}, r"unknown orderings \['fastest'\]. Valid orderings"),
        ({"colour": 1}, r"unknown keys \['colour'\]. Valid keys"),
        ({"base": {"rowz": 5}}, r"has no parameters \['rowz'\]. Its parameters: \["),
        ({"base": {"rowz": 5}, "runner": "papermill"},
         r"02_inference.ipynb has no parameters \['rowz'\]. Its parameters: \["),
        ({"repeats": 0}, r"'repeats' must be a positive integer"),
        ({"runner": "slurm"}, r"unknown runner 'slurm'"),
        ({"datasets": []}, r"'datasets' must be a non-empty list"),
        ({"notebook": "missing.ipynb", "runner": "papermill"},
         r"notebook .*missing.ipynb does not exist"),
        ({"overrides": [{"match": {"size": 1}, "parameters": {}}]}, r"unknown axes \['size'\]"),
    ],
)
def test_bad_sweep_files_are_refused_with_the_choices(tmp_path, capsys, changes, message):
    f = sweep_file(tmp_path, **changes)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_sweep(f)
    assert cli_main(["sweep", str(f), "--dry-run"]) == 2
    assert "sweep.yaml" in capsys.readouterr().err


def test_dry_run_lists_the_grid_and_its_engine_groups_and_runs_nothing(tmp_path, capsys):
    f = sweep_file(tmp_path, datasets=["movies", "products"],
                   orderings=["no_cache", "original", "ggr"],
                   engines={"default": {}, "small": {"num_gpu_blocks_override": 64}})
    assert cli_main(["sweep", str(f), "--dry-run", "--repeats", "3"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("[")]
    assert len(lines) == 12 and all("[       todo]" in ln for ln in lines)
    # caching x KV size: 4 engines for 12 points (no_cache points share caching-off ones)
    assert "12 grid points, 4 engine start(s)" in out
    assert '"repeats": 3' in lines[0]
    groups = {}
    for ln in lines:
        groups.setdefault(ln.split("engine ")[1].split()[0], []).append(ln.split()[3])
    assert sorted(len(g) for g in groups.values()) == [2, 2, 4, 4]
    assert not (tmp_path / "out").exists()
    assert cli_main(["sweep", str(f), "--dry-run", "--papermill"]) == 0
    assert "12 grid points, 12 engine start(s)" in capsys.readouterr().out


def test_in_process_defaults_are_the_notebooks_parameters():
    declared = pm.inspect_notebook(str(INFERENCE))
    got = {k: ast.literal_eval(v["default"]) for k, v in declared.items()}
    assert got.pop("repeats", 1) == POINT_DEFAULTS["repeats"]  # once the notebook has it
    assert {k: v for k, v in POINT_DEFAULTS.items() if k != "repeats"} == got


def test_a_broken_yaml_file_is_named_with_its_line(tmp_path, capsys):
    f = tmp_path / "broken.yaml"
    f.write_text("datasets: [movies]\norderings: [original, ggr\nmodels: [tiny-llama]\n")
    with pytest.raises(ValueError, match=r"broken.yaml:3:\d+: not valid YAML"):
        load_sweep(f)
    assert cli_main(["sweep", str(f), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.yaml:3:" in err[0] and "unicode string" not in err[0]


@pytest.mark.subprocess
def test_a_second_sweep_in_the_same_folder_is_refused_while_the_first_lives(tmp_path):
    with SweepLock(tmp_path), pytest.raises(RuntimeError, match=r"another sweep \(pid \d+"):
        SweepLock(tmp_path).__enter__()
    gone = subprocess.Popen(["true"])
    gone.wait()  # a sweep killed without cleaning up: its lock names a dead process
    (tmp_path / ".sweep.lock").write_text(json.dumps({"pid": gone.pid, "host": __import__(
        "socket").gethostname()}))
    with SweepLock(tmp_path) as lock:
        assert lock.held
    assert not (tmp_path / ".sweep.lock").exists()


def test_a_point_left_running_reads_as_interrupted_and_retries_in_a_new_folder(tmp_path, capsys):
    f = sweep_file(tmp_path, orderings=["ggr"])
    spec = load_sweep(f)
    (point,) = grid(spec)
    folder = reserve_run_dir(spec.out, point.point_id)  # a run killed mid-way
    state = SweepState(spec.out)
    state.update(point.point_id, "running", run_dir=folder)
    assert SweepState(spec.out).status(point.point_id) == "interrupted"
    assert next_attempt(spec.out, point.point_id) == f"{point.point_id}-try2"
    assert cli_main(["sweep", str(f), "--dry-run"]) == 0
    assert "[interrupted]" in capsys.readouterr().out
    assert (folder / INCOMPLETE_FILE).is_file()  # left where it was



# -- real sweeps ------------------------------------------------------------------------
@pytest.mark.vllm
def test_tiny_sweep_runs_on_one_engine_resumes_and_records_failures(tmp_path, capsys):
    pytest.importorskip("vllm")
    from ggr_kv.engine.config import engine_starts

    f = sweep_file(tmp_path, datasets=["movies", "products", "no-such-table"], repeats=2)
    spec = load_sweep(f)
    starts = engine_starts()
    res = run_sweep(spec, progress=False)
    assert engine_starts() - starts == res.engine_starts == 1  # 4 points, ONE engine
    status = {r.point.point_id: r.status for r in res.points}
    ok = [f"{d}__{o}__tiny-llama__default" for d in ("movies", "products") for o in ("original", "ggr")]
    bad = [f"no-such-table__{o}__tiny-llama__default" for o in ("original", "ggr")]
    assert status == {**dict.fromkeys(ok, "done"), **dict.fromkeys(bad, "failed")}
    out = spec.out
    engines = set()
    for pid in ok:
        meta = json.loads((out / pid / "run.json").read_text())
        assert meta["method"] == pid.split("__")[1] and meta["rows"] == 6
        assert meta["sampling"]["max_tokens"] == 2 and meta["repeats"]["count"] == 2
        engines.add(meta["engine"]["engine_id"])
        assert meta["engine"]["started_by_runner"] and meta["engine"]["runs"] == 4
    assert len(engines) == 1
    for r in res.failed:
        assert "unknown dataset 'no-such-table'" in r.error
        assert not (out / r.point.point_id).exists()  # it never started: no folder
    summary = pd.read_csv(out / "summary.csv")
    assert dict(zip(summary["point_id"], summary["status"])) == status
    done = summary[(summary["status"] == "done") & (summary["dataset"] == "movies")]
    done = done.set_index("ordering")
    assert done.loc["ggr", "prefix_hits"] > 0 and done.loc["ggr", "repeats"] == 2
    assert done.loc["ggr", "speedup_vs_original"] == pytest.approx(
        done.loc["original", "job_s"] / done.loc["ggr", "job_s"])
    state = json.loads((out / "sweep-state.json").read_text())["points"]
    assert {p: d["status"] for p, d in state.items()} == status
    assert {p.suffix for files in res.figures.values() for p in files} == {".png", ".svg"}
    log = json.loads(next((out / "sweep-log").glob("*.json")).read_text())
    assert log["ended"] == "complete" and log["engine_starts"] == 1 and len(log["engine_groups"]) == 1

    # a point killed mid-run (folder reserved, state "running") and a grid that grew
    f2 = sweep_file(tmp_path, datasets=["movies", "products", "no-such-table"], repeats=2,
                    orderings=["original", "ggr", "sorted"])
    killed = "movies__sorted__tiny-llama__default"
    reserve_run_dir(out, killed)
    st = SweepState(out)
    st.update(killed, "running", run_dir=out / killed)
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*/run.json")}
    starts = engine_starts()
    assert cli_main(["sweep", str(f2), "--no-progress", "--out", str(out)]) == 1  # failures
    printed = capsys.readouterr().out
    assert "2 done, 4 skipped, 3 failed" in printed and "engine starts: 1" in printed
    assert engine_starts() - starts == 1
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # complete runs untouched
    assert (out / killed / INCOMPLETE_FILE).is_file() and not (out / killed / "run.json").exists()
    assert (out / f"{killed}-try2" / "run.json").is_file()  # the retry's own folder
    state = json.loads((out / "sweep-state.json").read_text())["points"]
    assert state[killed]["status"] == "done"
    assert [a["status"] for a in state[killed]["attempts"]] == ["interrupted", "done"]
    assert len(list((out / "sweep-log").glob("*.json"))) == 2
    assert (out / "figures" / "sweep_job_time-2.png").is_file()  # figures never overwritten

    # the dry run now marks the done points
    assert cli_main(["sweep", str(f2), "--dry-run", "--out", str(out)]) == 0
    listing = capsys.readouterr().out
    assert listing.count("[    skipped]") == 6 and listing.count("[     failed]") == 3


@pytest.mark.vllm
def test_a_point_through_the_notebook_with_papermill(tmp_path):
    pytest.importorskip("vllm")
    f = sweep_file(tmp_path, orderings=["ggr"], runner="papermill")
    spec = load_sweep(f)
    res = run_sweep(spec, progress=False)
    (r,) = res.points
    assert r.status == "done", r.error
    meta = json.loads((r.run_dir / "run.json").read_text())
    assert meta["method"] == "ggr" and meta["rows"] == 6 and meta["sampling"]["max_tokens"] == 2
    executed = nbformat.read(r.notebook, as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and 'orderings = ["ggr"]' in injected[0].source
    assert r.notebook.parent == spec.out / "_notebooks"
    assert sorted(p.name for p in r.run_dir.iterdir()) == sorted(
        ["run.json", "steps.parquet", "steps.csv", "requests.parquet", "requests.csv",
         "outputs.csv", "plan.json"])
