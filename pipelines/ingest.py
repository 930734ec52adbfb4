"""Launcher for `ray job submit --working-dir . -- python -m pipelines.ingest ...` (and local runs).

The job itself is :mod:`mrag.pipelines.ingest`; ``mrag ingest`` runs the same code.
"""

import sys

from mrag.pipelines.ingest import main

if __name__ == "__main__":
    sys.exit(main())
