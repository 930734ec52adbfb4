"""Ingest job: list → skip already-ingested → read + decode → embed (actor pool) → write.

Run locally (starts a loopback-only Ray)::

    python -m pipelines.ingest s3://bucket/images/ --db ./mrag-db --profile offline
    mrag ingest s3://bucket/images/ --db ./mrag-db --profile offline   # the same job

Submit to a cluster (workers read the same ``AWS_*`` settings)::

    ray job submit --working-dir . -- python -m pipelines.ingest s3://bucket/images/ \
        --db s3://bucket/mrag-db --set ingest.embed_num_gpus=1 --set ingest.embed_actors=4
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from mrag import storage
from mrag.config import add_config_arguments, config_from_args, object_kind
from mrag.decode.stage import DecodeStage
from mrag.embed.stage import EmbedStage
from mrag.errors import ConfigError
from mrag.kinds import KINDS
from mrag.models import get_model_spec, weights_id
from mrag.pipelines import metrics
from mrag.pipelines.command import run_command
from mrag.pipelines.listing import listing_dataset, listing_from_objects, planned_dataset
from mrag.ray_runtime import init_ray, quiet_ray_data
from mrag.spaces import TEXT_BEARING, get_space, spaces_for_modalities
from mrag.store import schema
from mrag.store.commit import Committer, run_compaction_tasks
from mrag.store.fragments import FragmentWriter, WriteTargets
from mrag.store.lance import Store
from mrag.store.plan import plan_listing

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable, Iterator, Sequence

    import numpy as np
    import pyarrow as pa
    import ray.data

    from mrag.config import IngestConfig, MragConfig
    from mrag.decode import SpeechSettings
    from mrag.models import ModelSpec

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
    pruned: int = 0  # objects gone from the source whose rows --sync removed
    index: str = ""
    elapsed_s: float = 0.0
    ray_startup_s: float = 0.0
    first_commit_s: float | None = None  # job start → first committed row
    commits: int = 0
    run_id: str = ""
    report_uri: str = ""

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
            + (f"; first commit after {self.first_commit_s:.1f} s" if self.first_commit_s else "")
            + (f"; {self.pruned} gone objects removed" if self.pruned else "")
        )


#: Each writer task writes ``ingest.write_batch_rows`` rows as one fragment; the driver commits
#: the first fragments at once, then waits this long, doubling up to ``ingest.commit_interval_s``.
WRITE_BATCH_WAIT_S = 5.0
#: Ray Data output block cap for jobs with documents: one document makes hundreds of chunk rows,
#: and at Ray's default (128 MiB) a model actor hands over a decode task's whole output (thousands
#: of rows, minutes of work) as one block, so nothing could be committed before it ended.
TEXT_BLOCK_BYTES = 256 * 2**10
PROGRESS_EVERY_S = 5.0


class Progress:
    """Throttled progress lines on stderr, terminal or not (objects, chunks/s, errors, ETA)."""

    def __init__(self, total_objects: int, every_s: float = PROGRESS_EVERY_S) -> None:
        self.total = total_objects
        self.every_s = every_s
        self.started = time.perf_counter()
        self._last = self.started

    def update(self, objects: int, chunks: int, errors: int, *, final: bool = False) -> None:
        now = time.perf_counter()
        if not final and now - self._last < self.every_s:
            return
        self._last = now
        elapsed = max(now - self.started, 1e-9)
        rate = objects / elapsed
        eta = (self.total - objects) / rate if rate > 0 else float("nan")
        eta_text = "done" if final else (f"ETA {eta:.0f} s" if math.isfinite(eta) else "ETA ?")
        print(
            f"mrag ingest: {objects}/{self.total} objects, {chunks} chunks "
            f"({chunks / elapsed:.1f} chunks/s), {errors} errors, {elapsed:.0f} s, {eta_text}",
            file=sys.stderr,
            flush=True,
        )


def _decode(batch: dict[str, np.ndarray], **kwargs: Any) -> Iterator[pa.Table]:
    """Tables as the objects are decoded (a generator UDF): Ray Data takes each as soon as it
    exists, so a long recording's rows do not wait for the rest of its batch."""
    import pyarrow.compute as pc

    read_bytes = int(sum(batch["size"]))
    started = time.perf_counter()
    for table in DecodeStage(**kwargs).tables(batch):
        errors = table.filter(pc.not_equal(table["error_class"], ""))
        metrics.decoded(
            zip(errors["error_class"].to_pylist(), errors["error_stage"].to_pylist(), strict=True),
            read_bytes,
        )
        read_bytes = 0
        metrics.stage_call("decode", time.perf_counter() - started)
        yield table
        started = time.perf_counter()


