from __future__ import annotations

import pytest

from mrag import storage


def test_local_listing_is_recursive_sorted_and_case_insensitive(tmp_path) -> None:
    for rel in ("a.JPG", "b.png", "sub/c.jpeg", "notes.txt", "sub/d.Webp"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x" * 3)
    found = list(storage.list_objects([str(tmp_path)], (".jpg", ".jpeg", ".png", ".webp")))
    assert [o.uri.removeprefix(str(tmp_path) + "/") for o in found] == [
        "a.JPG",
        "b.png",
        "sub/c.jpeg",
        "sub/d.Webp",
    ]
    assert all(o.size == 3 and o.mtime > 0 for o in found)
    assert storage.read_bytes(found[0].uri) == b"xxx"
    with pytest.raises(ValueError, match="limit"):
        storage.read_bytes(found[0].uri, max_bytes=2)


def test_missing_source_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        list(storage.list_objects([str(tmp_path / "nope")], (".jpg",)))


@pytest.mark.integration
def test_s3_listing_and_reading_through_the_endpoint(s3_bucket: str) -> None:
    import boto3

    s3 = boto3.client("s3")
    for key in ("imgs/x.PNG", "imgs/deep/y.jpg", "imgs/readme.md"):
        s3.put_object(Bucket=s3_bucket, Key=key, Body=key.encode())
    found = list(storage.list_objects([f"s3://{s3_bucket}/imgs"], (".png", ".jpg")))
    assert [o.uri for o in found] == [
        f"s3://{s3_bucket}/imgs/deep/y.jpg",
        f"s3://{s3_bucket}/imgs/x.PNG",
    ]
    assert all(o.etag for o in found)
    assert storage.read_bytes(found[1].uri) == b"imgs/x.PNG"


def test_lance_storage_options_follow_aws_variables(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    options = storage.lance_storage_options("s3://bucket/db")
    assert options["aws_endpoint"] == "http://127.0.0.1:9"
    assert options["allow_http"] == "true"
    assert options["aws_access_key_id"] == "k"
    assert storage.lance_storage_options("/local/db") == {}
