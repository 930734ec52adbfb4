"""The commit protocol: an object is marked done (its ``assets`` row) only after all its rows."""

from __future__ import annotations

import random
import threading
from collections import Counter

import pyarrow as pa
import pytest

from mrag import storage
from mrag.pipelines.ingest import listing_table, plan
from mrag.pipelines.prune import prune_gone
from mrag.store import schema
from mrag.store.commit import Committer
from mrag.store.lance import Store
from mrag.store.plan import plan_listing
from mrag.store.writer import LanceWriteStage

DIM = 4


def _object_rows(uri: str, n_chunks: int, *, fingerprint: str = "f1", partial: bool = False):
    """The rows the embed stage hands over for one object: its chunks (and an error notice)."""
    status = "partial" if partial else "ok"
    rows = [
        {
            "uri": uri, "size": 10, "etag": "e", "mtime": 0.0, "fingerprint": f"{fingerprint}:10",
            "asset_id": f"{uri}@{fingerprint}", "asset_modality": "text",
            "asset_status": status, "n_chunks": n_chunks,
            "chunk_id": f"{uri}@{fingerprint}#{i}", "ordinal": i, "modality": "text",
            "text": f"part {i}",
            "title": None, "error_stage": "", "error_class": "", "error_message": "",
            "vector": [float(i + 1)] * DIM,
        }
        for i in range(n_chunks)
    ]  # fmt: skip
    if partial:
        rows.append({**rows[0], "chunk_id": f"{uri}@{fingerprint}#error", "text": None,
                     "ordinal": n_chunks,
                     "error_stage": "decode", "error_class": "TooManyPages",
                     "error_message": "cut short"})  # fmt: skip
    return rows


def _table(rows: list[dict]) -> pa.Table:
    vectors = [r.pop("vector") for r in rows]
    table = pa.Table.from_pylist(rows)
    flat = pa.array([x for v in vectors for x in v], pa.float32())
    return table.append_column("clip", pa.FixedSizeListArray.from_arrays(flat, DIM)).append_column(
        "clip_model", pa.array(["m"] * len(rows))
    )


def _store(tmp_path) -> tuple[str, Store]:
    db = str(tmp_path / "db")
    store = Store(db)
    store.ensure_tables({"clip": DIM, "text_vec": DIM})
    return db, store


def _listed(uri: str, fingerprint: str = "f1") -> storage.ObjectInfo:
    return storage.ObjectInfo(uri=uri, size=10, etag=fingerprint, mtime=0.0)


def _plan(store: Store, objects: list[storage.ObjectInfo]) -> tuple[list[str], int]:
    todo, skipped = plan(store, listing_table(objects), retry_failed=False)
    return todo["uri"].to_pylist(), skipped


def test_an_object_split_over_two_commits_is_marked_done_only_with_the_second(tmp_path) -> None:
    db, store = _store(tmp_path)
    writer = LanceWriteStage(db)
    rows = _object_rows("/d/long.txt", 5) + _object_rows("/d/short.txt", 1)
    writer(_table(rows[:3]))  # three of long.txt's five chunks
    assert store.count_rows(schema.CHUNKS) == 3
    assert store.count_rows(schema.ASSETS) == 0
    writer(_table(rows[3:]))
    assets = {a["uri"]: a for a in store.read(schema.ASSETS).to_pylist()}
    assert set(assets) == {"/d/long.txt", "/d/short.txt"}
    assert assets["/d/long.txt"]["n_chunks"] == 5
    # One assets commit, made after every chunk commit.
    order = [c.table for c in writer.commits]
    assert order == [schema.CHUNKS, schema.CHUNKS, schema.ASSETS]


def test_a_crash_between_chunks_and_assets_leaves_the_object_to_redo(tmp_path) -> None:
    db, store = _store(tmp_path)
    rows = _object_rows("/d/a.txt", 3) + _object_rows("/d/b.pdf", 2, partial=True)

    class Killed(Exception):
        pass

    class CrashingCommitter(Committer):
        def _commit_fragments(self, name, fragments, batch):
            if name == schema.ASSETS:
                raise Killed  # the driver dies after the chunk and error commits
            return super()._commit_fragments(name, fragments, batch)

    writer = LanceWriteStage(db)
    writer.committer = CrashingCommitter(db)
    with pytest.raises(Killed):
        writer(_table([dict(r) for r in rows]))
    assert store.count_rows(schema.CHUNKS) == 5 and store.count_rows(schema.ERRORS) == 1
    assert store.count_rows(schema.ASSETS) == 0

    # The next run: nothing is skipped, the partial rows go, then everything lands once.
    listing = [_listed("/d/a.txt"), _listed("/d/b.pdf")]
    todo, skipped = _plan(store, listing)
    assert (todo, skipped) == (["/d/a.txt", "/d/b.pdf"], 0)
    planned = plan_listing(store, listing_table(listing), retry_failed=False)
    assert planned["stale"].to_pylist() == [True, True]  # the killed run's rows go first
    LanceWriteStage(db)(_table([{**r, "stale": True} for r in rows]))
    chunk_ids = store.read(schema.CHUNKS, ["chunk_id"])["chunk_id"].to_pylist()
    assert sorted(chunk_ids) == sorted(r["chunk_id"] for r in rows if not r["error_class"])
    assert store.count_rows(schema.ERRORS) == 1
    assert {a["uri"]: a["status"] for a in store.read(schema.ASSETS).to_pylist()} == {
        "/d/a.txt": "ok",
        "/d/b.pdf": "partial",
    }
    assert _plan(store, listing) == ([], 2)


