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


def _tree(root, names: list[str]) -> None:
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * (1 + len(name)))


def test_listing_shards_cover_every_object_once_and_list_in_parallel(tmp_path) -> None:
    names = ["top.jpg", "a/1.jpg", "a/2.JPG", "a/deep/3.png", "b/4.jpg", "b/c/5.jpg",
             "b/c/d/6.jpg", "e/notes.bin", "f/g/h/i/j/7.jpg"]  # fmt: skip
    _tree(tmp_path, names)
    extensions = (".jpg", ".png")
    whole = [o.uri for o in storage.list_objects([str(tmp_path)], extensions)]
    for min_shards in (1, 3, 8, 100):
        shards = storage.listing_shards([str(tmp_path)], min_shards=min_shards)
        listed = [o.uri for s in shards for o in storage.list_shard(s, extensions)]
        assert sorted(listed) == sorted(whole), min_shards  # every object, once
        if min_shards == 1:
            assert shards == [storage.ListingShard(storage.local_uri(str(tmp_path)), True)]
        if min_shards >= 8:
            assert len(shards) >= 6  # folders opened level by level
    single = storage.listing_shards([str(tmp_path / "top.jpg")])
    assert [o.uri for o in storage.list_shard(single[0], extensions)] == [
        storage.local_uri(str(tmp_path / "top.jpg"))
    ]
    with pytest.raises(storage.SourceNotFoundError):
        storage.listing_shards([str(tmp_path / "missing")])


def test_s3_listing_shards(s3_bucket: str) -> None:
    import boto3

    s3 = boto3.client("s3")
    keys = ["p/x.jpg", "p/a/1.jpg", "p/a/b/2.jpg", "p/c/3.jpg", "q/4.jpg"]
    for key in keys:
        s3.put_object(Bucket=s3_bucket, Key=key, Body=b"data")
    shards = storage.listing_shards([f"s3://{s3_bucket}/p/"], min_shards=8)
    listed = sorted(o.uri for s in shards for o in storage.list_shard(s, (".jpg",)))
    assert listed == sorted(f"s3://{s3_bucket}/{k}" for k in keys if k.startswith("p/"))
    assert len(shards) >= 3
