"""The ``automtd`` command line (one private module per subcommand)."""

from automtd.cli.main import main

__all__ = ["main"]
