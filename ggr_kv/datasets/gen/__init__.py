"""Generators of the bundled tables (one module per table); see `ggr_kv.datasets.generate`."""
