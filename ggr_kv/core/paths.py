"""Where things are: the installed package, the checkout around it, and relative paths
resolved against the project folder (so notebooks write where the CLI does)."""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["CHECKOUT_DIR", "PACKAGE_DIR", "cache_root", "project_path", "slug"]

#: characters a file name part may keep (others become the separator)
_UNSAFE = re.compile(r"[^A-Za-z0-9._+=-]+")

#: the ``ggr_kv`` package folder
PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: the folder holding the package: the project checkout for an editable install
CHECKOUT_DIR = PACKAGE_DIR.parent


def cache_root() -> Path:
    """The folder of ggr-kv's caches (generated tables, built tokenizers): ``.cache`` in
    the project checkout (gitignored), else ``$XDG_CACHE_HOME/ggr-kv``
    (``~/.cache/ggr-kv``). Not created here."""
    if (CHECKOUT_DIR / "pyproject.toml").is_file():
        return CHECKOUT_DIR / ".cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ggr-kv"


def project_path(path: str | Path, start: str | Path | None = None) -> Path:
    """Resolve a relative path against the ggr-kv project folder, when there is one.

    Notebooks run with their own folder as the working directory (nbval, Jupyter);
    resolving ``results`` against the project root makes them write where the CLI does.
    Outside a checkout (no ``pyproject.toml`` naming ggr-kv above ``start``) the path
    is resolved against ``start`` (default: the working directory).
    """
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        pp = folder / "pyproject.toml"
        if pp.is_file() and 'name = "ggr-kv"' in pp.read_text(encoding="utf-8", errors="ignore"):
            return folder / p
    return here / p


def slug(text: str, sep: str = "_", empty: str = "run") -> str:
    """``text`` as a safe file-name part: runs of characters other than letters, digits
    and ``._+=-`` become ``sep``; ``sep`` and dots are stripped from both ends; ``empty``
    if nothing is left (``slug("movies@300, seed=1")`` is ``movies_300_seed=1``)."""
    return _UNSAFE.sub(sep, str(text)).strip(sep + ".") or empty
