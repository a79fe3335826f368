"""ggr-kv: order table rows and fields for vLLM's prefix cache, run them, measure the caches.

Importing this package never imports vLLM; only the inference runner and the collector
do, when used.
"""

from __future__ import annotations

__version__ = "0.1.0"

from ggr_kv.core.plan import PlanError, ReorderPlan
from ggr_kv.core.table import Table, TableError, load_table

__all__ = ["PlanError", "ReorderPlan", "Table", "TableError", "__version__", "load_table"]