def test_a_changed_object_loses_its_done_mark_before_its_new_rows_land(tmp_path) -> None:
    db, store = _store(tmp_path)
    LanceWriteStage(db)(_table(_object_rows("/d/a.txt", 2)))
    changed = [_listed("/d/a.txt", "f2")]
    todo, _ = _plan(store, changed)
    assert todo == ["/d/a.txt"]
    assert plan_listing(store, listing_table(changed), False)["stale"].to_pylist() == [True]
    rows = [{**r, "stale": True} for r in _object_rows("/d/a.txt", 3, fingerprint="f2")]

    class CrashingCommitter(Committer):
        def _commit_fragments(self, name, fragments, batch):
            raise OSError("the driver is gone")  # after the old rows went, before the new

    crashing = LanceWriteStage(db)
    crashing.committer = CrashingCommitter(db)
    with pytest.raises(OSError):
        crashing(_table([dict(r) for r in rows]))
    assert store.count_rows(schema.ASSETS) == 0  # a crash here: the next run redoes it
    LanceWriteStage(db)(_table(rows))
    assert store.count_rows(schema.CHUNKS) == 3
    assert store.read(schema.ASSETS, ["fingerprint"])["fingerprint"].to_pylist() == ["f2:10"]


def test_many_concurrent_writers_commit_every_key_once(tmp_path) -> None:
    """Eight threads hand the one committer overlapping, shuffled pieces of the same objects
    (as retried Ray tasks would): no chunk_id twice, none lost, one assets row per object."""
    db, store = _store(tmp_path)
    objects = {f"/d/{i}.txt": 1 + i % 7 for i in range(60)}
    every_row = [r for uri, n in objects.items() for r in _object_rows(uri, n)]
    writer = LanceWriteStage(db)
    failures: list[BaseException] = []

    def send(seed: int) -> None:
        rng = random.Random(seed)
        rows = [dict(r) for r in every_row if rng.random() < 0.6]
        rng.shuffle(rows)
        try:
            for start in range(0, len(rows), 17):
                writer(_table(rows[start : start + 17]))
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=send, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer(_table([dict(r) for r in every_row]))  # whatever no thread happened to send
    assert not failures
    chunk_ids = store.read(schema.CHUNKS, ["chunk_id"])["chunk_id"].to_pylist()
    duplicates = {k: n for k, n in Counter(chunk_ids).items() if n > 1}
    print(f"{len(chunk_ids)} chunk rows from 8 writers, {len(duplicates)} duplicate keys")
    assert duplicates == {}
    assert sorted(chunk_ids) == sorted(r["chunk_id"] for r in every_row)
    assets = store.read(schema.ASSETS, ["uri"])["uri"].to_pylist()
    assert sorted(assets) == sorted(objects)


def test_prune_removes_only_gone_objects_under_the_listed_sources(tmp_path) -> None:
    db, store = _store(tmp_path)
    rows = [r for uri in ("/src/a.txt", "/src/gone.txt", "/other/x.txt", "/src2/y.txt")
            for r in _object_rows(uri, 2)]  # fmt: skip
    LanceWriteStage(db)(_table(rows))
    # A killed run's leftovers: chunks of an object with no assets row, gone since.
    store.append(schema.CHUNKS, store.read(schema.CHUNKS).filter(
        pa.compute.equal(store.read(schema.CHUNKS)["uri"], "/src2/y.txt")
    ).set_column(2, "uri", pa.array(["/src/half.txt"] * 2)).set_column(
        0, "chunk_id", pa.array(["h1", "h2"])))  # fmt: skip
    report = prune_gone(store, ["/src"], ["/src/a.txt"])
    assert report.objects == 2
    assert sorted(set(store.read(schema.CHUNKS, ["uri"])["uri"].to_pylist())) == [
        "/other/x.txt",
        "/src/a.txt",
        "/src2/y.txt",  # "/src2" is not under "/src"
    ]
    assert sorted(store.read(schema.ASSETS, ["uri"])["uri"].to_pylist()) == [
        "/other/x.txt",
        "/src/a.txt",
        "/src2/y.txt",
    ]


def test_an_object_that_could_not_be_read_is_left_for_the_next_run(tmp_path) -> None:
    db, store = _store(tmp_path)
    unreadable = {**_object_rows("/d/flaky.txt", 1)[0], "asset_status": "failed", "n_chunks": 0,
                  "error_stage": "read", "error_class": "ConnectionError",
                  "error_message": "store unreachable", "chunk_id": "x#error"}  # fmt: skip
    too_big = {**unreadable, "uri": "/d/huge.txt", "error_class": "ValueError"}
    writer = LanceWriteStage(db)
    writer(_table([unreadable, too_big, *_object_rows("/d/fine.txt", 2)]))
    assert sorted(writer.finished) == ["/d/fine.txt", "/d/flaky.txt", "/d/huge.txt"]
    # The error is recorded; only the permanent one marks its object done.
    assert store.count_rows(schema.ERRORS) == 2
    assert sorted(store.read(schema.ASSETS, ["uri"])["uri"].to_pylist()) == [
        "/d/fine.txt",
        "/d/huge.txt",
    ]
    listing = [_listed(u) for u in ("/d/fine.txt", "/d/flaky.txt", "/d/huge.txt")]
    assert _plan(store, listing) == (["/d/flaky.txt"], 2)