class MeteredEmbedStage(EmbedStage):
    """The embed stage, its calls timed into ``mrag_ingest_stage_seconds{stage="embed"}``."""

    def __call__(self, rows: pa.Table) -> pa.Table:
        started = time.perf_counter()
        embedded = super().__call__(rows)
        metrics.stage_call("embed", time.perf_counter() - started)
        return embedded


def decode_task_count(n_objects: int, ingest: IngestConfig) -> int:
    """Read blocks (one decode task each): about ``decode_task_objects`` objects per task, and
    at least ``decode_tasks`` of them so that every concurrent decode task has work."""
    wanted = max(math.ceil(n_objects / ingest.decode_task_objects), ingest.decode_tasks)
    return max(1, min(wanted, n_objects, 2000))


@dataclass(frozen=True)
class JobModels:
    """The models a job's objects need: the spaces their chunk modalities are embedded in, and
    the speech recogniser when some kind transcribes (recordings, videos)."""

    kinds: frozenset[str]
    spaces: dict[str, tuple[ModelSpec, str]]  # column → (spec, weights override)
    speech: SpeechSettings | None

    @classmethod
    def for_objects(cls, config: MragConfig, uris: Iterable[str]) -> JobModels:
        extensions = config.ingest.extensions
        return cls.for_kinds(config, {object_kind(u, extensions) or "unknown" for u in uris})

    @classmethod
    def for_kinds(cls, config: MragConfig, kinds: Iterable[str]) -> JobModels:
        ingest = config.ingest
        kinds = frozenset(kinds)
        produced = {m for k in kinds if k in KINDS for m in KINDS[k].produces}
        wanted = spaces_for_modalities(produced)
        spaces = {
            column: (get_model_spec(config.space_model(column)), config.space_weights(column))
            for column in config.active_spaces()
            if column in wanted
        }
        speech = None
        speech_model = ingest.speech_model
        if (
            speech_model
            and speech_model != "none"
            and any(KINDS[k].uses_speech for k in kinds if k in KINDS)
        ):
            from mrag.decode import SpeechSettings

            on_gpu = ingest.decode_num_gpus > 0
            speech = SpeechSettings(
                get_model_spec(speech_model),
                ingest.speech_weights,
                device="cuda" if on_gpu else "cpu",
                threads=max(1, math.ceil(ingest.decode_num_cpus)),
                batch_size=ingest.speech_batch_size or (16 if on_gpu else 0),
            )
        return cls(kinds, spaces, speech)

    @property
    def has_text(self) -> bool:
        """Documents, transcripts: rows of many chunks per object, sorted into text batches."""
        return any(set(KINDS[k].produces) & set(TEXT_BEARING) for k in self.kinds if k in KINDS)

    @property
    def keeps_audio(self) -> bool:
        """Some space of the job embeds sound: audio rows carry their samples to it."""
        return any(get_space(column).needs_audio for column in self.spaces)

    def provenance(self, config: MragConfig) -> schema.ChunkProvenance:
        """Finds every model's weights (or fails, saying how to provide them) and names them:
        the database must hold vectors of one model and one set of weights per column."""
        return {
            column: schema.VectorSource(spec.name, weights_id(spec, weights, seed=config.seed))
            for column, (spec, weights) in self.spaces.items()
        }

    def widths(self) -> dict[str, int]:
        return {column: spec.embed_dim for column, (spec, _) in self.spaces.items()}


