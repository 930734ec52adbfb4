"""``mrag prune``: rows of objects gone from a source go; other sources' rows stay."""

from __future__ import annotations

from mrag.cli import main
from mrag.store import schema
from mrag.store.lance import Store
from mrag.store.writer import LanceWriteStage
from tests.store.test_commit_protocol import DIM, _object_rows, _table


def test_prune_command_removes_the_rows_of_deleted_files_only(tmp_path, capsys) -> None:
    source, other = tmp_path / "docs", tmp_path / "elsewhere"
    source.mkdir()
    other.mkdir()
    kept, deleted, outside = source / "kept.txt", source / "deleted.txt", other / "x.txt"
    for path in (kept, deleted, outside):
        path.write_text("words")
    db = str(tmp_path / "db")
    Store(db).ensure_tables({"clip": DIM, "text_vec": DIM})
    LanceWriteStage(db)(
        _table([r for p in (kept, deleted, outside) for r in _object_rows(str(p), 3)])
    )
    deleted.unlink()
    outside.unlink()  # gone too, but its source is not named: it stays

    assert main(["prune", "--db", db, "--profile", "offline", str(source)]) == 0
    assert "removed 4 rows of 1 objects" in capsys.readouterr().out
    store = Store(db)
    assert sorted(set(store.read(schema.CHUNKS, ["uri"])["uri"].to_pylist())) == sorted(
        [str(kept), str(outside)]
    )
    assert sorted(store.read(schema.ASSETS, ["uri"])["uri"].to_pylist()) == sorted(
        [str(kept), str(outside)]
    )


def test_ingest_sync_removes_deleted_files_rows_before_ingesting(tmp_path) -> None:
    """Nothing new to ingest (no Ray): ``--sync`` alone removes what is gone."""
    from mrag import storage
    from mrag.config import load_config
    from mrag.pipelines.ingest import run_ingest

    source = tmp_path / "docs"
    source.mkdir()
    for name in ("kept.txt", "deleted.txt"):
        (source / name).write_text("words")
    db = str(tmp_path / "db")
    config = load_config(profile="offline", overrides={"db_uri": db})
    rows = []
    for obj in storage.list_objects([str(source)], (".txt",)):
        rows += [{**r, "fingerprint": obj.fingerprint, "size": obj.size}
                 for r in _object_rows(obj.uri, 2)]  # fmt: skip
    table = _table(rows).drop_columns(["clip", "clip_model"])  # no vectors: no model to check
    Store(db).ensure_tables({"clip": 64, "text_vec": 384})  # the offline profile's widths
    LanceWriteStage(db)(table)
    (source / "deleted.txt").unlink()

    summary = run_ingest(config, [str(source)], sync=True)
    assert (summary.seen, summary.skipped, summary.pruned) == (1, 1, 1)
    store = Store(db)
    assert set(store.read(schema.CHUNKS, ["uri"])["uri"].to_pylist()) == {str(source / "kept.txt")}
    assert store.read(schema.ASSETS, ["uri"])["uri"].to_pylist() == [str(source / "kept.txt")]
    report = (tmp_path / "db" / "_runs").iterdir()
    assert len(list(report)) == 1


def test_a_name_that_is_not_utf8_is_matched_by_its_real_path(tmp_path) -> None:
    import os

    from mrag import storage
    from mrag.pipelines.prune import _under

    odd = storage.local_uri(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9.png")))
    assert odd.startswith("file://")
    assert _under(odd, [str(tmp_path)])
    assert not _under(odd, [str(tmp_path / "elsewhere")])
