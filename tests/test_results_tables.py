"""The result tables in results/*/README.md are what `experiments/h200_scale.py` makes of
the committed run folders: nobody edited a number by hand, no run folder went missing."""

from __future__ import annotations

import importlib.util

import pytest

from ggr_kv.analysis.readme import read_block
from ggr_kv.core.paths import CHECKOUT_DIR

SCRIPT = CHECKOUT_DIR / "experiments" / "h200_scale.py"


@pytest.fixture(scope="module")
def scale():
    spec = importlib.util.spec_from_file_location("h200_scale", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_h200_tables_are_generated_from_the_run_folders(scale):
    readme = scale.H200 / "README.md"
    single = scale.singles(scale.SCALE)
    assert len(single) >= 39 and (single["rows"] >= 10_000).sum() >= 15  # 3 tables x 5
    assert read_block(readme, "scale-orderings") == scale.paper_scale_table(single) + "\n"
    repeats = scale.singles(scale.REPEATS)
    assert read_block(readme, "scale-repeats") == scale.repeats_table(repeats) + "\n"
    assert read_block(readme, "kv-sweep-scale") == scale.kv_sweep_table() + "\n"
    assert read_block(readme, "offload") == scale.offload_table() + "\n"


@pytest.mark.slow
def test_two_gpu_table_is_generated_from_the_sharded_runs(scale):
    rows = scale.two_gpu_rows()
    assert set(rows["way"]) == set(scale.WAYS)
    assert read_block(scale.X2 / "README.md", "two-gpus") == scale.two_gpu_table(rows) + "\n"
