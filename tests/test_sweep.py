"""Sweeps over notebooks/02_inference.ipynb: grid, parameter merging, resume, failures.

The vLLM test runs a real tiny sweep (movies x {original, ggr} on tiny-llama, plus a
dataset name that does not exist) through papermill.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import nbformat
import pandas as pd
import papermill as pm
import pytest
import yaml

from ggr_kv.analysis.sweep import grid, load_sweep, merge, run_sweep
from ggr_kv.cli.main import main as cli_main

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


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"orderings": ["ggr", "fastest"]}, r"unknown orderings \['fastest'\]. Valid orderings"),
        ({"colour": 1}, r"unknown keys \['colour'\]. Valid keys"),
        ({"base": {"rowz": 5}}, r"has no parameters \['rowz'\]. Its parameters: \["),
        ({"datasets": []}, r"'datasets' must be a non-empty list"),
        ({"notebook": "missing.ipynb"}, r"notebook .*missing.ipynb does not exist"),
        ({"overrides": [{"match": {"size": 1}, "parameters": {}}]}, r"unknown axes \['size'\]"),
    ],
)
def test_bad_sweep_files_are_refused_with_the_choices(tmp_path, capsys, changes, message):
    f = sweep_file(tmp_path, **changes)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        load_sweep(f)
    assert cli_main(["sweep", str(f), "--dry-run"]) == 2
    assert "sweep.yaml" in capsys.readouterr().err


def test_dry_run_lists_the_grid_and_runs_nothing(tmp_path, capsys):
    f = sweep_file(tmp_path, orderings=["no_cache", "original", "ggr"])
    assert cli_main(["sweep", str(f), "--dry-run"]) == 0
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.strip().startswith("[")]
    assert len(lines) == 3 and all("[   todo]" in ln for ln in lines)
    assert "movies__no_cache__tiny-llama__default" in out
    assert not (tmp_path / "out").exists()


# -- a real sweep ------------------------------------------------------------------------
@pytest.mark.vllm
def test_tiny_sweep_runs_resumes_and_records_failures(tmp_path, capsys):
    pytest.importorskip("vllm")
    f = sweep_file(tmp_path, datasets=["movies", "no-such-table"])
    spec = load_sweep(f)
    res = run_sweep(spec, progress=False)
    status = {r.point.point_id: r.status for r in res.points}
    assert status == {
        "movies__original__tiny-llama__default": "done",
        "movies__ggr__tiny-llama__default": "done",
        "no-such-table__original__tiny-llama__default": "failed",
        "no-such-table__ggr__tiny-llama__default": "failed",
    }
    out = spec.out
    for ordering in ("original", "ggr"):
        run_dir = out / f"movies__{ordering}__tiny-llama__default"
        meta = json.loads((run_dir / "run.json").read_text())
        assert meta["method"] == ordering and meta["dataset"] == "movies" and meta["rows"] == 6
        assert meta["sampling"]["max_tokens"] == 2
        executed = nbformat.read(run_dir / "02_inference.ipynb", as_version=4)
        injected = [
            c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])
        ]
        assert injected and f'orderings = ["{ordering}"]' in injected[0].source
    for r in res.failed:
        assert "unknown dataset 'no-such-table'" in r.error
        fdir = out / "_failed" / r.point.point_id
        assert "unknown dataset 'no-such-table'" in (fdir / "error.txt").read_text()
        assert (fdir / "02_inference.ipynb").is_file()
        assert not r.run_dir.exists()
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4
    assert dict(zip(summary["point_id"], summary["status"])) == status
    done = summary[summary["status"] == "done"].set_index("ordering")
    assert done.loc["ggr", "prefix_hits"] > 0
    assert done.loc["ggr", "speedup_vs_original"] == pytest.approx(
        done.loc["original", "job_s"] / done.loc["ggr", "job_s"]
    )
    assert {p.suffix for files in res.figures.values() for p in files} == {".png", ".svg"}

    # resume: done points are skipped (their folders untouched), failed ones are retried
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("movies__*/run.json")}
    assert cli_main(["sweep", str(f), "--no-progress"]) == 1  # failures -> exit status 1
    printed = capsys.readouterr().out
    assert "0 done, 2 skipped, 2 failed" in printed
    assert {p: p.stat().st_mtime_ns for p in out.glob("movies__*/run.json")} == stamps
    assert len(list(out.glob("movies__*/02_inference*.ipynb"))) == 2
    assert sorted(p.name for p in (out / "_failed").iterdir()) == [
        "no-such-table__ggr__tiny-llama__default",
        "no-such-table__ggr__tiny-llama__default-2",
        "no-such-table__original__tiny-llama__default",
        "no-such-table__original__tiny-llama__default-2",
    ]
    assert len(list((out / "sweep-log").glob("*.json"))) == 2
    assert (out / "figures" / "sweep_job_time-2.png").is_file()  # figures never overwritten

    # the dry run now marks the done points
    assert cli_main(["sweep", str(f), "--dry-run"]) == 0
    listing = capsys.readouterr().out
    assert listing.count("[skipped]") == 2 and listing.count("[   todo]") == 2
