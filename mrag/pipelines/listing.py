"""The listing as a Ray dataset: listed in parallel tasks over shards of the sources, or read
from a manifest of URIs (an S3 Inventory report, Parquet or CSV), then planned shard by shard
against ``assets``. The driver holds only the shard list and block references, never rows.

Manifest formats (``mrag ingest --manifest URI``):

- ``.parquet`` / ``.csv``: a ``uri`` column (or ``bucket`` and ``key``), and optionally
  ``size``, ``etag``, ``mtime`` (seconds) or ``last_modified``; objects without a size are
  looked up (one HEAD each, in the planning tasks);
- an S3 Inventory ``manifest.json``: its ``fileSchema`` names the columns of the gzip'd CSV
  files it lists (``Bucket, Key, Size, LastModifiedDate, ETag, ...``; keys URL-encoded).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_plus

from mrag import storage
from mrag.config import object_kind

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pyarrow as pa
    import ray.data

#: Rows per planning call (each a few indexed ``uri IN (...)`` lookups).
PLAN_BATCH = 2000


def listing_schema() -> pa.Schema:
    import pyarrow as pa

    return pa.schema(
        [
            ("uri", pa.string()),
            ("size", pa.int64()),
            ("etag", pa.string()),
            ("mtime", pa.float64()),
            ("fingerprint", pa.string()),
        ]
    )


def listing_from_objects(objects: Sequence[storage.ObjectInfo]) -> pa.Table:
    import pyarrow as pa

    return pa.table(
        {
            "uri": [o.uri for o in objects],
            "size": [o.size for o in objects],
            "etag": [o.etag for o in objects],
            "mtime": [o.mtime for o in objects],
            "fingerprint": [o.fingerprint for o in objects],
        },
        schema=listing_schema(),
    )


def _list_shards(batch: dict[str, Any], extensions: tuple[str, ...]) -> pa.Table:
    objects = [
        o
        for uri, recursive in zip(batch["uri"], batch["recursive"], strict=True)
        for o in storage.list_shard(storage.ListingShard(str(uri), bool(recursive)), extensions)
    ]
    return listing_from_objects(objects)


def listing_dataset(
    sources: Sequence[str], extensions: tuple[str, ...], *, manifest: str | None = None
) -> ray.data.Dataset:
    """The listed objects with a wanted extension, as a dataset of :func:`listing_schema`."""
    import ray.data

    if manifest:
        return _manifest_dataset(manifest, extensions)
    shards = storage.listing_shards(sources)
    items = [{"uri": s.uri, "recursive": s.recursive} for s in shards]
    return ray.data.from_items(items, override_num_blocks=max(1, len(items))).map_batches(
        _list_shards,
        fn_kwargs={"extensions": extensions},
        batch_size=1,
        batch_format="numpy",
        num_cpus=0.25,
    )


def _manifest_dataset(manifest: str, extensions: tuple[str, ...]) -> ray.data.Dataset:
    import pyarrow.fs
    import ray.data

    fs, path = storage.filesystem(manifest)
    arrow_fs = pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(fs))
    lowered = manifest.lower()
    if lowered.endswith(".json"):
        with fs.open(path, "r") as source:
            inventory = json.load(source)
        columns = [c.strip() for c in inventory["fileSchema"].split(",")]
        bucket = inventory.get("destinationBucket", "").removeprefix("arn:aws:s3:::")
        base = path.split("/", 1)[0] if not bucket else bucket
        files = [f"{base}/{f['key']}" for f in inventory["files"]]
        import pyarrow.csv as csv

        raw = ray.data.read_csv(
            files,
            filesystem=arrow_fs,
            read_options=csv.ReadOptions(column_names=columns),
            convert_options=csv.ConvertOptions(
                column_types={"Size": "int64", "Key": "string", "ETag": "string"}
            ),
        )
        scheme = manifest.split("://", 1)[0] if "://" in manifest else "s3"
        return raw.map_batches(
            _inventory_rows,
            fn_kwargs={"extensions": extensions, "scheme": scheme},
            batch_format="pyarrow",
        )
    reader = ray.data.read_parquet if lowered.endswith(".parquet") else ray.data.read_csv
    return reader(path, filesystem=arrow_fs).map_batches(
        _manifest_rows, fn_kwargs={"extensions": extensions}, batch_format="pyarrow"
    )


def _inventory_rows(batch: pa.Table, extensions: tuple[str, ...], scheme: str) -> pa.Table:
    """S3 Inventory rows → listing rows (URL-decoded keys; delete markers and folders out)."""
    names = batch.column_names
    objects = []
    for i in range(batch.num_rows):
        row = {name: batch[name][i].as_py() for name in names}
        if str(row.get("IsDeleteMarker", "false")).lower() == "true":
            continue
        if str(row.get("IsLatest", "true")).lower() == "false":
            continue
        key = unquote_plus(str(row["Key"]))
        if key.endswith("/") or not key.lower().endswith(extensions):
            continue
        objects.append(
            storage.ObjectInfo(
                uri=f"{scheme}://{row['Bucket']}/{key}",
                size=int(row.get("Size") or 0),
                etag=str(row.get("ETag") or "").strip('"'),
                mtime=_seconds(row.get("LastModifiedDate")),
            )
        )
    return listing_from_objects(objects)


def _manifest_rows(batch: pa.Table, extensions: tuple[str, ...]) -> pa.Table:
    """Parquet/CSV manifest rows → listing rows; bare URIs are looked up."""
    names = set(batch.column_names)
    objects = []
    for row in batch.to_pylist():
        uri = row.get("uri") or f"s3://{row.get('bucket')}/{row.get('key')}"
        if not str(uri).lower().endswith(extensions):
            continue
        if row.get("size") is None:
            objects.append(storage.stat_object(str(uri)))
            continue
        mtime = row.get("mtime") if "mtime" in names else row.get("last_modified")
        objects.append(
            storage.ObjectInfo(
                uri=str(uri),
                size=int(row["size"]),
                etag=str(row.get("etag") or "").strip('"'),
                mtime=_seconds(mtime),
            )
        )
    return listing_from_objects(objects)


def _seconds(value: Any) -> float:
    if value is None or value == "":
        return 0.0
    if hasattr(value, "timestamp"):
        return float(value.timestamp())
    try:
        return float(value)
    except (TypeError, ValueError):
        from datetime import datetime

        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def _plan(batch: pa.Table, db_uri: str, retry_failed: bool, extensions: tuple[str, ...]):
    import pyarrow as pa

    from mrag.store.lance import Store
    from mrag.store.plan import plan_listing

    planned = plan_listing(Store(db_uri), batch, retry_failed)
    kinds = [object_kind(u, extensions) or "unknown" for u in planned["uri"].to_pylist()]
    return planned.append_column("kind", pa.array(kinds, pa.string()))


def planned_dataset(
    listing: ray.data.Dataset, db_uri: str, retry_failed: bool, extensions: tuple[str, ...]
) -> ray.data.Dataset:
    """The listing with ``todo``, ``stale`` and ``kind`` columns, planned in tasks."""
    return listing.map_batches(
        _plan,
        fn_kwargs={"db_uri": db_uri, "retry_failed": retry_failed, "extensions": extensions},
        batch_size=PLAN_BATCH,
        batch_format="pyarrow",
        num_cpus=0.25,
    )
