"""Launcher for `ray job submit --working-dir . -- python -m pipelines.index ...` (and local runs).

The job itself is :mod:`mrag.pipelines.index`; ``mrag index`` runs the same code.
"""

import sys

from mrag.pipelines.index import main

if __name__ == "__main__":
    sys.exit(main())
