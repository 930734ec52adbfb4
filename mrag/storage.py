"""Object-storage access through fsspec: local folders and ``s3://`` prefixes (s3fs).

S3 is configured only by the standard AWS environment variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``/``AWS_DEFAULT_REGION``), so the
same settings reach s3fs here and LanceDB through :func:`lance_storage_options`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from mrag.errors import SourceNotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    import fsspec


@dataclass(frozen=True)
class ObjectInfo:
    """One source object as listed: enough to tell whether it changed since the last ingest."""

    uri: str
    size: int
    etag: str
    mtime: float

    @property
    def fingerprint(self) -> str:
        """Changes when the object changes (etag on S3, mtime+size on local disks)."""
        return f"{self.etag or self.mtime}:{self.size}"


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem for a URI and the path inside it (``s3://b/k`` → (S3FileSystem, ``b/k``))."""
    import fsspec

    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    if protocol in ("s3", "s3a"):
        import s3fs

        endpoint = _endpoint()
        fs = s3fs.S3FileSystem(
            endpoint_url=endpoint,
            client_kwargs={"region_name": _region()} if _region() else {},
            # the listing is taken once per job; stale cached listings would hide new objects
            use_listings_cache=False,
        )
        return fs, uri.split("://", 1)[1]
    if uri.startswith("file://"):
        # RFC 8089 file URI: percent-decoded to the bytes of the real name (see local_uri).
        return fsspec.filesystem("file"), local_path(uri)
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def local_uri(path: str) -> str:
    """How a local file is named in mrag's tables: its absolute path, as text.

    A name that is not valid UTF-8 (Linux allows any bytes; Python hands them over as lone
    surrogates, which Arrow cannot store) becomes a ``file://`` URI with every byte outside the
    unreserved set percent-encoded. The mapping is reversible (:func:`local_path`) and cannot
    collide with a plain path, which never starts with ``file://``.
    """
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        from urllib.parse import quote

        return "file://" + quote(os.fsencode(path), safe="/")
    return path


def local_path(uri: str) -> str:
    """The real path behind a local uri (inverse of :func:`local_uri`; plain paths unchanged)."""
    if not uri.startswith("file://"):
        return uri
    from urllib.parse import unquote_to_bytes

    return os.fsdecode(unquote_to_bytes(uri.removeprefix("file://")))


def _region() -> str | None:
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")


def _uri(protocol: str, path: str) -> str:
    return local_uri(path) if protocol == "file" else f"{protocol}://{path}"


def list_objects(sources: Iterable[str], extensions: Iterable[str]) -> Iterator[ObjectInfo]:
    """Lists files under each source (a folder, a prefix or a single object), recursively, in
    one process (a job lists shards in parallel tasks: :func:`listing_shards`).

    Extensions are matched case-insensitively (``.JPG`` is a ``.jpg``); other files are ignored.
    """
    for shard in listing_shards(sources, min_shards=1, max_depth=0):
        yield from list_shard(shard, extensions)


@dataclass(frozen=True)
class ListingShard:
    """A part of a source listed by one task: a folder's files, with or without its
    subfolders, or one object. Shards of a source never overlap and together cover it."""

    uri: str
    recursive: bool


def listing_shards(
    sources: Iterable[str], min_shards: int = 16, max_depth: int = 4
) -> list[ListingShard]:
    """Splits the sources into shards to list in parallel: folders are opened level by level
    (only their entries, never their trees) until there are ``min_shards`` or ``max_depth`` is
    reached; a folder's own files are one non-recursive shard, its unopened subfolders one
    recursive shard each. A flat prefix of millions of keys stays one shard: give such a
    corpus a manifest (an S3 Inventory report) instead."""
    shards: list[ListingShard] = []
    for source in sources:
        protocol = source.split("://", 1)[0] if "://" in source else "file"
        fs, root = filesystem(source)
        if protocol == "file":
            root = os.path.abspath(root)
        if not fs.exists(root):
            raise SourceNotFoundError(f"source {source} does not exist")
        if not fs.isdir(root):
            shards.append(ListingShard(_uri(protocol, root), recursive=False))
            continue
        frontier = [root]
        for _depth in range(max_depth):
            if len(shards) + len(frontier) >= min_shards:
                break
            opened: list[str] = []
            for folder in frontier:
                entries = fs.ls(folder, detail=True)
                if any(e.get("type") != "directory" for e in entries):
                    shards.append(ListingShard(_uri(protocol, folder), recursive=False))
                opened += sorted(
                    e["name"].rstrip("/") for e in entries
                    if e.get("type") == "directory" and e["name"].rstrip("/") != folder.rstrip("/")
                )  # fmt: skip
            frontier = opened
            if not frontier:
                break
        shards += [ListingShard(_uri(protocol, folder), recursive=True) for folder in frontier]
    return shards


