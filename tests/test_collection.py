"""Which test files `-m` lets pytest skip without importing them (`conftest.pytest_ignore_collect`):
never one that holds a selected test, so `make test-fast` and the timing pass run every
test they select while importing only the files that can hold one."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import pytest_ignore_collect

MODULE_VLLM = '''import pytest
pytestmark = [pytest.mark.vllm, pytest.mark.slow]
def test_a(): pass
'''
ONE_TIMING = '''import pytest
def test_a(): pass
@pytest.mark.timing
def test_b(): pass
'''
PARAM_SUBPROCESS = '''import pytest
@pytest.mark.parametrize("x", [1, pytest.param(2, marks=pytest.mark.subprocess)])
def test_a(x): pass
'''
UNMARKED = "def test_a(): pass\n"


class _Config:  # pytest passes its Config; the hook reads only this
    """What the hook reads of pytest's config: the ``-m`` expression."""

    def __init__(self, expr: str) -> None:
        self.expr = expr

    def getoption(self, name: str, default=None):
        assert name == "markexpr"
        return self.expr


@pytest.mark.parametrize(
    "source, expr, skipped",
    [
        (MODULE_VLLM, "not vllm and not slow and not subprocess", True),
        (MODULE_VLLM, "vllm", False),
        (MODULE_VLLM, "timing", True),
        (ONE_TIMING, "timing", False),
        (ONE_TIMING, "not timing", False),
        (UNMARKED, "timing", True),
        (UNMARKED, "not timing", False),
        (PARAM_SUBPROCESS, "subprocess", False),
        (PARAM_SUBPROCESS, "not vllm and not slow and not subprocess", False),
        (MODULE_VLLM, "", False),
    ],
)
def test_a_file_is_skipped_only_when_none_of_its_tests_can_match(tmp_path: Path, source, expr,
                                                                 skipped):
    f = tmp_path / "test_x.py"
    f.write_text(source)
    # True: skipped unimported; None: pytest collects it and applies -m per test
    assert (pytest_ignore_collect(f, _Config(expr)) is True) is skipped
