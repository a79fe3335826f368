"""Layer 3, orderings and how good they are: `reorder` (the methods), GGR, the exact
optimum, FD units, and the metrics that score a plan (PHC, character, token, block)."""

from ggr_kv.reorder.methods import METHODS, OPHRTooLarge, ReorderResult, reorder

__all__ = ["METHODS", "OPHRTooLarge", "ReorderResult", "reorder"]
