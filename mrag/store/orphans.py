"""Data files no version references: what a killed or retried fragment writer leaves behind.

Lance's ``cleanup_old_versions(delete_unverified=True)`` is meant to remove them, but (pylance
4.0.2) it only lists ``data/`` files older than the oldest kept manifest, so a file abandoned
after that version is never even looked at (lance issue 8942, fixed upstream by PR 8945). This
lists ``data/`` itself and removes every file that no kept version references and that is older
than a grace age (a running writer's files are young and not committed yet).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mrag import storage

if TYPE_CHECKING:
    from mrag.store.lance import Store


@dataclass
class OrphanReport:
    files: int = 0
    bytes: int = 0
    kept_young: int = 0  # unreferenced but younger than the grace age: maybe a running writer's


def referenced_files(dataset) -> set[str]:  # noqa: ANN001 - a lance.LanceDataset
    """Data file names that any kept version of the dataset references."""
    names: set[str] = set()
    for info in dataset.versions():
        version = dataset.checkout_version(info["version"])
        for fragment in version.get_fragments():
            names.update(f.path for f in fragment.metadata.files)
    return names


def remove_orphan_files(store: Store, name: str, min_age_s: float) -> OrphanReport:
    """Deletes ``name``'s unreferenced data files older than ``min_age_s`` seconds.

    Only safe when no writer has files older than that waiting for a commit: give a grace age
    longer than any job's time between a fragment write and its commit.
    """
    report = OrphanReport()
    table = store.open(name)
    if table is None:
        return report
    dataset = table.to_lance()
    referenced = referenced_files(dataset)
    fs, root = storage.filesystem(dataset.uri)
    data = f"{root.rstrip('/')}/data"
    if not fs.exists(data):
        return report
    now = time.time()
    for entry in fs.ls(data, detail=True):
        if entry.get("type") == "directory":
            continue
        file_name = entry["name"].rsplit("/", 1)[-1]
        if file_name in referenced:
            continue
        if now - storage.entry_mtime(entry) < min_age_s:
            report.kept_young += 1
            continue
        fs.rm_file(entry["name"])
        report.files += 1
        report.bytes += int(entry.get("size") or 0)
    return report
