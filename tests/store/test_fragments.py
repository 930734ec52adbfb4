"""Worker-side fragment writes and the driver's commits of their receipts."""

from __future__ import annotations

import os
import time
from collections import Counter

import lance
import lance.fragment
import pytest

from mrag.store import schema
from mrag.store.commit import Committer
from mrag.store.fragments import FragmentWriter, WriteTargets
from mrag.store.lance import Store
from mrag.store.orphans import remove_orphan_files
from tests.store.test_commit_protocol import DIM, _object_rows, _table


def _setup(tmp_path) -> tuple[str, Store, FragmentWriter]:
    db = str(tmp_path / "db")
    store = Store(db)
    store.ensure_tables({"clip": DIM, "text_vec": DIM})
    return db, store, FragmentWriter(WriteTargets.for_store(store))


def _rows(*objects: tuple[str, int]):
    rows = [r for uri, n in objects for r in _object_rows(uri, n)]
    return _table([{**r, "stale": False} for r in rows])


def _chunk_ids(store: Store) -> list[str]:
    return store.read(schema.CHUNKS, ["chunk_id"])["chunk_id"].to_pylist()


def test_a_receipt_carries_metadata_not_rows(tmp_path) -> None:
    db, store, writer = _setup(tmp_path)
    rows = _rows(("/d/a.txt", 40), ("/d/b.txt", 3))
    receipt = writer(rows)
    assert receipt.num_rows == 1
    entry = receipt["objects"][0].as_py()
    assert [(e["uri"], e["spans"]) for e in entry] == [("/d/a.txt", [0, 40]), ("/d/b.txt", [0, 3])]
    print(f"receipt {receipt.nbytes} bytes for {rows.num_rows} rows of {rows.nbytes} bytes")
    assert receipt.nbytes < rows.nbytes / 2
    assert store.count_rows(schema.CHUNKS) == 0  # written, not committed
    committer = Committer(db)
    committer.add(receipt)
    committer.commit()
    assert sorted(_chunk_ids(store)) == sorted(rows["chunk_id"].to_pylist())
    properties = [
        store.open(name).to_lance().read_transaction(c.version).transaction_properties
        for name, c in ((c.table, c) for c in committer.commits)
    ]
    assert {p["mrag.table"] for p in properties} == {schema.CHUNKS, schema.ASSETS}
    assert {p["mrag.run"] for p in properties} == {committer.run_id}
    assert {p["mrag.batch"] for p in properties} == {"0"}


def test_a_retried_fragment_write_starts_from_a_new_reader(tmp_path, monkeypatch) -> None:
    """The first try reads half its input and fails: the second must still write every row
    (a retry that reused the half-read reader would silently write only the rest)."""
    db, store, writer = _setup(tmp_path)
    real = lance.fragment.write_fragments
    calls = []

    def flaky(data, *args, **kwargs):
        calls.append(data)
        if len(calls) == 1:
            data.read_next_batch()  # half of the input is consumed...
            raise OSError("connection reset by peer")  # ...and the write fails
        return real(data, *args, **kwargs)

    monkeypatch.setattr(lance.fragment, "write_fragments", flaky)
    rows = _rows(*((f"/d/{i}.txt", 600) for i in range(4)))  # 2,400 rows: three batches
    receipt = writer(rows)
    assert len(calls) == 2 and calls[0] is not calls[1]
    committer = Committer(db)
    committer.add(receipt)
    committer.commit()
    assert Counter(_chunk_ids(store)) == Counter(rows["chunk_id"].to_pylist())


@pytest.mark.parametrize("fails", ["after_commit", "before_commit"])
def test_a_commit_with_an_unknown_outcome_is_looked_up_before_a_retry(tmp_path, fails) -> None:
    db, store, writer = _setup(tmp_path)

    class Flaky(Committer):
        tries = 0

        def _lance_commit(self, uri, transaction):
            Flaky.tries += 1
            if Flaky.tries == 1:
                if fails == "after_commit":
                    super()._lance_commit(uri, transaction)  # it landed, the reply did not
                raise TimeoutError("no reply from the object store")
            return super()._lance_commit(uri, transaction)

    committer = Flaky(db)
    rows = _rows(("/d/a.txt", 5))
    committer.add(writer(rows))
    committer.commit()
    assert Counter(_chunk_ids(store)) == Counter(rows["chunk_id"].to_pylist())
    assert store.count_rows(schema.ASSETS) == 1


def test_a_receipt_that_arrives_twice_is_committed_once(tmp_path) -> None:
    db, store, writer = _setup(tmp_path)
    committer = Committer(db)
    first = writer(_rows(("/d/a.txt", 3), ("/d/b.txt", 2)))
    committer.add(first)
    committer.commit()
    committer.add(first)  # an upstream task ran twice: the same rows again
    overlapping = _rows(("/d/b.txt", 2), ("/d/c.txt", 4))  # b's rows again, c new
    committer.add(writer(overlapping))
    committer.commit()
    ids = _chunk_ids(store)
    assert max(Counter(ids).values()) == 1
    assert sorted(set(ids)) == sorted(ids)
    assert len(ids) == 9
    assert committer.rewritten_receipts == 2 and committer.dropped_rows == 7
    assert sorted(store.read(schema.ASSETS, ["uri"])["uri"].to_pylist()) == [
        "/d/a.txt",
        "/d/b.txt",
        "/d/c.txt",
    ]


