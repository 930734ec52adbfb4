"""Ingest metrics through ``ray.util.metrics``: on Ray's Prometheus endpoint of every node
(names prefixed ``ray_``), beside Ray Data's and Serve's own.

- ``mrag_ingest_objects_total{status}``: objects finished (ok, partial, failed);
- ``mrag_ingest_bytes_total``: bytes of the objects decode tasks read;
- ``mrag_ingest_chunks_total``: chunk rows committed;
- ``mrag_ingest_errors_total{error_class,stage}``: error rows by class;
- ``mrag_ingest_stage_seconds{stage}``: seconds per call of decode, embed and write;
- ``mrag_ingest_commit_seconds{table}`` and ``mrag_ingest_commit_rows{table}``: per commit.

Metrics are made lazily once per process (a Ray worker or the driver).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.util.metrics import Counter, Histogram

    from mrag.store.commit import Commit

_SECONDS = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300]
_ROWS = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000]


@functools.cache
def _counter(name: str, description: str, tags: tuple[str, ...] = ()) -> Counter:
    from ray.util.metrics import Counter

    return Counter(name, description=description, tag_keys=tags)


@functools.cache
def _histogram(
    name: str, description: str, boundaries: tuple[float, ...], tags: tuple[str, ...]
) -> Histogram:
    from ray.util.metrics import Histogram

    return Histogram(name, description=description, boundaries=list(boundaries), tag_keys=tags)


def stage_call(stage: str, seconds: float) -> None:
    _histogram(
        "mrag_ingest_stage_seconds", "seconds per call of an ingest stage", tuple(_SECONDS),
        ("stage",),
    ).observe(seconds, tags={"stage": stage})  # fmt: skip


def decoded(rows: Any, object_bytes: int) -> None:
    """A decode call's output (Arrow tables' rows): error rows by class, bytes read."""
    if object_bytes > 0:  # Ray's counters refuse 0
        _counter("mrag_ingest_bytes_total", "bytes of source objects read").inc(object_bytes)
    errors = _counter(
        "mrag_ingest_errors_total", "error rows by class and stage", ("error_class", "stage")
    )
    for error_class, stage in rows:
        errors.inc(1, tags={"error_class": error_class, "stage": stage})


def committed(commits: list[Commit], finished: dict[str, int]) -> None:
    """The driver's commits since the last call, and objects finished by status."""
    from mrag.store import schema

    seconds = _histogram(
        "mrag_ingest_commit_seconds", "seconds per commit", tuple(_SECONDS), ("table",)
    )
    rows = _histogram("mrag_ingest_commit_rows", "rows per commit", tuple(_ROWS), ("table",))
    chunks = _counter("mrag_ingest_chunks_total", "chunk rows committed")
    for commit in commits:
        seconds.observe(commit.seconds, tags={"table": commit.table})
        rows.observe(commit.rows, tags={"table": commit.table})
        if commit.table == schema.CHUNKS and commit.rows:
            chunks.inc(commit.rows)
    objects = _counter("mrag_ingest_objects_total", "objects finished", ("status",))
    for status, count in finished.items():
        if count:
            objects.inc(count, tags={"status": status})
