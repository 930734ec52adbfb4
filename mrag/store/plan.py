"""Planning: which listed objects to (re)do, one listing shard at a time.

Done means an ``assets`` row with the listed fingerprint, and status ``ok`` (or any status
unless ``retry_failed``): the commit protocol writes that row only after every chunk and error
row of the object. The lookups go through the ``uri`` BTREE indices a batch at a time, so a
planning task costs what its shard costs, whatever the database's size, and no process holds
the whole listing or the whole ``assets`` table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mrag.store import schema

if TYPE_CHECKING:
    import pyarrow as pa

    from mrag.store.lance import Store

#: URIs per ``uri IN (...)`` lookup.
LOOKUP_BATCH = 1000


def plan_listing(store: Store, listing: pa.Table, retry_failed: bool) -> pa.Table:
    """The listing with two more columns: ``todo`` (not done yet) and ``stale`` (the object
    has rows from before: an older version, a failure to retry, a killed run's leftovers;
    the committer deletes them before the object's first new row lands)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    uris = listing["uri"].to_pylist()
    assets = _lookup(store, schema.ASSETS, uris, ["uri", "fingerprint", "status"])
    final = {"ok"} if retry_failed else {"ok", "partial", "failed"}
    recorded = {
        uri: (fingerprint, status)
        for uri, fingerprint, status in zip(
            *(assets[c].to_pylist() for c in ("uri", "fingerprint", "status")), strict=True
        )
    }
    fingerprints = listing["fingerprint"].to_pylist()
    todo = [
        not (uri in recorded and recorded[uri][0] == fp and recorded[uri][1] in final)
        for uri, fp in zip(uris, fingerprints, strict=True)
    ]
    to_do = [u for u, t in zip(uris, todo, strict=True) if t]
    has_rows = set(recorded)
    for name in (schema.CHUNKS, schema.ERRORS):
        found = _lookup(store, name, [u for u in to_do if u not in has_rows], ["uri"])
        has_rows.update(pc.unique(found["uri"]).to_pylist() if found.num_rows else [])
    stale = [t and u in has_rows for u, t in zip(uris, todo, strict=True)]
    return listing.append_column("todo", pa.array(todo, pa.bool_())).append_column(
        "stale", pa.array(stale, pa.bool_())
    )


def _lookup(store: Store, name: str, uris: list[str], columns: list[str]) -> pa.Table:
    import pyarrow as pa

    table = store.open(name)
    empty = pa.table({c: pa.array([], pa.string()) for c in columns})
    if table is None or not uris:
        return empty
    dataset = table.to_lance()
    parts = []
    for start in range(0, len(uris), LOOKUP_BATCH):
        wanted = ", ".join(schema.sql_literal(u) for u in uris[start : start + LOOKUP_BATCH])
        parts.append(dataset.to_table(columns=columns, filter=f"uri IN ({wanted})"))
    return pa.concat_tables(parts) if parts else empty
