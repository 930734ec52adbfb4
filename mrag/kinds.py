"""Object kinds as data: which file extensions a kind has, which decoder reads it, what it yields.

The decode stage looks an object's kind up here by extension and calls the kind's decoder (the
``decoder`` path, imported only on the decode workers), a generator of chunk rows from an open,
seekable stream. A new media kind is one :func:`register_kind` call plus its decoder module.
Pure data: importing this module imports no decoder.
"""

from __future__ import annotations

from dataclasses import dataclass

from mrag.spaces import CHUNK_MODALITIES


@dataclass(frozen=True)
class ObjectKind:
    """One kind of source object.

    Attributes:
        name: the kind (``assets.modality``).
        extensions: lowercase, with the dot.
        decoder: ``module:function`` of a :class:`mrag.decode.Decoder`.
        produces: the chunk modalities its rows can have (which embedding spaces a job loads).
        streamed: decoded from the stream as it is read, memory bounded by a window, so its
            size limit is ``ingest.max_media_bytes`` rather than ``ingest.max_object_bytes``.
        in_memory: its decoder needs the whole object at once (images, PDFs, HTML): the stage
            reads it once and hashes and decodes the same bytes; otherwise it hashes the
            stream in one pass and hands the decoder the stream.
        uses_speech: its decoder transcribes speech (the job sets up a recogniser).
    """

    name: str
    extensions: tuple[str, ...]
    decoder: str
    produces: tuple[str, ...]
    streamed: bool = False
    in_memory: bool = True
    uses_speech: bool = False

    def __post_init__(self) -> None:
        unknown = [m for m in self.produces if m not in CHUNK_MODALITIES]
        if unknown:
            raise ValueError(f"kind {self.name!r}: unknown chunk modalities {unknown}")


KINDS: dict[str, ObjectKind] = {}


def register_kind(kind: ObjectKind) -> ObjectKind:
    KINDS[kind.name] = kind
    return kind


def extension_kinds() -> dict[str, str]:
    """The one table of what a file extension means: ``{".jpg": "image", ...}``."""
    return {ext: kind.name for kind in KINDS.values() for ext in kind.extensions}


register_kind(
    ObjectKind(
        name="image",
        extensions=(".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"),
        decoder="mrag.decode.image:decode_image_object",
        produces=("image",),
    )
)
register_kind(
    ObjectKind(
        name="text",
        extensions=(".txt", ".text"),
        decoder="mrag.decode.documents:decode_plain_text",
        produces=("text",),
        in_memory=False,
    )
)
register_kind(
    ObjectKind(
        name="markdown",
        extensions=(".md", ".markdown"),
        decoder="mrag.decode.documents:decode_markdown",
        produces=("text",),
    )
)
register_kind(
    ObjectKind(
        name="html",
        extensions=(".html", ".htm"),
        decoder="mrag.decode.documents:decode_html",
        produces=("text",),
    )
)
register_kind(
    ObjectKind(
        name="pdf",
        extensions=(".pdf",),
        decoder="mrag.decode.documents:decode_pdf_object",
        produces=("pdf_page", "text"),
    )
)
register_kind(
    ObjectKind(
        name="audio",
        extensions=(".wav", ".mp3", ".m4a", ".flac", ".ogg", ".opus", ".aac"),
        decoder="mrag.decode.media:decode_audio",
        produces=("audio_segment",),
        streamed=True,
        in_memory=False,
        uses_speech=True,
    )
)
register_kind(
    ObjectKind(
        name="video",
        extensions=(".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".ts"),
        decoder="mrag.decode.media:decode_video",
        produces=("video_frame", "video_segment", "audio_segment"),
        streamed=True,
        in_memory=False,
        uses_speech=True,
    )
)
