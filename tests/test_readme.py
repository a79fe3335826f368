"""README.md stays true: every ``ggr-kv`` line of its bash blocks is parsed by the CLI's
own parser, the fast commands (no engine) run for real on the bundled data, and every
Python block runs, so a renamed option, subcommand or import path fails the suite.

Engine-starting commands (run, sweep, demo, report, make-model) are parsed, and their
table, method and files checked, but not run. Python blocks run as a module not named
``__main__``: the part under an ``if __name__ == "__main__":`` guard (what starts vLLM) is
compiled, not run; everything above it, imports included, runs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from ggr_kv.cli.main import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: subcommands that need no engine and take about a second on bundled tables: run for real
FAST = ("datasets", "reorder", "score", "prompts", "simulate")
#: shell syntax the README's ggr-kv lines must not use (the test runs them without a shell)
SHELL_OPS = ("|", "||", "&&", ";", ">", ">>", "<", "2>", "&")
#: folders of the checkout the README's relative paths name
LINKED = ("data", "sweeps", "notebooks")

_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks(lang: str) -> list[tuple[int, str]]:
    """(first line number, body) of every fenced block of ``lang`` in README.md."""
    text = README.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(2)) + 1, m.group(2))
            for m in _FENCE.finditer(text) if m.group(1) == lang]


def _commands() -> list[tuple[str, list[str]]]:
    """(``README.md:LINE``, argv after ``ggr-kv``) of every ggr-kv line of a bash block,
    in README order; backslash continuations joined, ``#`` comments dropped."""
    out = []
    for start, body in _blocks("bash"):
        lines, joined, first = body.splitlines(), "", None
        for i, line in enumerate(lines):
            first = start + i if not joined else first
            joined += line.rstrip()
            if joined.endswith("\\"):
                joined = joined[:-1] + " "
                continue
            if joined.lstrip().startswith("ggr-kv "):
                out.append((f"README.md:{first}", shlex.split(joined, comments=True)[1:]))
            joined = ""
    return out


COMMANDS = _commands()
PY_BLOCKS = [(f"README.md:{n}", body) for n, body in _blocks("python")]


@pytest.fixture
def workspace(tmp_path, tmp_path_factory, monkeypatch):
    """An empty folder that sees the checkout's data/, sweeps/, notebooks/ (the README's
    commands run from the root) and a session-wide cache of generated tables."""
    for name in LINKED:
        (tmp_path / name).symlink_to(ROOT / name, target_is_directory=True)
    cache = tmp_path_factory.getbasetemp() / "readme-data-cache"
    monkeypatch.setenv("GGR_KV_DATA_CACHE", str(cache))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _parse(argv: list[str]) -> argparse.Namespace:
    """The CLI's parse of ``argv``; a usage error fails the test with argparse's message."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return build_parser(argv).parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"ggr-kv {shlex.join(argv)}: exit {e.code}: {err.getvalue().strip()}")


def _check_table(spec: str) -> None:
    """A TABLE_OR_DATASET argument names an existing file or a valid dataset name, checked
    without generating the table."""
    from ggr_kv.datasets import DATASETS
    from ggr_kv.datasets.names import parse_name

    if Path(spec).exists() or spec.lower() in DATASETS:
        return
    assert parse_name(spec, tuple(DATASETS)) is not None, f"{spec!r}: no such file or dataset"


def test_readme_covers_the_commands_and_python():
    """The extraction finds what the README shows (an empty list would pass everything)."""
    subs = {argv[0] for _, argv in COMMANDS if argv}
    assert set(FAST) | {"run", "report", "sweep"} <= subs, sorted(subs)
    assert len(PY_BLOCKS) >= 3
    for where, argv in COMMANDS:
        ops = [a for a in argv if a in SHELL_OPS]
        assert not ops, f"{where}: shell syntax {ops} in a ggr-kv line (this test runs no shell)"


@pytest.mark.parametrize("argv", [c[1] for c in COMMANDS], ids=[c[0] for c in COMMANDS])
def test_command_parses(argv, workspace):
    """Every ggr-kv line names a real subcommand and options the CLI accepts; the
    engine-starting ones also name a real table, method and files."""
    args = _parse(argv)
    if args.command == "run":
        from ggr_kv.reorder import METHODS

        _check_table(args.table)
        assert args.method is None or args.method in (*METHODS, "no_cache"), args.method
        assert args.plan is None or args.plan.endswith(".json")
        if args.query_type is not None:
            from ggr_kv.datasets.queries import QUERY_TYPES

            assert args.query_type in QUERY_TYPES, args.query_type
    elif args.command == "compare":
        _check_table(args.table)
    elif args.command == "sweep":
        missing = [f for f in args.sweep if not Path(f).is_file()]
        assert not missing, f"sweep files not found: {missing}"


@pytest.mark.slow
def test_fast_commands_run(workspace, capsys):
    """The engine-free lines run, in README order, in one folder (a later line reads the
    plan an earlier one wrote), each exiting 0 and writing its --out file (or printing)."""
    ran = []
    for where, argv in COMMANDS:
        if argv[0] not in FAST:
            continue
        code = main(list(argv))
        out = capsys.readouterr()
        assert code == 0, f"{where}: ggr-kv {shlex.join(argv)} -> exit {code}: {out.err.strip()}"
        if "--out" in argv:
            target = workspace / argv[argv.index("--out") + 1]
            assert target.is_file() and target.stat().st_size > 0, f"{where}: no {target.name}"
        else:
            assert out.out.strip(), f"{where}: printed nothing"
        ran.append(argv[0])
    assert set(ran) == set(FAST), ran


@pytest.mark.parametrize(("where", "code"), PY_BLOCKS, ids=[b[0] for b in PY_BLOCKS])
def test_python_block_runs(where, code, workspace, capsys):
    """A Python block runs as written (its engine part, under the ``__main__`` guard, is
    compiled only)."""
    exec(compile(code, where, "exec"), {"__name__": "readme_example"})  # noqa: S102
    if "__main__" not in code:
        assert capsys.readouterr().out.strip(), f"{where}: printed nothing"
