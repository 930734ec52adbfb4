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
from mrag.kinds import KINDS
from mrag.models import get_model_spec, weights_id
from mrag.pipelines.command import run_command
from mrag.ray_runtime import init_ray, quiet_ray_data
from mrag.spaces import TEXT_BEARING, get_space, spaces_for_modalities
from mrag.store import schema
from mrag.store.lance import Store
from mrag.store.writer import LanceWriteStage

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


#: Commits are sized by rows (``ingest.write_batch_rows``), by bytes and by time, whichever
#: comes first: a commit holds at most about this much data, and while rows keep coming no more
#: than this passes between commits.
WRITE_BATCH_BYTES = 64 * 2**20
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
    yield from DecodeStage(**kwargs).tables(batch)


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
        ingest = config.ingest
        kinds = frozenset(object_kind(u, ingest.extensions) or "unknown" for u in uris)
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
    config: MragConfig, objects: pa.Table, models: JobModels | None = None
) -> ray.data.Dataset:
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
    models = models or JobModels.for_objects(config, objects["uri"].to_pylist())
    clip_spec = get_model_spec(config.clip_model)
    read_blocks = decode_task_count(objects.num_rows, ingest)
    step = math.ceil(objects.num_rows / read_blocks)
    listing = ray.data.from_arrow(
        [objects.slice(start, step) for start in range(0, max(objects.num_rows, 1), step)]
    )
    if models.has_text:  # this dataset's context only; image jobs keep Ray's default
        listing.context.target_max_block_size = TEXT_BLOCK_BYTES
    return listing.map_batches(
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
        compute=TaskPoolStrategy(size=ingest.decode_tasks),
    ).map_batches(
        EmbedStage,
        # Only the spaces this job's rows need: an image-only job never loads the text encoder.
        fn_constructor_kwargs={"spaces": models.spaces, "ingest": ingest, "seed": config.seed},
        # Text calls are sorted by length into embed_batch_size batches: a wider window
        # means less padding (measured ~30% faster than arrival order).
        batch_size=ingest.text_sort_window if models.has_text else ingest.embed_batch_size,
        batch_format="pyarrow",
        compute=ActorPoolStrategy(size=ingest.embed_actors),
        num_cpus=ingest.embed_num_cpus,
        num_gpus=ingest.embed_num_gpus,
        memory=ingest.embed_memory_mb * 2**20,
    )


def _write_batches(
    dataset: ray.data.Dataset,
    min_rows: int,
    max_bytes: int = WRITE_BATCH_BYTES,
    max_wait_s: float = WRITE_BATCH_WAIT_S,
) -> Iterator[pa.Table]:
    """Embedded blocks as they finish, gathered into commits of ``min_rows`` rows, or fewer
    once they hold ``max_bytes`` or ``max_wait_s`` has passed since the last commit (or the
    start): the first rows of a job are committed as soon as they exist, and later ones at
    least every ``max_wait_s`` while blocks keep coming.

    Gathered here rather than with ``iter_batches(batch_size=...)``, which holds back the first
    batch until its prefetch buffer is full: each commit lands as soon as its rows exist.
    """
    import pyarrow as pa

    pending: list[pa.Table] = []
    pending_rows = pending_bytes = 0
    last_commit = time.perf_counter()
    for block in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        pending.append(block)
        pending_rows += block.num_rows
        pending_bytes += block.nbytes
        overdue = time.perf_counter() - last_commit >= max_wait_s
        if pending_rows >= min_rows or pending_bytes >= max_bytes or overdue:
            yield pa.concat_tables(pending)
            pending, pending_rows, pending_bytes = [], 0, 0
            last_commit = time.perf_counter()
    if pending:
        yield pa.concat_tables(pending)


#: Objects per page of the listing: the lister's output is turned into Arrow a page at a time,
#: so the driver never holds a Python object per listed file.
LISTING_PAGE = 10_000


def _listing_schema() -> pa.Schema:
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


def listing_table(objects: Iterable[storage.ObjectInfo]) -> pa.Table:
    """The listing as one Arrow table (``uri, size, etag, mtime, fingerprint``), consumed from
    the streaming lister page by page."""
    import pyarrow as pa

    listing_schema = _listing_schema()
    batches = []
    page: list[storage.ObjectInfo] = []

    def flush() -> None:
        columns = {
            "uri": [o.uri for o in page],
            "size": [o.size for o in page],
            "etag": [o.etag for o in page],
            "mtime": [o.mtime for o in page],
            "fingerprint": [o.fingerprint for o in page],
        }
        batches.append(pa.record_batch(columns, schema=listing_schema))
        page.clear()

    for obj in objects:
        page.append(obj)
        if len(page) >= LISTING_PAGE:
            flush()
    if page:
        flush()
    return pa.Table.from_batches(batches, schema=listing_schema)