def build_dataset(
    config: MragConfig,
    todo: ray.data.Dataset,
    n_objects: int,
    models: JobModels,
    targets: WriteTargets,
    provenance: schema.ChunkProvenance,
) -> ray.data.Dataset:
    """The Ray Data plan from planned objects to write receipts: decode tasks → model actors →
    fragment writers, each stage with the resources ``ingest.*`` declares for it (placement as
    data: custom resources, GPUs, memory, concurrency, an autoscaling actor pool).

    The writers write the Lance files where the rows are and return only receipts (fragment
    metadata, per-object keys and row counts): no vector reaches the driver, which commits the
    metadata (:class:`~mrag.store.commit.Committer`).
    """
    from ray.data import ActorPoolStrategy, TaskPoolStrategy

    ingest = config.ingest
    clip_spec = get_model_spec(config.clip_model)
    blocks = decode_task_count(n_objects, ingest)
    objects = todo.repartition(blocks)
    if models.has_text:  # this dataset's context only; image jobs keep Ray's default
        objects.context.target_max_block_size = TEXT_BLOCK_BYTES
    pool = (
        ActorPoolStrategy(min_size=ingest.embed_actors, max_size=ingest.embed_actors_max)
        if ingest.embed_actors_max > ingest.embed_actors
        else ActorPoolStrategy(size=ingest.embed_actors)
    )
    return (
        objects.map_batches(
            _decode,
            fn_kwargs={
                "ingest": ingest,
                # The model's own resize/crop (open_clip's config, via the spec), done here on
                # cheap CPU tasks; the embed actor only normalises.
                "preprocess": clip_spec.image_preprocess,
                "text_spec": get_model_spec(config.text_model),
                "text_weights": config.text_weights,
                "speech": models.speech,
                "keep_audio": models.keeps_audio,
            },
            batch_size=ingest.read_batch_size,
            batch_format="numpy",
            num_cpus=ingest.decode_num_cpus,
            num_gpus=ingest.decode_num_gpus if models.speech else 0,
            # Bounded: a burst of worker processes starting at once would steal the CPU the
            # model actor needs to load; decode is ~10x cheaper than the forward pass anyway.
            # Ray Data spreads tasks over the nodes that have their resources by default.
            compute=TaskPoolStrategy(size=ingest.decode_tasks),
            **_placement(ingest.decode_resources, ingest.decode_memory_mb),
        )
        .map_batches(
            MeteredEmbedStage,
            # Only the spaces this job's rows need: an image-only job never loads the text
            # encoder.
            fn_constructor_kwargs={"spaces": models.spaces, "ingest": ingest, "seed": config.seed},
            # Text calls are sorted by length into embed_batch_size batches: a wider window
            # means less padding (measured ~30% faster than arrival order).
            batch_size=ingest.text_sort_window if models.has_text else ingest.embed_batch_size,
            batch_format="pyarrow",
            compute=pool,
            num_cpus=ingest.embed_num_cpus,
            num_gpus=ingest.embed_num_gpus,
            **_placement(ingest.embed_resources, ingest.embed_memory_mb),
        )
        .map_batches(
            _write_fragments,
            fn_kwargs={"targets": targets, "provenance": provenance},
            batch_size=ingest.write_batch_rows,
            batch_format="pyarrow",
            num_cpus=ingest.write_num_cpus,
            compute=TaskPoolStrategy(size=ingest.write_tasks),
            **_placement(ingest.write_resources, ingest.write_memory_mb),
        )
    )


def _placement(resources: dict[str, float], memory_mb: int) -> dict[str, Any]:
    placement: dict[str, Any] = {}
    if resources:
        placement["resources"] = dict(resources)
    if memory_mb:
        placement["memory"] = memory_mb * 2**20
    return placement


#: Fault injection (crash tests only): the first fragment writer to claim this marker file kills
#: its own process in the middle of writing a fragment.
KILL_WRITER_ENV = "MRAG_FAULT_KILL_WRITER_ONCE"


def _write_fragments(
    rows: pa.Table, targets: WriteTargets, provenance: schema.ChunkProvenance
) -> pa.Table:
    """Ray Data task: embedded rows → Lance files on this worker → one receipt row."""
    marker = os.environ.get(KILL_WRITER_ENV)
    batch_written = _kill_self if marker and _claim(marker) else None
    started = time.perf_counter()
    receipt = FragmentWriter(targets, provenance, batch_written=batch_written)(rows)
    metrics.stage_call("write", time.perf_counter() - started)
    return receipt


def _claim(marker: str) -> bool:
    try:
        with open(marker, "x"):
            return True
    except FileExistsError:
        return False


def _kill_self(_batch: int) -> None:
    import signal

    os.kill(os.getpid(), signal.SIGKILL)


def _compact_in_tasks(
    ingest: IngestConfig, uri: str, storage_options: dict[str, str] | None, tasks: list[str]
) -> list[str]:
    """The committer's compaction rewrites, one Ray task each, placed as the writers are: the
    rows are read and written there, never in the driver."""
    import ray

    remote = ray.remote(run_compaction_tasks).options(
        num_cpus=ingest.write_num_cpus, **_placement(ingest.write_resources, ingest.write_memory_mb)
    )
    parts = ray.get([remote.remote(uri, storage_options, [task]) for task in tasks])
    return [result for part in parts for result in part]


def _todo_rows(batch: pa.Table) -> pa.Table:
    return batch.filter(batch["todo"]).drop_columns(["todo", "kind"])


