"""Embedding spaces as data: one registry entry per space, read by every layer that needs one.

A space is a vector column of ``chunks``. Its entry says which model fills it (per profile, or
from config), which chunk modalities it embeds, which query kinds it can embed, and the ranked
lists it offers a retrieval plan. The table schema and provenance columns, the retrieval plan,
the query encoders (in process and in Serve), search and the embed stage are all built from
:data:`SPACES`, so a new space is one :func:`register_space` call plus its embedder class (the
``embedder`` path, imported only where the model runs). Its width is the model spec's
``embed_dim``.

This module is pure data: importing it loads no model and no heavy library.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Every chunk modality the ``chunks`` table holds. Audio and video chunks carry ``start_s`` and
#: ``end_s``; PDF pages and their text ``page``; text ``char_start``/``char_end``.
CHUNK_MODALITIES: tuple[str, ...] = (
    "image", "text", "pdf_page", "video_frame", "video_segment", "audio_segment",
)  # fmt: skip
#: Chunks with text of their own: raw text, OCR, transcripts.
TEXT_BEARING: tuple[str, ...] = ("text", "video_segment", "audio_segment")
#: Chunks with pixels: the image tower of a vision-language space embeds them.
VISUAL: tuple[str, ...] = ("image", "pdf_page", "video_frame", "video_segment")
#: What a query can be.
QUERY_KINDS: tuple[str, ...] = ("text", "image")
#: The full-text "space": BM25 over ``text``; it has no vectors and no model.
BM25 = "bm25"


@dataclass(frozen=True)
class SpaceList:
    """A ranked list a space offers the retrieval plan by default (``retrieval.lists`` key
    ``name``): queries of kind ``query`` searched over chunks of ``modalities`` (empty: every
    chunk with a vector in the space), fused with ``weight``."""

    name: str
    query: str
    modalities: tuple[str, ...] = ()
    weight: float = 1.0


@dataclass(frozen=True)
class EmbeddingSpace:
    """One vector column of ``chunks`` and everything that knows about it.

    Attributes:
        column: the vector column (also the space's name in plans and requests).
        model_column: the ``chunks`` column naming the model spec of each row's vector.
        weights_id_column: the ``chunks`` column naming the weights (:func:`mrag.models.
            weights_id`) of each row's vector.
        embedder: ``module:Class`` of the :class:`mrag.embed.SpaceEmbedder` that fills it.
        embeds: chunk modalities whose rows get a vector in this space.
        queries: query kinds the space's embedder can turn into a vector.
        lists: the ranked lists it adds to the default retrieval plan.
        models: model spec name per profile; a profile not named leaves the space off.
        model_setting: the top-level config field naming the model (``clip_model``), for the
            spaces that had one before ``spaces.<column>.model``; "" for the rest.
        weights_setting: likewise for the weights override (``clip_weights``).
        needs_audio: its embedder reads audio samples (decoders then keep them on the rows).
    """

    column: str
    model_column: str
    weights_id_column: str
    embedder: str
    embeds: tuple[str, ...]
    queries: tuple[str, ...]
    lists: tuple[SpaceList, ...]
    models: dict[str, str]
    model_setting: str = ""
    weights_setting: str = ""
    needs_audio: bool = False

    def __post_init__(self) -> None:
        unknown = [m for m in self.embeds if m not in CHUNK_MODALITIES]
        unknown += [q for q in self.queries if q not in QUERY_KINDS]
        unknown += [m for item in self.lists for m in item.modalities if m not in CHUNK_MODALITIES]
        if unknown:
            raise ValueError(f"space {self.column!r}: unknown modality or query kind {unknown}")
        if any(item.query not in self.queries for item in self.lists):
            raise ValueError(f"space {self.column!r}: a list serves a query kind it cannot embed")


SPACES: dict[str, EmbeddingSpace] = {}


def register_space(space: EmbeddingSpace) -> EmbeddingSpace:
    """Adds a space (a plugin or notebook can register its own before building a config)."""
    if space.column == BM25:
        raise ValueError(f"{BM25!r} is the full-text list, not a vector space")
    SPACES[space.column] = space
    return space


def get_space(column: str) -> EmbeddingSpace:
    try:
        return SPACES[column]
    except KeyError:
        raise KeyError(f"no embedding space {column!r}; spaces: {', '.join(SPACES)}") from None


def spaces_for_modalities(modalities: set[str] | frozenset[str]) -> list[str]:
    """The spaces that embed at least one of ``modalities`` (what a job's rows need)."""
    return [c for c, space in SPACES.items() if set(space.embeds) & set(modalities)]


# Registered in the order their lists join a plan (the text encoder's list first).
register_space(
    EmbeddingSpace(
        column="text_vec",
        model_column="text_model",
        weights_id_column="text_weights_id",
        embedder="mrag.embed.text:TextSpaceEmbedder",
        embeds=TEXT_BEARING,
        queries=("text",),
        lists=(SpaceList("text_vec", "text", TEXT_BEARING),),
        models={"default": "all-MiniLM-L6-v2", "offline": "all-MiniLM-L6-v2-packaged"},
        model_setting="text_model",
        weights_setting="text_weights",
    )
)
register_space(
    EmbeddingSpace(
        column="clip",
        model_column="clip_model",
        weights_id_column="clip_weights_id",
        embedder="mrag.embed.clip:ClipSpaceEmbedder",
        # Pixels through the image tower (a video segment pools its keyframes); text rows
        # through the text tower, so an image query can reach text and a text query images.
        embeds=("image", "pdf_page", "video_frame", "video_segment", "text"),
        queries=("text", "image"),
        lists=(
            SpaceList("clip_text", "text", VISUAL),
            SpaceList("clip_image", "image"),
        ),
        models={"default": "ViT-B-32/laion2b_s34b_b79k", "offline": "tiny-clip-random"},
        model_setting="clip_model",
        weights_setting="clip_weights",
    )
)
register_space(
    EmbeddingSpace(
        column="audio_vec",
        model_column="audio_model",
        weights_id_column="audio_weights_id",
        embedder="mrag.embed.clap:ClapSpaceEmbedder",
        # The sound itself (CLAP's audio tower), beside the transcript's text_vec: a text
        # query can find a dog barking or a piano that no transcript mentions.
        embeds=("audio_segment",),
        queries=("text",),
        lists=(SpaceList("audio_text", "text", ("audio_segment",)),),
        models={"default": "laion/clap-htsat-unfused", "offline": "tiny-clap-random"},
        needs_audio=True,
    )
)
