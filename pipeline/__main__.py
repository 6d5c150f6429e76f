"""``python -m connect_bulk.pipeline``: the same as the ``connect-bulk`` command."""

import sys

if __package__ != "connect_bulk.pipeline":
    # Run from a checkout as the top-level `pipeline` package, every module would load a
    # second time under another name, and its classes would not be the installed ones.
    sys.exit("connect-bulk: run it as `connect-bulk` or `python -m connect_bulk.pipeline`")

from .cli import main

main()