def test_commits_land_at_once_then_at_growing_intervals(tmp_path, monkeypatch) -> None:
    db, _, writer = _setup(tmp_path)
    now = [1000.0]
    monkeypatch.setattr(time, "perf_counter", lambda: now[0])
    committer = Committer(db, first_wait_s=5, max_wait_s=20, max_rows=50)
    assert not committer.due()  # nothing pending
    committer.add(writer(_rows(("/d/0.txt", 1))))
    assert committer.due()  # the first rows: at once
    committer.commit()
    waits = []
    for i in range(1, 6):
        committer.add(writer(_rows((f"/d/{i}.txt", 1))))
        waited = 0
        while not committer.due():
            now[0] += 1
            waited += 1
        waits.append(waited)
        committer.commit()
    assert waits == [5, 10, 20, 20, 20]
    committer.add(writer(_rows(("/d/big.txt", 60))))  # over max_rows: due without waiting
    assert committer.due()


def test_stale_rows_go_before_the_first_new_row_and_only_then(tmp_path) -> None:
    db, store, writer = _setup(tmp_path)
    Committer(db).add(writer(_rows(("/d/a.txt", 3))))  # never committed: files only
    old = Committer(db)
    old.add(writer(_rows(("/d/a.txt", 3))))
    old.commit()
    new_rows = [{**r, "stale": True, "fingerprint": "f2:10"} for r in _object_rows("/d/a.txt", 4)]
    for row in new_rows:
        row["chunk_id"] = row["chunk_id"].replace("@f1", "@f2")
        row["asset_id"] = row["asset_id"].replace("@f1", "@f2")
    committer = Committer(db, max_rows=10**9)
    committer.add(writer(_table([dict(r) for r in new_rows[:2]])))
    committer.commit()  # the old three go, two new land
    committer.add(writer(_table([dict(r) for r in new_rows[2:]])))
    committer.commit()  # stale again on these rows, but the object was forgotten already
    assert sorted(_chunk_ids(store)) == sorted(r["chunk_id"] for r in new_rows)
    assert store.read(schema.ASSETS, ["fingerprint"])["fingerprint"].to_pylist() == ["f2:10"]


def test_maintenance_removes_files_no_version_references(tmp_path) -> None:
    db, store, writer = _setup(tmp_path)
    writer(_rows(("/d/abandoned.txt", 3)))  # a writer killed before its receipt arrived
    committer = Committer(db)
    committer.add(writer(_rows(("/d/kept.txt", 2))))
    committer.commit()
    data = os.path.join(store.open(schema.CHUNKS).to_lance().uri, "data")
    before = set(os.listdir(data))
    assert len(before) == 2
    # Lance's own clean-up does not list a file newer than the oldest kept version.
    store.open(schema.CHUNKS).to_lance().cleanup_old_versions(delete_unverified=True)
    print(f"after lance's cleanup: {len(os.listdir(data))} data files")
    young = remove_orphan_files(store, schema.CHUNKS, min_age_s=3600)
    assert (young.files, young.kept_young) == (0, 1)  # maybe a running writer's: kept
    report = remove_orphan_files(store, schema.CHUNKS, min_age_s=0)
    assert report.files == 1 and report.bytes > 0
    assert len(os.listdir(data)) == 1
    assert sorted(_chunk_ids(store)) == ["/d/kept.txt@f1#0", "/d/kept.txt@f1#1"]


def test_a_long_job_compacts_its_fragments_as_it_goes(tmp_path) -> None:
    db, store, writer = _setup(tmp_path)
    ran = []

    def compactor(uri, options, tasks):  # what the job hands to Ray tasks
        from mrag.store.commit import run_compaction_tasks

        ran.append(len(tasks))
        return run_compaction_tasks(uri, options, tasks)

    committer = Committer(db, compact_after_fragments=6, compactor=compactor)
    every = []
    for i in range(8):
        rows = _rows((f"/d/{i}.txt", 3))
        every += rows["chunk_id"].to_pylist()
        committer.add(writer(rows))
        committer.commit()
    chunks = store.open(schema.CHUNKS).to_lance()
    print(
        f"compactions: {committer.compactions}; chunk fragments now {len(chunks.get_fragments())}"
    )
    assert ran and committer.compactions[0]["fragments_removed"] >= 6
    assert len(chunks.get_fragments()) <= 3
    assert sorted(_chunk_ids(store)) == sorted(every)
    found = store.open(schema.CHUNKS).search().where("uri = '/d/2.txt'").to_list()
    assert len(found) == 3  # the uri index still answers after the rewrite
