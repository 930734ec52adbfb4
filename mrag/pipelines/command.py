"""Running a job's command the same way from every entry point (``mrag``, ``python -m …``).

Errors a user can act on (:class:`~mrag.errors.MragError`) become one line on stderr and exit
status 2; anything else is a bug in mrag and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING

from mrag.errors import MragError

if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable


def run_command(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.INFO if getattr(args, "verbose", False) else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )
    from mrag.ray_runtime import harmless_stderr_dropped

    try:
        with harmless_stderr_dropped():
            return command(args)
    except MragError as exc:
        name = getattr(args, "command", None) or getattr(command, "__module__", "mrag")
        print(f"mrag {name}: error: {exc}", file=sys.stderr)
        return 2