def plan(store: Store, listing: pa.Table, retry_failed: bool) -> tuple[pa.Table, int]:
    """The listed objects to (re)do (in listing order), and how many are already done.

    Done means an ``assets`` row with the listed fingerprint, and status ``ok`` (or any status
    unless ``retry_failed``): the commit protocol writes that row only after every
    chunk and error row of the object. A left join in Arrow, not a Python dict of the table.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    listing = listing.append_column("position", pa.array(range(listing.num_rows), pa.int64()))
    assets = store.asset_table().rename_columns(["uri", "done_fingerprint", "status"])
    joined = listing.select(["uri", "fingerprint", "position"]).join(
        assets, "uri", join_type="left outer"
    )
    final = ["ok"] if retry_failed else ["ok", "partial", "failed"]
    same = pc.fill_null(pc.equal(joined["fingerprint"], joined["done_fingerprint"]), False)
    done = pc.and_(same, pc.fill_null(pc.is_in(joined["status"], pa.array(final)), False))
    remaining = joined.filter(pc.invert(done))["position"]
    todo = listing.take(pc.take(remaining, pc.sort_indices(remaining))).drop_columns(["position"])
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
    config: MragConfig, sources: Sequence[str], *, sync: bool = False, progress: bool = True
) -> IngestSummary:
    """Ingests every new or changed object under ``sources`` into ``config.db_uri``.

    Fails fast (before any work) when the weights cannot be found, or when the database's vectors
    were made by another model or other weights (``ConfigError`` naming both). Objects whose
    fingerprint (etag or mtime, and size) matches a previous run are skipped, so re-running adds
    no rows; a run killed at any point leaves nothing the next run would skip wrongly
    (docs/architecture.md, "Commit protocol"). With ``sync``, the rows of objects gone from
    under ``sources`` are removed too. Progress goes to stderr every few seconds; a JSON report
    of the run is written beside the tables.
    """
    summary = IngestSummary(run_id=uuid.uuid4().hex[:12])
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    store = Store(config.db_uri)
    listing = listing_table(storage.list_objects(sources, config.ingest.extensions))
    if sync:
        from mrag.pipelines.prune import prune_gone

        summary.pruned = prune_gone(store, sources, listing["uri"]).objects
    todo, summary.skipped = plan(store, listing, config.ingest.retry_failed)
    summary.seen = listing.num_rows
    del listing
    # Fails here, before any work, when a model's weights cannot be found or the database's
    # vectors were made by another model or other weights.
    models = JobModels.for_objects(config, todo["uri"].to_pylist())
    provenance = models.provenance(config)
    store.ensure_tables(models.widths(), provenance)
    writer = LanceWriteStage(config.db_uri, provenance, run_id=summary.run_id)
    if todo.num_rows:
        # Every row of an object to (re)do goes first: an old version's, or a killed run's
        # partial one (chunks committed, no assets row). Then every append below is a new key.
        store.forget(todo["uri"].to_pylist())
        summary.ray_startup_s = init_ray(config.ray_address)
        quiet_ray_data()
        started += summary.ray_startup_s
        dataset = build_dataset(config, todo, models)
        shown = Progress(todo.num_rows) if progress else None
        error_class: dict[str, str] = {}  # uri → why it failed or was cut short
        # Fault injection (crash tests only): hold the driver this long after each commit, so
        # a test can kill it between two commits of a job that would otherwise finish first.
        hold_s = float(os.environ.get("MRAG_FAULT_COMMIT_DELAY_S") or 0)
        for rows in _write_batches(dataset, config.ingest.write_batch_rows):
            written = writer(rows)
            if hold_s:
                time.sleep(hold_s)
            if summary.first_commit_s is None and writer.commits:
                summary.first_commit_s = time.perf_counter() - started
            classes = written["error_class"].to_pylist()
            for uri, cls in zip(written["uri"].to_pylist(), classes, strict=True):
                if cls:
                    error_class[uri] = cls
            summary.chunks += sum(1 for cls in classes if not cls)
            if shown:
                shown.update(len(writer.finished), summary.chunks, len(error_class))
        if shown:
            shown.update(len(writer.finished), summary.chunks, len(error_class), final=True)
        status = writer.finished
        if writer.incomplete:  # a bug upstream (rows lost): they stay unmarked, redone next run
            log.error("%d objects lost rows and stay unmarked: %s", len(writer.incomplete),
                      writer.incomplete[:5])  # fmt: skip
        summary.ingested = sum(1 for s in status.values() if s != "failed")
        summary.partial = dict(Counter(error_class[u] for u, s in status.items() if s == "partial"))
        summary.failed = dict(Counter(error_class[u] for u, s in status.items() if s == "failed"))
    summary.elapsed_s = time.perf_counter() - started
    summary.commits = len(writer.commits)
    if todo.num_rows:
        store.optimize()
        if config.index.auto_after_ingest:
            from mrag.pipelines.index import build_indices

            summary.index = build_indices(store, config.index).render()
    report = {
        "run_id": summary.run_id,
        "started_at": started_at,
        "db_uri": config.db_uri,
        "sources": list(sources),
        "sync": sync,
        "summary": summary.to_dict(),
        "errors_by_class": dict(Counter(summary.failed) + Counter(summary.partial)),
        "models": {
            column: {"model": source.model, "weights_id": source.weights_id}
            for column, source in provenance.items()
        },
        "pipeline_version": schema.PIPELINE_VERSION,
        "versions": _versions(),
        "incomplete_objects": writer.incomplete,
        "commits": [c.to_dict() for c in writer.commits],
    }
    summary.report_uri = write_run_report(config.db_uri, report)
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", nargs="+", help="folders, files or s3:// prefixes")
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
        summary = run_ingest(config, args.sources, sync=args.sync)
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
