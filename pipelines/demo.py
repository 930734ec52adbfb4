"""Launcher for `ray job submit --working-dir . -- python -m pipelines.demo ...` (and local runs).

The job itself is :mod:`mrag.pipelines.demo`; ``mrag demo`` runs the same code.
"""

import sys

from mrag.pipelines.demo import main

if __name__ == "__main__":
    sys.exit(main())
