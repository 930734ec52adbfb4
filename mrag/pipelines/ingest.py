"""Ingest job: list → skip already-ingested → read + decode → embed (actor pool) → write.

Run locally (starts a loopback-only Ray)::

    python -m pipelines.ingest s3://bucket/images/ --db ./mrag-db --profile offline
    mrag ingest s3://bucket/images/ --db ./mrag-db --profile offline   # the same job

Submit to a cluster (workers read the same ``AWS_*`` settings)::

    ray job submit --working-dir . -- python -m pipelines.ingest s3://bucket/images/ \
        --db s3://bucket/mrag-db --set ingest.embed_num_gpus=1 --set ingest.embed_actors=4
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mrag import storage
from mrag.config import add_config_arguments, config_from_args, object_kind
from mrag.decode.stage import DecodeStage
from mrag.embed.stage import EmbedStage
from mrag.models import get_model_spec, weights_id
from mrag.pipelines.command import run_command
from mrag.ray_runtime import init_ray, quiet_ray_data
from mrag.store import schema
from mrag.store.lance import Store
from mrag.store.writer import LanceWriteStage

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator, Sequence

    import numpy as np
    import pyarrow as pa
    import ray.data

    from mrag.config import IngestConfig, MragConfig

log = logging.getLogger(__name__)


@dataclass
class IngestSummary:
    """What a run did. ``elapsed_s`` runs from job start (Ray already up) to the last commit."""

    seen: int = 0
    skipped: int = 0
    ingested: int = 0  # objects with chunks, partial ones included
    partial: dict[str, int] = field(default_factory=dict)  # error class → objects cut short
    failed: dict[str, int] = field(default_factory=dict)  # error class → objects with no chunks
    chunks: int = 0
    index: str = ""
    elapsed_s: float = 0.0
    ray_startup_s: float = 0.0

    @property
    def objects_per_s(self) -> float:
        processed = self.ingested + sum(self.failed.values())
        return processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def chunks_per_s(self) -> float:
        return self.chunks / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "objects_per_s": round(self.objects_per_s, 2),
            "chunks_per_s": round(self.chunks_per_s, 2),
        }

    def render(self) -> str:
        failed = ", ".join(f"{k}={v}" for k, v in sorted(self.failed.items())) or "none"
        partial = ", ".join(f"{k}={v}" for k, v in sorted(self.partial.items()))
        partial = f" ({sum(self.partial.values())} partial: {partial})" if partial else ""
        return (
            f"objects seen {self.seen}, ingested {self.ingested}{partial}, skipped "
            f"{self.skipped}, failed {sum(self.failed.values())} ({failed}); {self.chunks} chunks; "
            f"{self.objects_per_s:.1f} objects/s, {self.chunks_per_s:.1f} chunks/s over "
            f"{self.elapsed_s:.1f} s (Ray start-up {self.ray_startup_s:.1f} s, not counted)"
        )


def _decode(batch: dict[str, np.ndarray], **kwargs: Any) -> pa.Table:
    return DecodeStage(**kwargs)(batch)


def decode_task_count(n_objects: int, ingest: IngestConfig) -> int:
    """Read blocks (one decode task each): about ``decode_task_objects`` objects per task, and
    at least ``decode_tasks`` of them so that every concurrent decode task has work."""
    wanted = max(math.ceil(n_objects / ingest.decode_task_objects), ingest.decode_tasks)
    return max(1, min(wanted, n_objects, 2000))


def build_dataset(config: MragConfig, objects: list[storage.ObjectInfo]) -> ray.data.Dataset:
    """The Ray Data plan: a short list of stages, each with the resources it declares.

    The write is not part of the plan: :func:`run_ingest` commits the embedded rows from the
    driver, the one process that sees every row anyway (LanceDB commits must not race, so a
    writer is one process wherever it runs). A writer actor would be one more Ray worker beside
    the model, and on a small node each one costs the forward pass (a Ray worker wakes ~100
    times a second; measured on 2 cores, a model actor lost ~13 % of its rate to any Ray Data
    dataset running beside it).
    """
    import ray.data
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    ingest = config.ingest
    clip_spec = get_model_spec(config.clip_model)
    text_spec = get_model_spec(config.text_model)
    rows = [{**asdict(o), "fingerprint": o.fingerprint} for o in objects]
    read_blocks = decode_task_count(len(rows), ingest)
    has_text = any(object_kind(o.uri, ingest.extensions) != "image" for o in objects)
    return (
        ray.data.from_items(rows, override_num_blocks=read_blocks)
        .map_batches(
            _decode,
            fn_kwargs={
                "ingest": ingest,
                # The model's own resize/crop (open_clip's config, via the spec), done here on
                # cheap CPU tasks; the embed actor only normalises.
                "preprocess": clip_spec.image_preprocess,
                "text_spec": text_spec,
                "text_weights": config.text_weights,
            },
            batch_size=ingest.read_batch_size,
            batch_format="numpy",
            num_cpus=ingest.decode_num_cpus,
            # Bounded: a burst of worker processes starting at once would steal the CPU the
            # model actor needs to load; decode is ~10x cheaper than the forward pass anyway.
            compute=TaskPoolStrategy(size=ingest.decode_tasks),
        )
        .map_batches(
            EmbedStage,
            fn_constructor_kwargs={
                "clip_spec": clip_spec,
                # Only documents make text rows; an image-only job never loads the text encoder.
                "text_spec": text_spec if has_text else None,
                "ingest": ingest,
                "clip_weights": config.clip_weights,
                "text_weights": config.text_weights,
                "seed": config.seed,
            },
            # Text calls are sorted by length into embed_batch_size batches: a wider window
            # means less padding (measured ~30% faster than arrival order).
            batch_size=ingest.text_sort_window if has_text else ingest.embed_batch_size,
            batch_format="pyarrow",
            compute=ActorPoolStrategy(size=ingest.embed_actors),
            num_cpus=ingest.embed_num_cpus,
            num_gpus=ingest.embed_num_gpus,
            memory=ingest.embed_memory_mb * 2**20,
        )
    )


def _write_batches(dataset: ray.data.Dataset, min_rows: int) -> Iterator[pa.Table]:
    """Embedded blocks as they finish, gathered into commits of at least ``min_rows`` rows.

    Gathered here rather than with ``iter_batches(batch_size=...)``, which holds back the first
    batch until its prefetch buffer is full: each commit lands as soon as its rows exist.
    """
    import pyarrow as pa

    pending: list[pa.Table] = []
    pending_rows = 0
    for block in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        pending.append(block)
        pending_rows += block.num_rows
        if pending_rows >= min_rows:
            yield pa.concat_tables(pending)
            pending, pending_rows = [], 0
    if pending:
        yield pa.concat_tables(pending)


def _done(state: tuple[str, str] | None, obj: storage.ObjectInfo, retry_failed: bool) -> bool:
    """Whether a previous run already processed this version of the object."""
    if state is None:
        return False
    fingerprint, status = state
    return fingerprint == obj.fingerprint and (status == "ok" or not retry_failed)


def run_ingest(config: MragConfig, sources: Sequence[str]) -> IngestSummary:
    """Ingests every new or changed object under ``sources`` into ``config.db_uri``.

    Fails fast (before any work) when the weights cannot be found, or when the database's vectors
    were made by another model or other weights (``ConfigError`` naming both). Objects whose
    fingerprint (etag or mtime, and size) matches a previous run are skipped, so re-running adds
    no rows.
    """
    clip_spec = get_model_spec(config.clip_model)
    text_spec = get_model_spec(config.text_model)
    # Finds both models' weights (or fails, saying how to provide them) and names them: the
    # database must hold vectors of one model and one set of weights per column.
    provenance = schema.ChunkProvenance(
        clip=schema.VectorSource(
            clip_spec.name, weights_id(clip_spec, config.clip_weights, seed=config.seed)
        ),
        text=schema.VectorSource(text_spec.name, weights_id(text_spec, config.text_weights)),
    )
    summary = IngestSummary()
    started = time.perf_counter()
    store = Store(config.db_uri)
    store.ensure_tables(clip_spec.embed_dim, text_spec.embed_dim, provenance)
    previous = store.asset_states()
    objects = list(storage.list_objects(sources, config.ingest.extensions))
    todo = [o for o in objects if not _done(previous.get(o.uri), o, config.ingest.retry_failed)]
    summary.seen, summary.skipped = len(objects), len(objects) - len(todo)
    if todo:
        # Changed or retried objects: their old chunks and errors go before the new version lands.
        store.forget([o.uri for o in todo if o.uri in previous])
        summary.ray_startup_s = init_ray(config.ray_address)
        quiet_ray_data()
        started += summary.ray_startup_s
        dataset = build_dataset(config, todo)
        writer = LanceWriteStage(config.db_uri, provenance)
        status: dict[str, str] = {}  # uri → ok, partial or failed
        error_class: dict[str, str] = {}  # uri → why it failed or was cut short
        for rows in _write_batches(dataset, config.ingest.write_batch_rows):
            written = writer(rows).to_pylist()
            for row in written:
                status[row["uri"]] = row["asset_status"]
                if row["error_class"]:
                    error_class[row["uri"]] = row["error_class"]
                else:
                    summary.chunks += 1
        summary.ingested = sum(1 for s in status.values() if s != "failed")
        summary.partial = dict(Counter(error_class[u] for u, s in status.items() if s == "partial"))
        summary.failed = dict(Counter(error_class[u] for u, s in status.items() if s == "failed"))
    summary.elapsed_s = time.perf_counter() - started
    if todo:
        store.optimize()
        if config.index.auto_after_ingest:
            from mrag.pipelines.index import build_indices

            summary.index = build_indices(store, config.index).render()
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", help="folders, files or s3:// prefixes")
    add_config_arguments(parser)
    parser.add_argument("--address", help="Ray cluster address (default: local Ray)")
    parser.add_argument(
        "--json", action="store_true", help="print the summary as one JSON document"
    )


def command(args: argparse.Namespace) -> int:
    summary = run_ingest(config_from_args(args, ray_address=args.address), args.sources)
    print(json.dumps(summary.to_dict()) if args.json else summary.render())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.ingest``: the same flags as ``mrag ingest``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipelines.ingest", description=__doc__)
    add_arguments(parser)
    return run_command(command, parser.parse_args(argv))
