"""Where a batch's engines live (``ggr_kv.run.executors``): checks that need no engine
and no Ray."""

from __future__ import annotations

import sys

import pytest

from ggr_kv.cli.commands.run import EXECUTOR_CHOICES, SPLIT_CHOICES
from ggr_kv.reorder.shard import SHARDINGS
from ggr_kv.run.executors import EXECUTORS, Executor, as_executor


def test_cli_choices_are_the_package_names():
    assert EXECUTOR_CHOICES == EXECUTORS
    assert SPLIT_CHOICES == SHARDINGS


def test_bad_executor_settings_fail_naming_the_value():
    with pytest.raises(ValueError, match="'dask'"):
        Executor("dask")
    with pytest.raises(ValueError, match="2 replicas"):
        Executor("local", 2)
    with pytest.raises(ValueError, match="'zigzag'"):
        Executor("ray", 2, "zigzag")
    with pytest.raises(ValueError, match="Ray address"):
        Executor("replicas", 2, address="auto")
    assert as_executor(None).local and as_executor("ray").kind == "ray"


def test_cli_refuses_replicas_without_a_sharded_executor(capsys):
    from ggr_kv.cli.main import main

    assert main(["run", "movies", "--rows", "5", "--replicas", "2"]) == 2
    assert "--executor" in capsys.readouterr().err


def test_local_path_needs_no_ray(monkeypatch):
    """The package and the local executor import without Ray; asking for Ray without it
    installed names the extra to install."""
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    from ggr_kv.run.rayexec import import_ray

    with pytest.raises(ImportError, match=r"\[ray\]"):
        import_ray()
    import ggr_kv.run.batch  # noqa: F401 - the local path
