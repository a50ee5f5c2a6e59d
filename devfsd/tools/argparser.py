"""argparse for devfsd's commands that use it (the daemon, ``devfsd
new-module``, ``devfsd-regress``), with its complaint made one line.

Apart from ``devfsd.tools``, whose tools use getopt and should not pay
argparse's import for a parser they do not use.
"""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, final

from devfsd.tools import errline

__all__ = ["ArgumentParser"]


@final
class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, whose complaint (``prog: error: message``, usually
    quoting the argument it refuses: ``argument --control-group: a\\nb:
    invalid group name``) is one line, escaped (``errline``)."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, errline(self.prog, "error", message))
