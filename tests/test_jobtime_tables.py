"""The tables of results/h200/jobtime/README.md are what `experiments/jobtime_table.py`
makes of the committed calibrations, predictions and run folders (issue 22)."""

from __future__ import annotations

import importlib.util
import re

import pytest

from ggr_kv.analysis.readme import read_block
from ggr_kv.core.paths import CHECKOUT_DIR

SCRIPT = CHECKOUT_DIR / "experiments" / "jobtime_table.py"
FOLDER = CHECKOUT_DIR / "results" / "h200" / "jobtime"


@pytest.fixture(scope="module")
def tables():
    spec = importlib.util.spec_from_file_location("jobtime_table", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.render(FOLDER)


def test_jobtime_tables_are_generated_from_the_run_folders(tables):
    assert len(tables) == 5
    for name, body in tables.items():
        assert read_block(FOLDER / "README.md", name) == body + "\n", name


def test_every_campaign_run_was_predicted_before_it_ran(tables):
    # 7 tables x 4 orderings, two engine starts: 56 runs, each with a pre-run prediction
    assert re.search(r"pre-run \d+ of 56 ", tables["jobtime-accuracy"])
    assert tables["jobtime-accuracy"].count("(n=2)") == 28
