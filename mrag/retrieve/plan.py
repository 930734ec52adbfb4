"""Retrieval plans: which ranked lists one query is searched with, as data.

A plan is built per query from ``config.retrieval.lists`` (docs/architecture.md, "The query
path"): a text query searches the text encoder over text-bearing chunks, CLIP's text tower over
visual chunks and BM25 over text; an image query searches CLIP over every chunk with a ``clip``
vector. Each list knows whether its model has random weights (``ModelSpec.random_init``), so
fusion can keep such a list from displacing what a pretrained space found.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mrag.errors import MragError
from mrag.retrieve.fusion import FUSION_WINDOW
from mrag.spaces import BM25, SPACES

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mrag.config import MragConfig, RetrievalConfig


def mode_spaces(mode: str) -> frozenset[str]:
    """The spaces a search mode draws on: every registered vector space, BM25, or both."""
    vector = frozenset(SPACES)
    return {"vector": vector, "fts": frozenset({BM25}), "hybrid": vector | {BM25}}[mode]


MODES = ("vector", "fts", "hybrid")


@dataclass(frozen=True)
class PlannedList:
    """One ranked list to retrieve and fuse.

    Attributes:
        name: the list's key in ``retrieval.lists`` (``text_vec``, ``clip_text``...).
        space: ``clip``, ``text_vec`` (vector columns) or ``bm25``.
        modalities: chunk modalities searched; empty: every chunk that has the space's vector.
        weight: fusion weight (> 0; lists weighted 0 are not planned).
        random_init: the space's model has random weights: its hits only break ties and fill in
            below the hits of the other lists.
    """

    name: str
    space: str
    modalities: tuple[str, ...]
    weight: float
    random_init: bool = False


@dataclass(frozen=True)
class RetrievalPlan:
    """The lists to run and how to fuse them: ``fusion`` (``score`` or ``rrf``), RRF's
    constant and the ``score`` fusion's window (:func:`mrag.retrieve.fusion.fuse`)."""

    lists: tuple[PlannedList, ...]
    fusion: str
    rrf_k: int
    fusion_window: int = FUSION_WINDOW

    @property
    def spaces(self) -> frozenset[str]:
        """The spaces the plan searches: which query vectors the caller must compute."""
        return frozenset(item.space for item in self.lists)


def random_spaces(config: MragConfig) -> dict[str, bool]:
    """``{space: the model behind it has random weights}`` for the spaces ``config`` turns on
    (and BM25); a list over a space missing here is not planned."""
    from mrag.models import get_model_spec

    spaces = {c: get_model_spec(config.space_model(c)).random_init for c in config.active_spaces()}
    return {**spaces, BM25: False}


def check_weights(retrieval: RetrievalConfig, weights: Mapping[str, float] | None) -> None:
    """Per-request weights must name configured lists (a :class:`MragError` names the key)."""
    unknown = sorted(set(weights or {}) - set(retrieval.lists))
    if unknown:
        raise MragError(
            f"weights: unknown list {unknown[0]!r}; lists: {', '.join(sorted(retrieval.lists))}"
        )


def build_plan(
    retrieval: RetrievalConfig,
    random_by_space: Mapping[str, bool],
    *,
    query_kind: str,
    mode: str,
    filter_modalities: tuple[str, ...] | None = None,
    fusion: str | None = None,
    weights: Mapping[str, float] | None = None,
) -> RetrievalPlan:
    """The lists that serve ``query_kind`` in ``mode``, minus those that cannot contribute.

    A list is left out when its weight is 0, when the request's modality filter and the
    list's modalities have nothing in common (nothing it could return would pass the filter),
    or when ``random_by_space`` (the spaces the config turns on, from :func:`random_spaces`)
    does not name its space; an empty mapping turns every space on.
    """
    if mode not in MODES:
        raise MragError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    check_weights(retrieval, weights)
    planned = []
    for name, spec in retrieval.lists.items():
        if spec.query != query_kind or spec.space not in mode_spaces(mode):
            continue
        if random_by_space and spec.space not in random_by_space:  # a space turned off
            continue
        weight = (weights or {}).get(name, retrieval.weight(name))
        if weight <= 0:
            continue
        modalities = tuple(spec.modalities)
        if filter_modalities and modalities and not set(modalities) & set(filter_modalities):
            continue
        planned.append(
            PlannedList(
                name=name,
                space=spec.space,
                modalities=modalities,
                weight=float(weight),
                random_init=bool(random_by_space.get(spec.space, False)),
            )
        )
    return RetrievalPlan(
        tuple(planned), fusion or retrieval.fusion, retrieval.rrf_k, retrieval.fusion_window
    )
