"""Which run folders a report is about: named ones, or the newest comparison.

Notebook 03 and ``ggr-kv report`` take run folders, comparison folders or globs; with
none, the newest comparison under ``results/``. `comparison_runs` also runs notebook
02's small default comparison first when nothing exists yet (a fresh clone opening
notebook 03 first).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["SMALL_COMPARISON", "comparison_runs"]

#: the small comparison run when there are no run folders yet (tiny CPU model, 12 rows)
SMALL_COMPARISON = {"dataset": "movies", "rows": 12, "orderings": ("no_cache", "original", "ggr"),
                    "max_num_seqs": 4, "max_tokens": 4}


def comparison_runs(runs_path: str = "", out_dir: str | Path = "results", *,
                    run_if_missing: bool = False) -> list[Path]:
    """Run folders named by ``runs_path`` (comma-separated folders or globs), else those of
    the newest comparison under ``out_dir`` (relative: to the project folder).

    Parameters
    ----------
    run_if_missing : when ``out_dir`` holds no comparison, run `SMALL_COMPARISON` into
        ``out_dir/movies-tiny-llama-auto`` first (starts vLLM; call
        ``ggr_kv.engine.env.setup_vllm_env`` before).

    Raises
    ------
    FileNotFoundError : nothing found (and ``run_if_missing`` is False).
    """
    from ggr_kv.core.paths import project_path
    from ggr_kv.run.runs import find_run_dirs, latest_comparison

    paths = [p.strip() for p in runs_path.split(",") if p.strip()]
    if paths:
        return find_run_dirs(paths)
    newest = latest_comparison(out_dir)
    if newest is None and run_if_missing:
        from ggr_kv.datasets import load_dataset
        from ggr_kv.engine.config import EngineConfig
        from ggr_kv.run import run_orderings

        c = SMALL_COMPARISON
        print(f"no run folders under {project_path(out_dir)}: running a small comparison first")
        small = load_dataset(c["dataset"], n=c["rows"], sample="head")
        run_orderings(small, methods=list(c["orderings"]), query=small.query("filter"),
                      engine=EngineConfig(max_num_seqs=c["max_num_seqs"]),
                      sampling={"max_tokens": c["max_tokens"]},
                      out_dir=project_path(out_dir) / "movies-tiny-llama-auto")
        newest = latest_comparison(out_dir)
    if newest is None:
        raise FileNotFoundError(
            f"no run folders under {project_path(out_dir)}; run 02_inference or ggr-kv demo first"
        )
    return find_run_dirs([newest])
