"""What the notebooks in ``notebooks/`` share: the small sample corpus they ingest.

``ingest.ipynb`` builds it and ``explore.ipynb`` builds it too when it finds no database, so
each notebook runs on its own. Nothing here imports Ray, torch or LanceDB.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mrag.pipelines.demo import SAMPLE_DOCUMENTS, make_sample_corpus

if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["SAMPLE_DOCUMENTS", "make_notebook_corpus"]


def make_notebook_corpus(folder: Path) -> list[Path]:
    """Writes :func:`~mrag.pipelines.demo.make_sample_corpus` (images, the
    :data:`SAMPLE_DOCUMENTS` and ``broken.jpg``) into ``folder``; returns every file in it,
    sorted by name. A second call rewrites nothing, so the ingest finds nothing new."""
    make_sample_corpus(folder)
    return sorted(p for p in folder.iterdir() if p.is_file())
