"""The one JSON converter: strict JSON (no NaN) from numpy, pandas and path values."""

from __future__ import annotations

import datetime as _dt
import json
import math
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["dumps", "to_jsonable"]


def to_jsonable(x: Any) -> Any:
    """``x`` made strict-JSON-ready: numpy scalars/arrays, tuples, sets, paths, timestamps;
    NaN/inf -> None; dict keys become strings."""
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple, set, frozenset)):
        items = sorted(x, key=str) if isinstance(x, (set, frozenset)) else x
        return [to_jsonable(v) for v in items]
    if isinstance(x, np.ndarray):
        return to_jsonable(x.tolist())
    if isinstance(x, np.generic):
        return to_jsonable(x.item())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, (str, int, bool)):
        return x
    if isinstance(x, (pd.Timestamp, _dt.datetime, _dt.date)):
        return x.isoformat()
    if x is pd.NA or x is pd.NaT:
        return None
    return str(x)


def dumps(x: Any, **kwargs: Any) -> str:
    """``json.dumps(to_jsonable(x))``: always valid JSON (``allow_nan=False``)."""
    return json.dumps(to_jsonable(x), allow_nan=False, ensure_ascii=False, **kwargs)
