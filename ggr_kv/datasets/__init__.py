"""Layer 1, what to run: bundled and real tables (`catalog`), the paper's query templates
(`queries`) and the seeded generators of the bundled tables (`gen`, `generate`)."""

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

__all__ = [
    "DATASETS",
    "LABEL_COLUMNS",
    "LAYOUTS",
    "SAMPLE_MODES",
    "Dataset",
    "DatasetError",
    "DatasetSpec",
    "Layout",
    "data_dirs",
    "dataset_path",
    "list_datasets",
    "load_dataset",
    "recognize",
]
