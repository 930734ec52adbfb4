"""Fetching the stored full-precision vectors of hits by ``chunk_id``.

:class:`~mrag.hits.Hit` carries no vectors (a thumbnail-sized payload per hit is
enough for display); the CLIP reranker and the refiner's near-duplicate check fetch the ones they
need for a pool in one query. A source is a LanceDB table, a mapping, or any callable
``(chunk_ids) -> {chunk_id: vector}`` (a cache, another store).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mrag.errors import ConfigError

if TYPE_CHECKING:
    import lancedb

#: ``(chunk_ids) -> {chunk_id: vector}``; ids without a (non-null) vector are left out.
VectorFetcher = Callable[[Sequence[str]], Mapping[str, np.ndarray]]
VectorSource = VectorFetcher | Mapping[str, np.ndarray] | Any  # Any: a LanceDB table

#: Ids per ``IN (...)`` predicate: a pool is at most a few hundred, this bounds the SQL text.
_IDS_PER_QUERY = 500


#: ``(chunk_ids) -> {chunk_id: JPEG bytes}``; ids without a thumbnail are left out.
ThumbnailFetcher = Callable[[Sequence[str]], Mapping[str, bytes]]


def lance_vector_fetcher(table: lancedb.table.Table, column: str = "clip") -> VectorFetcher:
    """Fetches ``column`` by ``chunk_id`` from a LanceDB ``chunks`` table (exact, stored values).

    One filtered scan per call (per 500 ids); with a scalar index on ``chunk_id`` it reads only
    the matching rows.
    """
    return lance_column_fetcher(table, column, lambda v: np.asarray(v, dtype=np.float32))


def lance_column_fetcher(
    table: lancedb.table.Table, column: str, convert: Callable[[Any], Any] = lambda v: v
) -> Callable[[Sequence[str]], dict[str, Any]]:
    """Fetches any ``column`` by ``chunk_id`` (``convert`` applied to each non-null value)."""
    from mrag.storage import sql_literal

    if column not in table.schema.names:
        raise ConfigError(f"table has no column {column!r}; columns: {table.schema.names}")

    def fetch(chunk_ids: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(chunk_ids))
        for start in range(0, len(unique), _IDS_PER_QUERY):
            ids = unique[start : start + _IDS_PER_QUERY]
            where = f"chunk_id IN ({', '.join(sql_literal(i) for i in ids)})"
            rows = (
                table.search().where(where).select(["chunk_id", column]).limit(len(ids)).to_arrow()
            )
            for chunk_id, vector in zip(
                rows["chunk_id"].to_pylist(), rows[column].to_pylist(), strict=True
            ):
                if vector is not None:
                    found[chunk_id] = convert(vector)
        return found

    return fetch


def as_vector_fetcher(source: VectorSource, column: str = "clip") -> VectorFetcher:
    """A fetcher from a callable (as is), a mapping, or a LanceDB table (``column`` of it)."""
    if isinstance(source, Mapping):
        return lambda chunk_ids: {i: source[i] for i in chunk_ids if source.get(i) is not None}
    if hasattr(source, "search") and hasattr(source, "schema"):
        return lance_vector_fetcher(source, column)
    if callable(source):
        return source
    raise ConfigError(
        f"vectors must be a LanceDB table, a mapping or a callable, got {type(source).__name__}"
    )


def as_thumbnail_fetcher(source: Any) -> ThumbnailFetcher:
    """A thumbnail fetcher from a callable, a mapping, or a LanceDB ``chunks`` table (its
    ``thumbnail`` column): for rerankers that look at the pixels of hits searched without
    ``include_thumbnail``."""
    if isinstance(source, Mapping):
        return lambda chunk_ids: {i: source[i] for i in chunk_ids if source.get(i)}
    if hasattr(source, "search") and hasattr(source, "schema"):
        return lance_column_fetcher(source, "thumbnail", bytes)
    if callable(source):
        return source
    raise ConfigError(
        f"thumbnails must be a LanceDB table, a mapping or a callable, got {type(source).__name__}"
    )


def unit_rows(vectors: Mapping[str, np.ndarray], ids: Sequence[str]) -> dict[str, np.ndarray]:
    """The ids' vectors scaled to unit length; zero or non-finite vectors are left out."""
    out = {}
    for chunk_id in ids:
        vector = vectors.get(chunk_id)
        if vector is None:
            continue
        vector = np.asarray(vector, dtype=np.float32).reshape(-1)
        norm = float(np.linalg.norm(vector))
        if norm > 0 and np.isfinite(norm):
            out[chunk_id] = vector / norm
    return out
