"""The search API's data: one pydantic model per request body and per answer.

FastAPI publishes these at ``/openapi.json`` (and ``/docs``). The request model is the in-process
search's own (:class:`mrag.query.SearchRequest`, re-exported here), so the CLI, a notebook and
the HTTP API reject the same inputs with the same words: one sentence naming the field, such as
``k must be an integer from 1 to 100, got 0``. No Ray, no FastAPI here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from mrag.query import DEFAULT_K, SearchRequest, search_request_model

if TYPE_CHECKING:
    from mrag.refine import AssetGroup
    from mrag.retrieve.search import Hit

__all__ = [
    "DEFAULT_K",
    "AnswerResponse",
    "AssetEvidence",
    "Citation",
    "ErrorResponse",
    "HealthResponse",
    "SearchHit",
    "SearchRequest",
    "SearchResponse",
    "search_request_model",
]


class Locator(BaseModel):
    """Where in its asset an item is (:class:`mrag.hits.Locator`); fields that do not apply
    are left out."""

    page: int | None = Field(None, description="PDF page, from 1.")
    char_start: int | None = Field(None, description="Start of the span in the text.")
    char_end: int | None = None
    start_s: float | None = Field(None, description="Start in a recording or video, seconds.")
    end_s: float | None = None


class SearchHit(Locator):
    """One retrieved chunk; fields that do not apply to its modality are left out."""

    chunk_id: str
    asset_id: str
    uri: str = Field(description="Where the asset lives (file path or object URL).")
    modality: str = Field(description="image, text, pdf_page, video_frame, ...")
    score: float = Field(
        description=(
            "Higher is better. Cosine similarity or BM25 when one ranked list answered, else "
            "the fused score (calibrated score sum or RRF sum): compare within one mode only."
        )
    )
    text: str | None = None
    thumbnail_jpeg_b64: str | None = None

    @classmethod
    def from_hit(cls, hit: Hit, *, include_thumbnail: bool) -> SearchHit:
        return cls(**hit.to_dict(include_thumbnail=include_thumbnail))


class AssetEvidence(BaseModel):
    """One asset of a search grouped by asset: its hits as the refiner leaves them (duplicates
    dropped, adjacent spans and pages merged), with the locators a citation needs."""

    asset_id: str
    uri: str
    modality: str
    score: float = Field(description="Its best item's score.")
    evidence: list[dict[str, Any]] = Field(
        description="Items best first: `chunk_ids`, `text`, `page`/`page_end`, `char_start`/"
        "`char_end`, `start_s`/`end_s`, `duplicates`… (fields that do not apply left out)."
    )

    @classmethod
    def from_group(cls, group: AssetGroup, *, include_thumbnail: bool) -> AssetEvidence:
        items = []
        for item in group.items:
            shown = item.to_dict(include_thumbnail)
            for key in ("n", "tokens", "images"):  # answer-budget fields, not a search's
                shown.pop(key, None)
            items.append(shown)
        return cls(
            asset_id=group.asset_id,
            uri=group.uri,
            modality=group.modality,
            score=group.score,
            evidence=items,
        )


class SearchResponse(BaseModel):
    """The hits, best first, and the server-side time the search took."""

    hits: list[SearchHit]
    groups: list[AssetEvidence] | None = Field(
        None, description='With `group: "asset"`: the best `k` assets, each with its evidence.'
    )
    took_ms: float


class Citation(Locator):
    """One cited evidence item: where its ``[n]`` points (fields that do not apply are left out)."""

    n: int = Field(description="The number the answer cites it by, as `[n]`.")
    chunk_id: str = Field(description="A returned hit of this evidence: the one to open.")
    chunk_ids: list[str] = Field(description="Every chunk merged into this evidence item.")
    asset_id: str
    uri: str
    modality: str
    page_end: int | None = Field(None, description="Last page, when the evidence spans pages.")


class AnswerResponse(BaseModel):
    """The answer with ``[n]`` citations, what they point at, and the hits it was drawn from."""

    answer: str
    citations: list[Citation]
    dropped_citations: int = Field(
        description="Cited numbers that matched no evidence item and were dropped."
    )
    hits: list[SearchHit]
    generator: str
    took_ms: float


class HealthResponse(BaseModel):
    """Liveness: the service is up; reveals no data."""

    status: Literal["ok"] = "ok"
    clip_model: str
    max_k: int
    max_body_bytes: int = Field(description="The largest request body (an image's base64 too).")
    auth: bool = Field(description="Whether /v1/ calls need a bearer token.")


class ErrorResponse(BaseModel):
    """Every error the API answers, whatever its status code."""

    error: str = Field(description="What is wrong and how to fix it.")
