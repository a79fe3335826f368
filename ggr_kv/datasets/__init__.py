"""Layer 1, what to run: bundled and real tables (`catalog`), the paper's query templates
(`queries`), the seeded generators (`gen`) of the shipped tables (`generate`) and of tables
at any size (`families`, named by `names`, cached by `cache`), and the statistics that
compare them with the paper's samples (`stats`, `readme`)."""

from ggr_kv.datasets.cache import cache_dir
from ggr_kv.datasets.catalog import (
    DATASETS,
    LABEL_COLUMNS,
    LAYOUTS,
    SAMPLE_MODES,
    Dataset,
    DatasetError,
    DatasetSpec,
    Layout,
    data_dirs,
    dataset_path,
    list_datasets,
    load_dataset,
    recognize,
)
from ggr_kv.datasets.families import FAMILIES

__all__ = [
    "DATASETS",
    "FAMILIES",
    "LABEL_COLUMNS",
    "LAYOUTS",
    "SAMPLE_MODES",
    "Dataset",
    "DatasetError",
    "DatasetSpec",
    "Layout",
    "cache_dir",
    "data_dirs",
    "dataset_path",
    "list_datasets",
    "load_dataset",
    "recognize",
]
