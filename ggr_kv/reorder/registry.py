"""The one list of orderings: name, what it optimizes, its knobs, the run facts it takes,
its plot color and its function. Every other place (``reorder``, the runner's context,
the CLI's choices, figure colors, the report's objectives, run tables) reads it.

Adding an ordering = a module with its function + one `register` call (the built-ins are
registered at the end of this module)::

    from ggr_kv.reorder.registry import Ordering, register
    register(Ordering("mine", "what it maximizes, in one line", "#123456", my_order,
                      knobs=("depth",)))

An ordering's function takes ``(table, units, knobs)`` (a `Table`, its FD `Units`, the
knobs given, already checked against ``knobs``) and returns ``(result, info)``: a
`ReorderPlan`, or a per-row unit order (int array, rows x units) that `reorder` turns
into a plan (FD groups expanded, rows sorted lexicographically); ``info`` is a dict
for ``ReorderResult.info`` (``knobs`` used, groups found, ...).

``no_cache`` is registered too (no function): the input order on an engine with prefix
caching off, the baseline every comparison can include.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ggr_kv.core.plan import ReorderPlan
from ggr_kv.core.table import Table
from ggr_kv.reorder import builtin
from ggr_kv.reorder.blockmethod import BLOCKS_KNOBS, blocks_config
from ggr_kv.reorder.ggr import KNOBS as GGR_KNOBS
from ggr_kv.reorder.units import Units

__all__ = [
    "CONTEXT_KNOBS",
    "NO_CACHE",
    "ORIGINAL",
    "Ordering",
    "color_of",
    "get_ordering",
    "method_names",
    "objective_of",
    "ordering_names",
    "orderings",
    "register",
    "unregister",
]

#: facts of the run an ordering may take as knobs (the runner supplies them)
CONTEXT_KNOBS: tuple[str, ...] = ("tokenizer", "block_size", "query", "instruction")
#: the input order: the baseline of speedups
ORIGINAL = "original"
#: the input order with prefix caching off: the baseline without reuse
NO_CACHE = "no_cache"

OrderFn = Callable[[Table, Units, dict[str, Any]], tuple["ReorderPlan | np.ndarray", dict]]


@dataclass(frozen=True)
class Ordering:
    """One ordering.

    Attributes
    ----------
    name : what users type (``--method``, ``reorder(t, name)``, run folders).
    optimizes : what it maximizes, one line (reports, ``ggr-kv reorder``'s output).
    color : its color in every figure (hex).
    order : its function (see the module docstring); None for ``no_cache`` (a run
        setting, not a plan).
    knobs : knob names its function accepts (``reorder``'s ``**knobs``).
    context : the run facts (`CONTEXT_KNOBS`) it takes; the runner and the CLI pass
        the engine's tokenizer, block size, query and instruction.
    check : validates the knobs before the table loads (raises on a bad value).
    uses_fds : FD groups shape its plan (False: ``fds`` are only checked for names).
    prefix_caching : runs of it keep prefix caching on (False for ``no_cache``).
    default : part of default comparisons (False for orderings too slow for ordinary
        tables, e.g. the exact ``ophr``).
    """

    name: str
    optimizes: str
    color: str
    order: OrderFn | None = None
    knobs: tuple[str, ...] = ()
    context: tuple[str, ...] = ()
    check: Callable[..., object] | None = None
    uses_fds: bool = True
    prefix_caching: bool = True
    default: bool = True


_ORDERINGS: dict[str, Ordering] = {}


def register(ordering: Ordering) -> Ordering:
    """Add ``ordering``; returns it as registered (its ``context`` facts among its knobs).

    Raises
    ------
    ValueError
        a name or color already registered, or a context fact outside `CONTEXT_KNOBS`.
    """
    o = ordering
    if o.name in _ORDERINGS:
        raise ValueError(f"ordering {o.name!r} is already registered")
    taken = {x.color.lower(): x.name for x in _ORDERINGS.values()}
    if o.color.lower() in taken:
        raise ValueError(f"color {o.color} of {o.name!r} is {taken[o.color.lower()]!r}'s")
    bad = [k for k in o.context if k not in CONTEXT_KNOBS]
    if bad:
        raise ValueError(f"context {bad} of {o.name!r}: run facts are {list(CONTEXT_KNOBS)}")
    o = replace(o, knobs=tuple(dict.fromkeys((*o.knobs, *o.context))))  # facts are knobs
    _ORDERINGS[o.name] = o
    return o


def unregister(name: str) -> None:
    """Remove an ordering (tests); unknown names are ignored."""
    _ORDERINGS.pop(name, None)


def orderings() -> tuple[Ordering, ...]:
    """Every registered ordering, in registration (display) order."""
    return tuple(_ORDERINGS.values())


def get_ordering(name: str) -> Ordering | None:
    """The registered ordering ``name``, or None."""
    return _ORDERINGS.get(name)


def ordering_names() -> tuple[str, ...]:
    """Names of every ordering a run can use (``no_cache`` included), display order."""
    return tuple(_ORDERINGS)


def method_names(*, default_only: bool = False) -> tuple[str, ...]:
    """Names ``reorder`` accepts (orderings with a function); ``default_only``: those
    in default comparisons."""
    return tuple(o.name for o in _ORDERINGS.values()
                 if o.order is not None and (o.default or not default_only))


def color_of(name: str) -> str | None:
    """The registered color of ``name`` (None for a label that is not an ordering)."""
    o = _ORDERINGS.get(name)
    return o.color if o is not None else None


def objective_of(name: str) -> str:
    """What ``name`` optimizes; ``<m>+no_cache`` (caching off) says so."""
    o = _ORDERINGS.get(name)
    if o is not None:
        return o.optimizes
    if name.endswith(f"+{NO_CACHE}"):
        return f"{objective_of(name.removesuffix('+' + NO_CACHE))}; prefix caching off"
    return "unknown (not a ggr_kv method)"


# Colors: Okabe-Ito (color-blind safe). vLLM caches whole KV blocks of exact token
# prefixes: only ``blocks`` optimizes that directly; PHC (the GGR paper's Eq. 1,
# characters squared) is a proxy.
register(Ordering(NO_CACHE, "none (prefix caching off: the baseline without reuse)",
                  "#7f7f7f", prefix_caching=False))
register(Ordering(ORIGINAL, "none (the input order)", "#0072b2", builtin.original,
                  uses_fds=False))
register(Ordering("sorted", "shared leading cells: one field order from column statistics, "
                  "rows sorted", "#e69f00", builtin.sorted_order))
register(Ordering("ggr", "PHC (characters² of shared leading cells, paper Eq. 1), greedy",
                  "#009e73", builtin.ggr, knobs=("preset", "pick", "progress", *GGR_KNOBS)))
register(Ordering("ophr", "PHC, exact optimum (small tables only)", "#cc79a7", builtin.ophr,
                  knobs=("max_cells", "max_rows"), default=False))
register(Ordering("blocks", "prompt tokens served from vLLM's prefix cache (whole KV blocks, "
                  "real tokenizer)", "#d55e00", builtin.blocks, knobs=BLOCKS_KNOBS,
                  context=CONTEXT_KNOBS, check=blocks_config))
register(Ordering("trie", "baseline: rows in the prompts' token-trie DFS order (BatchLLM / "
                  "SGLang style), fields as given", "#56b4e9", builtin.trie,
                  context=CONTEXT_KNOBS, default=False))
