"""The write stage in one process: fragment writer and committer together (tests, notebooks,
benchmarks of the write path). A job splits them: writers on the workers, the committer on the
driver (:mod:`mrag.store.fragments`, :mod:`mrag.store.commit`)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from mrag.store.commit import Commit, Committer
from mrag.store.fragments import FragmentWriter, WriteTargets
from mrag.store.lance import Store

if TYPE_CHECKING:
    import pyarrow as pa

    from mrag.store import schema

__all__ = ["Commit", "LanceWriteStage"]


class LanceWriteStage:
    """Writes embedded chunk rows and commits them at once, call by call, exactly once.

    Safe to call from several threads: fragment files are written concurrently, commits one at
    a time. Rows it has already (a retried task sends them again) are dropped. The rows of the
    objects it writes must not be in the tables yet, unless their rows say ``stale``.

    Args:
        db_uri: the database (tables made by ``Store.ensure_tables``).
        provenance: the models and weights the job checked the database against.
        run_id: recorded in every commit's transaction properties (``mrag.run``).
    """

    def __init__(
        self,
        db_uri: str,
        provenance: schema.ChunkProvenance | None = None,
        *,
        run_id: str | None = None,
    ) -> None:
        self.store = Store(db_uri)
        self.writer = FragmentWriter(WriteTargets.for_store(self.store), provenance)
        self.committer = Committer(db_uri, run_id=run_id)
        self._lock = threading.Lock()

    @property
    def commits(self) -> list[Commit]:
        return self.committer.commits

    @property
    def finished(self) -> dict[str, str]:
        return dict(self.committer.finished)

    @property
    def incomplete(self) -> list[str]:
        return self.committer.incomplete

    def __call__(self, rows: pa.Table) -> None:
        receipt = self.writer(_with_defaults(rows))
        with self._lock:
            self.committer.add(receipt)
            self.committer.commit()


def _with_defaults(rows: pa.Table) -> pa.Table:
    """Rows without a ``stale`` column are not stale; every row needs its ``ordinal`` (its
    place in its object), which is how the committer counts and de-duplicates rows."""
    import pyarrow as pa

    if "stale" not in rows.column_names:
        rows = rows.append_column("stale", pa.array([False] * rows.num_rows))
    if "ordinal" not in rows.column_names:
        raise ValueError("rows need an ordinal column (their place in their object)")
    return rows
