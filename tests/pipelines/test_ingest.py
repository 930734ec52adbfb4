"""End to end: images on the S3 server → Ray Data ingest → LanceDB (on S3 and on disk) → search."""

from __future__ import annotations

import json

import boto3
import pytest

from mrag.config import IngestConfig, load_config
from mrag.pipelines.ingest import decode_task_count, run_ingest
from mrag.query import QueryEngine
from mrag.store import schema
from mrag.store.lance import Store
from tests.media import bad_images, good_images

pytestmark = pytest.mark.integration


def _upload(bucket: str) -> None:
    s3 = boto3.client("s3")
    for key, data in good_images().items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    for key, (data, _) in bad_images().items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    s3.put_object(Bucket=bucket, Key="photos/notes.bin", Body=b"an extension nobody ingests")


@pytest.mark.parametrize("db_on", ["s3", "disk"])
def test_ingest_from_s3_search_and_rerun(ray_local, s3_bucket: str, tmp_path, db_on: str) -> None:
    _upload(s3_bucket)
    db_uri = f"s3://{s3_bucket}/lancedb" if db_on == "s3" else str(tmp_path / "db")
    config = load_config(
        profile="offline",
        overrides={"db_uri": db_uri, "ingest.max_image_pixels": 10_000_000},
    )
    source = f"s3://{s3_bucket}/photos/"

    summary = run_ingest(config, [source])
    good, bad = good_images(), bad_images()
    assert summary.seen == len(good) + len(bad)
    assert summary.ingested == len(good)
    assert summary.failed == {
        cls: sum(1 for _, c in bad.values() if c == cls) for _, cls in bad.values()
    }

    store = Store(db_uri)
    chunks = store.read(schema.CHUNKS, ["uri", "modality", "thumbnail"]).to_pylist()
    assert sorted(r["uri"] for r in chunks) == sorted(f"s3://{s3_bucket}/{k}" for k in good)
    assert all(r["modality"] == "image" and r["thumbnail"][:2] == b"\xff\xd8" for r in chunks)
    errors = {r["uri"]: r for r in store.read(schema.ERRORS).to_pylist()}
    assert {u: r["error_class"] for u, r in errors.items()} == {
        f"s3://{s3_bucket}/{k}": cls for k, (_, cls) in bad.items()
    }
    assert all(r["stage"] == "decode" and r["message"] for r in errors.values())
    assets = store.read(schema.ASSETS).to_pylist()
    assert sorted(a["status"] for a in assets) == ["failed"] * len(bad) + ["ok"] * len(good)

    engine = QueryEngine(config)
    for key, data in good.items():
        hits = engine.search(None, image=data, k=3)
        assert hits[0].uri == f"s3://{s3_bucket}/{key}", key
        assert hits[0].score > 0.999
    assert len(engine.search("a photo", k=4)) == 4
    only_nested = engine.search(
        "a photo", k=10, filters={"uri_prefix": f"s3://{s3_bucket}/photos/nested/"}
    )
    assert [h.uri for h in only_nested] == [f"s3://{s3_bucket}/photos/nested/i-rotated.jpeg"]

    counts = {
        name: store.count_rows(name) for name in (schema.ASSETS, schema.CHUNKS, schema.ERRORS)
    }
    again = run_ingest(config, [source])
    assert (again.ingested, again.skipped, again.failed) == (0, summary.seen, {})
    assert {name: store.count_rows(name) for name in counts} == counts


def test_changed_and_new_objects_are_the_only_work_on_rerun(ray_local, s3_bucket, tmp_path) -> None:
    s3 = boto3.client("s3")
    images = list(good_images().items())
    for key, data in images[:3]:
        s3.put_object(Bucket=s3_bucket, Key=key, Body=data)
    config = load_config(profile="offline", overrides={"db_uri": str(tmp_path / "db")})
    source = f"s3://{s3_bucket}/photos/"
    assert run_ingest(config, [source]).ingested == 3
    s3.put_object(Bucket=s3_bucket, Key=images[3][0], Body=images[3][1])  # new object
    s3.put_object(Bucket=s3_bucket, Key=images[0][0], Body=images[4][1])  # changed content
    summary = run_ingest(config, [source])
    assert (summary.seen, summary.skipped, summary.ingested) == (4, 2, 2)
    store = Store(config.db_uri)
    assert store.count_rows(schema.ASSETS) == 4
    # The changed object's old content is gone, not kept beside the new one.
    chunks = store.read(schema.CHUNKS, ["uri", "asset_id"]).to_pylist()
    assert sorted(c["uri"] for c in chunks) == sorted(
        f"s3://{s3_bucket}/{k}" for k, _ in images[:4]
    )
    assets = {a["uri"]: a["asset_id"] for a in store.read(schema.ASSETS).to_pylist()}
    assert all(assets[c["uri"]] == c["asset_id"] for c in chunks)
    hits = QueryEngine(config).search(None, image=images[4][1], k=1)
    assert hits[0].uri == f"s3://{s3_bucket}/{images[0][0]}"


