"""Hit builders shared by the reranker tests."""

from __future__ import annotations

from mrag.retrieve.search import Hit


def text_hit(chunk_id: str, text: str | None, score: float = 0.0, asset: str = "") -> Hit:
    return Hit(
        chunk_id=chunk_id,
        asset_id=asset or f"asset-{chunk_id}",
        uri=f"/corpus/{chunk_id}.txt",
        modality="text",
        score=score,
        char_start=0,
        char_end=len(text or ""),
        text=text,
    )


def image_hit(chunk_id: str, score: float = 0.0) -> Hit:
    return Hit(
        chunk_id=chunk_id,
        asset_id=f"asset-{chunk_id}",
        uri=f"/corpus/{chunk_id}.jpg",
        modality="image",
        score=score,
    )


def ids(hits: list[Hit]) -> list[str]:
    return [hit.chunk_id for hit in hits]
