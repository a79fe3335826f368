"""Layer 8, the ``ggr-kv`` command line (`main`, one module per subcommand in `commands`)."""

from ggr_kv.cli.main import main

__all__ = ["main"]