def test_decode_tasks_amortise_rays_per_task_cost_and_keep_every_decoder_busy() -> None:
    ingest = IngestConfig(decode_task_objects=256, decode_tasks=1)
    assert decode_task_count(0, ingest) == 1
    assert decode_task_count(40, ingest) == 1
    assert decode_task_count(3441, ingest) == 14
    assert decode_task_count(10_000_000, ingest) == 2000  # bounded plan size
    many_decoders = IngestConfig(decode_task_objects=256, decode_tasks=8)
    assert decode_task_count(300, many_decoders) == 8
    assert decode_task_count(5, many_decoders) == 5  # never an empty task


def _manifest(s3, bucket: str, form: str, listed: list[str]) -> str:
    """A manifest of ``listed`` keys in one of the forms ``--manifest`` reads; returns its URI."""
    import csv
    import gzip
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    heads = {k: s3.head_object(Bucket=bucket, Key=k) for k in listed}
    if form == "parquet":
        table = pa.table(
            {
                "uri": [f"s3://{bucket}/{k}" for k in listed],
                "size": [heads[k]["ContentLength"] for k in listed],
                "etag": [heads[k]["ETag"] for k in listed],
            }
        )
        sink = io.BytesIO()
        pq.write_table(table, sink)
        s3.put_object(Bucket=bucket, Key="lists/objects.parquet", Body=sink.getvalue())
        return f"s3://{bucket}/lists/objects.parquet"
    if form == "csv":  # bare URIs: sizes and etags are looked up by the planning tasks
        body = "uri\n" + "".join(f"s3://{bucket}/{k}\n" for k in listed)
        s3.put_object(Bucket=bucket, Key="lists/objects.csv", Body=body.encode())
        return f"s3://{bucket}/lists/objects.csv"
    # An S3 Inventory report: manifest.json naming gzip'd CSV parts without a header.
    from urllib.parse import quote_plus

    rows = io.StringIO()
    writer = csv.writer(rows)
    for k in listed:
        modified = heads[k]["LastModified"].strftime("%Y-%m-%dT%H:%M:%S.000Z")
        writer.writerow([bucket, quote_plus(k), heads[k]["ContentLength"], modified,
                         heads[k]["ETag"].strip('"'), "false", "true"])  # fmt: skip
    writer.writerow([bucket, "photos/", 0, "2026-01-01T00:00:00.000Z", "d41d8", "false", "true"])
    part = "inventory/data/part-0.csv.gz"
    s3.put_object(Bucket=bucket, Key=part, Body=gzip.compress(rows.getvalue().encode()))
    manifest = {
        "sourceBucket": bucket,
        "destinationBucket": f"arn:aws:s3:::{bucket}",
        "fileFormat": "CSV",
        "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag, IsDeleteMarker, IsLatest",
        "files": [{"key": part, "size": 1, "MD5checksum": "x"}],
    }
    s3.put_object(Bucket=bucket, Key="inventory/manifest.json", Body=json.dumps(manifest).encode())
    return f"s3://{bucket}/inventory/manifest.json"


@pytest.mark.parametrize("form", ["parquet", "csv", "inventory"])
def test_ingest_from_a_manifest_of_objects(ray_local, s3_bucket, tmp_path, form) -> None:
    s3 = boto3.client("s3")
    images = list(good_images().items())[:5]
    for key, data in images:
        s3.put_object(Bucket=s3_bucket, Key=key, Body=data)
    s3.put_object(Bucket=s3_bucket, Key="photos/with space+plus.jpg", Body=images[0][1])
    listed = [k for k, _ in images[:4]] + ["photos/with space+plus.jpg"]
    manifest = _manifest(s3, s3_bucket, form, listed)
    config = load_config(profile="offline", overrides={"db_uri": str(tmp_path / "db")})
    summary = run_ingest(config, [], manifest=manifest)
    assert (summary.seen, summary.ingested) == (5, 5)
    store = Store(config.db_uri)
    uris = sorted(store.read(schema.ASSETS, ["uri"])["uri"].to_pylist())
    assert uris == sorted(f"s3://{s3_bucket}/{k}" for k in listed)  # the fifth image not listed
    # The manifest's fingerprints are the listing's: a run over the prefix redoes only the
    # object the manifest left out.
    again = run_ingest(config, [f"s3://{s3_bucket}/photos/"])
    assert (again.seen, again.skipped, again.ingested) == (6, 5, 1)
