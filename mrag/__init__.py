"""mrag: multimodal retrieval-augmented generation over large corpora.

The notebook surface::

    import mrag
    config = mrag.load_config(profile="offline", overrides={"db_uri": "./mrag-db"})
    summary = mrag.ingest(["./photos"], config)
    hits = mrag.search("a red square", config, k=5)
    result = mrag.ask("what are Saturn's rings made of?", config)  # result.answer, .citations

Heavy libraries (torch, ray, lancedb) load only when one of these functions runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mrag.config import IngestConfig, MragConfig, ServeConfig, load_config
from mrag.errors import MragError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from mrag.generate import Answer
    from mrag.pipelines.ingest import IngestSummary
    from mrag.retrieve.search import Hit
    from mrag.store.lance import Store

__all__ = [
    "IngestConfig",
    "MragConfig",
    "MragError",
    "ServeConfig",
    "ask",
    "connect",
    "ingest",
    "load_config",
    "search",
]


def connect(db_uri: str) -> Store:
    """Opens a LanceDB database (folder or ``s3://…``) holding mrag tables."""
    from mrag.store.lance import Store

    return Store(db_uri)


def ingest(sources: Sequence[str], config: MragConfig) -> IngestSummary:
    """Runs the ingest job (local Ray unless ``config.ray_address`` is set).

    The job lives in :mod:`mrag.pipelines.ingest`, imported only when this runs (it brings Ray).
    """
    from mrag.pipelines.ingest import run_ingest

    return run_ingest(config, sources)


def search(
    query: str | None,
    config: MragConfig,
    *,
    image: bytes | None = None,
    k: int = 10,
    filters: dict | None = None,
    mode: str = "hybrid",
) -> list[Hit]:
    """Search by text or image bytes in-process (no Ray needed); ``mode``: vector, fts, hybrid."""
    from mrag.query import QueryEngine

    engine = QueryEngine.for_config(config)
    return engine.search(query, image=image, k=k, filters=filters, mode=mode)


def ask(
    question: str | None,
    config: MragConfig,
    *,
    image: bytes | None = None,
    k: int | None = None,
    filters: dict | None = None,
) -> Answer:
    """Answers from the corpus in process (search, refine, the ``generate`` section's
    generator): ``.answer`` with ``[n]`` markers, ``.citations``, ``.evidence``."""
    from mrag.answers import ask as ask_engine
    from mrag.query import QueryEngine

    engine = QueryEngine.for_config(config)
    return ask_engine(engine, question, image=image, k=k, filters=filters)