def _tally(batch: pa.Table) -> pa.Table:
    """Per block: objects listed, to do, and the kinds to do (a few rows to the driver)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    todo = batch.filter(batch["todo"])
    kinds = pc.unique(todo["kind"]).to_pylist() if todo.num_rows else []
    return pa.table(
        {
            "listed": [batch.num_rows],
            "todo": [todo.num_rows],
            "kinds": pa.array([kinds], pa.list_(pa.string())),
        }
    )


def listing_table(objects: Iterable[storage.ObjectInfo]) -> pa.Table:
    """The listing as one Arrow table (``uri, size, etag, mtime, fingerprint``): for tests and
    small in-process uses; a job lists into a Ray dataset (:mod:`mrag.pipelines.listing`)."""
    return listing_from_objects(list(objects))


def plan(store: Store, listing: pa.Table, retry_failed: bool) -> tuple[pa.Table, int]:
    """The listed objects to (re)do, in listing order, and how many are already done (one
    process; a job plans in tasks, :func:`mrag.pipelines.listing.planned_dataset`)."""
    planned = plan_listing(store, listing, retry_failed)
    todo = planned.filter(planned["todo"]).drop_columns(["todo", "stale"])
    return todo, listing.num_rows - todo.num_rows


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": sys.version.split()[0]}
    for package in ("mrag", "ray", "lancedb", "pylance", "pyarrow", "torch", "open_clip_torch",
                    "transformers"):  # fmt: skip
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def write_run_report(db_uri: str, report: dict[str, Any]) -> str:
    """Writes the run's JSON report beside the tables (``<db>/_runs/<time>-<run id>.json``);
    returns its URI."""
    fs, root = storage.filesystem(db_uri)
    name = f"{report['started_at'].replace(':', '').replace('-', '')}-{report['run_id']}.json"
    path = f"{root.rstrip('/')}/_runs/{name}"
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "w") as out:
        json.dump(report, out, indent=2)
    return f"{db_uri.rstrip('/')}/_runs/{name}"


def run_ingest(
    config: MragConfig,
    sources: Sequence[str],
    *,
    sync: bool = False,
    progress: bool = True,
    manifest: str | None = None,
) -> IngestSummary:
    """Ingests every new or changed object under ``sources`` (or listed in ``manifest``) into
    ``config.db_uri``.

    Fails fast (before any work) when the weights cannot be found, or when the database's vectors
    were made by another model or other weights (``ConfigError`` naming both). Objects whose
    fingerprint (etag or mtime, and size) matches a previous run are skipped, so re-running adds
    no rows; a run killed at any point leaves nothing the next run would skip wrongly
    (docs/architecture.md, "Commit protocol"). The listing and the plan are Ray tasks over
    shards; the driver holds neither. With ``sync``, the rows of objects gone from under
    ``sources`` are removed too (the one step that gathers the listed URIs in the driver).
    Progress goes to stderr every few seconds; a JSON report of the run is written beside the
    tables.
    """
    summary = IngestSummary(run_id=uuid.uuid4().hex[:12])
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    ingest = config.ingest
    store = Store(config.db_uri)
    if not manifest:
        storage.listing_shards(sources, min_shards=1, max_depth=0)  # a missing source fails now
    summary.ray_startup_s = init_ray(config.ray_address, metrics_port=config.ray_metrics_port)
    quiet_ray_data()
    started += summary.ray_startup_s
    listing = listing_dataset(sources, ingest.extensions, manifest=manifest)
    planned = planned_dataset(listing, config.db_uri, ingest.retry_failed, ingest.extensions)
    planned = planned.materialize()
    tallies = planned.map_batches(_tally, batch_format="pyarrow").take_all()
    summary.seen = sum(t["listed"] for t in tallies)
    n_todo = sum(t["todo"] for t in tallies)
    summary.skipped = summary.seen - n_todo
    kinds = {k for t in tallies for k in t["kinds"]}
    if sync:
        from mrag.pipelines.prune import prune_gone

        uris = planned.select_columns(["uri"]).to_arrow_refs()
        import ray

        listed = [u for ref in uris for u in ray.get(ref)["uri"].to_pylist()]
        summary.pruned = prune_gone(store, sources, listed).objects
    # Fails here, before any work, when a model's weights cannot be found or the database's
    # vectors were made by another model or other weights.
    models = JobModels.for_kinds(config, kinds)
    provenance = models.provenance(config)
    store.ensure_tables(models.widths(), provenance)
    committer = Committer(
        config.db_uri,
        run_id=summary.run_id,
        first_wait_s=WRITE_BATCH_WAIT_S,
        max_wait_s=ingest.commit_interval_s,
        compactor=functools.partial(_compact_in_tasks, ingest),
    )
    if n_todo:
        todo = planned.map_batches(_todo_rows, batch_format="pyarrow")
        targets = WriteTargets.for_store(store)
        dataset = build_dataset(config, todo, n_todo, models, targets, provenance)
        shown = Progress(n_todo) if progress else None
        # Fault injection (crash tests only): hold the driver this long after each commit, so
        # a test can kill it between two commits of a job that would otherwise finish first.
        hold_s = float(os.environ.get("MRAG_FAULT_COMMIT_DELAY_S") or 0)

        def commit() -> None:
            known, statuses = len(committer.commits), dict(committer.status_counts)
            committer.commit()
            finished = {k: n - statuses.get(k, 0) for k, n in committer.status_counts.items()}
            metrics.committed(committer.commits[known:], finished)
            if summary.first_commit_s is None and committer.commits:
                summary.first_commit_s = time.perf_counter() - started
            if hold_s:
                time.sleep(hold_s)

        for receipts in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
            committer.add(receipts)
            if committer.due():
                commit()
            if shown:
                shown.update(*_progress_figures(committer))
        commit()
        if shown:
            shown.update(*_progress_figures(committer), final=True)
        if committer.incomplete:  # a bug upstream (rows lost): they stay unmarked, redone next run
            log.error("%d objects lost rows and stay unmarked: %s", len(committer.incomplete),
                      committer.incomplete[:5])  # fmt: skip
    counts = committer.status_counts
    summary.ingested = counts["ok"] + counts["partial"]
    summary.partial = {c: n for (s, c), n in committer.error_counts.items() if s == "partial"}
    summary.failed = {c: n for (s, c), n in committer.error_counts.items() if s == "failed"}
    summary.chunks = sum(c.rows for c in committer.commits if c.table == schema.CHUNKS)
    summary.elapsed_s = time.perf_counter() - started
    summary.commits = len(committer.commits)
    if n_todo:
        store.optimize()
        if config.index.auto_after_ingest:
            from mrag.pipelines.index import build_indices

            summary.index = build_indices(store, config.index).render()
    report = {
        "run_id": summary.run_id,
        "started_at": started_at,
        "db_uri": config.db_uri,
        "sources": list(sources),
        "manifest": manifest,
        "sync": sync,
        "summary": summary.to_dict(),
        "errors_by_class": dict(Counter(summary.failed) + Counter(summary.partial)),
        "models": {
            column: {"model": source.model, "weights_id": source.weights_id}
            for column, source in provenance.items()
        },
        "pipeline_version": schema.PIPELINE_VERSION,
        "versions": _versions(),
        "incomplete_objects": committer.incomplete,
        "driver": {
            "receipt_bytes": committer.received_bytes,
            "written_bytes": committer.written_bytes,
            "rewritten_receipts": committer.rewritten_receipts,
            "dropped_repeat_rows": committer.dropped_rows,
        },
        "commits": [c.to_dict() for c in committer.commits],
        "compactions": committer.compactions,
    }
    summary.report_uri = write_run_report(config.db_uri, report)
    return summary


def _progress_figures(committer: Committer) -> tuple[int, int, int]:
    counts = committer.status_counts
    chunks = sum(c.rows for c in committer.commits if c.table == schema.CHUNKS)
    return sum(counts.values()), chunks, counts["partial"] + counts["failed"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "sources", nargs="*", help="folders, files or s3:// prefixes (or give --manifest)"
    )
    parser.add_argument(
        "--manifest",
        help="a list of objects to ingest instead of listing: Parquet or CSV with a uri column, "
        "or an S3 Inventory manifest.json",
    )
    add_config_arguments(parser)
    parser.add_argument("--address", help="Ray cluster address (default: local Ray)")
    parser.add_argument(
        "--json", action="store_true", help="print the summary as one JSON document"
    )
    parser.add_argument(
        "--sync",
        action="store_true",
        help="also remove the rows of objects gone from under the sources",
    )


def command(args: argparse.Namespace) -> int:
    config = config_from_args(args, ray_address=args.address)
    stdout = sys.stdout
    if args.json:  # Ray prints worker and raylet notices to stdout: they go to stderr instead
        sys.stdout = sys.stderr
    try:
        if not args.sources and not args.manifest:
            raise ConfigError("give sources to list, or --manifest")
        summary = run_ingest(config, args.sources, sync=args.sync, manifest=args.manifest)
    finally:
        sys.stdout = stdout
    print(json.dumps(summary.to_dict()) if args.json else summary.render())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pipelines.ingest``: the same flags as ``mrag ingest``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipelines.ingest", description=__doc__)
    add_arguments(parser)
    return run_command(command, parser.parse_args(argv))
