"""Where output is shown: a Jupyter kernel (widgets, figures updated in place) or not."""

from __future__ import annotations

__all__ = ["in_notebook"]


def in_notebook() -> bool:
    """Whether this process is a Jupyter kernel (JupyterLab, papermill, nbval)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