def list_shard(shard: ListingShard, extensions: Iterable[str]) -> Iterator[ObjectInfo]:
    """The objects of one shard with a wanted extension (case-insensitive), by name."""
    wanted = tuple(e.lower() for e in extensions)
    protocol = shard.uri.split("://", 1)[0] if "://" in shard.uri else "file"
    fs, root = filesystem(shard.uri)
    if shard.recursive:
        entries = list(fs.find(root, detail=True).values())
    elif fs.isdir(root):
        entries = fs.ls(root, detail=True)
    else:
        entries = [fs.info(root)]
    for entry in sorted(entries, key=lambda e: e["name"]):
        if entry.get("type") == "directory" or not entry["name"].lower().endswith(wanted):
            continue
        yield _object_info(protocol, entry)


def _object_info(protocol: str, entry: dict) -> ObjectInfo:
    return ObjectInfo(
        uri=_uri(protocol, entry["name"]),
        size=int(entry.get("size") or 0),
        etag=str(entry.get("ETag") or entry.get("etag") or "").strip('"'),
        mtime=_mtime(entry),
    )


def stat_object(uri: str) -> ObjectInfo:
    """One object's size, etag and time (a manifest that lists bare URIs)."""
    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    fs, path = filesystem(uri)
    if protocol == "file":
        path = os.path.abspath(path)
    return _object_info(protocol, fs.info(path))


def entry_mtime(entry: dict) -> float:
    """A listing entry's modification time in seconds (local ``mtime``, S3 ``LastModified``)."""
    return _mtime(entry)


def _mtime(entry: dict) -> float:
    value = entry.get("mtime") or entry.get("LastModified") or entry.get("created") or 0.0
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def read_bytes(uri: str, max_bytes: int | None = None) -> bytes:
    """Reads a whole object; refuses objects larger than ``max_bytes`` before reading them."""
    fs, path = filesystem(uri)
    if max_bytes is not None:
        size = fs.size(path)
        if size is not None and size > max_bytes:
            raise ValueError(f"object is {size} bytes, over the {max_bytes}-byte limit")
    return fs.cat_file(path)


#: Read-ahead of a streamed object on object storage: each range request fetches this much, so
#: a decoder's small sequential reads do not each cost a round trip.
READ_AHEAD_BYTES = 4 * 2**20


@contextlib.contextmanager
def open_object(uri: str, max_bytes: int | None = None) -> Iterator[BinaryIO]:
    """A seekable binary stream of one object, closed on exit; refuses objects larger than
    ``max_bytes`` before reading them. On S3 it reads ahead :data:`READ_AHEAD_BYTES` per
    request, and seeks (an MP4 whose index is at its end) cost one range request."""
    fs, path = filesystem(uri)
    size = fs.size(path)
    if max_bytes is not None and size is not None and size > max_bytes:
        raise ValueError(f"object is {size} bytes, over the {max_bytes}-byte limit")
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    if "file" in protocols:
        stream = fs.open(path, "rb")
    else:
        stream = fs.open(path, "rb", block_size=READ_AHEAD_BYTES, cache_type="readahead")
    with stream:
        yield stream


def stream_content_id(stream: BinaryIO, block_bytes: int = 8 * 2**20) -> str:
    """:func:`content_id` of a stream's bytes, read a block at a time (memory: one block); the
    stream is left at its start."""
    digest = hashlib.sha256()
    stream.seek(0)
    while block := stream.read(block_bytes):
        digest.update(block)
    stream.seek(0)
    return digest.hexdigest()[:32]


def lance_storage_options(uri: str) -> dict[str, str]:
    """LanceDB ``storage_options`` for an ``s3://`` database, taken from the AWS variables.

    LanceDB reads most ``AWS_*`` variables itself; passing them explicitly makes http endpoints on
    loopback work (``allow_http``) and keeps Ray workers in step with the driver.
    """
    if not uri.startswith(("s3://", "s3a://")):
        return {}
    options: dict[str, str] = {}
    endpoint = _endpoint()
    if endpoint:
        options["aws_endpoint"] = endpoint
        if endpoint.startswith("http://"):
            options["allow_http"] = "true"
    for env, key in (
        ("AWS_ACCESS_KEY_ID", "aws_access_key_id"),
        ("AWS_SECRET_ACCESS_KEY", "aws_secret_access_key"),
        ("AWS_SESSION_TOKEN", "aws_session_token"),
    ):
        if os.environ.get(env):
            options[key] = os.environ[env]
    if _region():
        options["aws_region"] = _region()
    return options


# Ids of objects and their parts: derived from content and locator, so a re-run computes the
# same keys and a keyed write turns repeated work into a no-op.


def content_id(data: bytes) -> str:
    """``asset_id``: hex SHA-256 of the object's bytes (first 32 hex digits)."""
    return hashlib.sha256(data).hexdigest()[:32]


def chunk_id(asset_id: str, locator: str) -> str:
    """``chunk_id``: stable for an asset and a locator such as ``image`` or ``page=3``."""
    return hashlib.sha256(f"{asset_id}|{locator}".encode()).hexdigest()[:32]


def sql_literal(value: str) -> str:
    """A string as a LanceDB (DataFusion SQL) literal, quotes escaped: safe for user values."""
    return "'" + value.replace("'", "''") + "'"
