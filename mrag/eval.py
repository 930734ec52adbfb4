"""Retrieval evaluation on BEIR-format files: recall@k, nDCG@10 and MRR@10 per search mode.

Queries are JSON lines ``{"_id": "q1", "text": "..."}``, or ``{"_id": "q2", "image": "a.png"}``
for an image query (a path relative to the queries file); qrels are TSV ``query-id corpus-id
score`` (a header line is allowed). Every mode is scored over every query: a mode that cannot take
a query (``fts`` for an image) ranks nothing for it. Modes that fuse lists are scored with each
fusion method, side by side. Corpus ids may be asset ids, chunk ids or URIs, URIs' file
names, or ``<file name>#page=<n>`` for one page of a PDF: each hit is mapped to whichever
form the qrels use.

Metrics are per document, as BEIR scores chunked corpora (MaxP): each query retrieves
``depth`` chunks (100), each document ranks where its best chunk does, and the metrics read the
top 10 documents. Cut at 10 chunks instead, a page with several matching chunks would crowd
other documents out of the top 10 (``depth=10`` gives that older, chunk-level cut).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mrag.errors import MragError
from mrag.retrieve.fusion import FUSION_METHODS
from mrag.retrieve.search import MODES

if TYPE_CHECKING:
    from mrag.query import QueryEngine, SearchRequest
    from mrag.retrieve.search import Hit

RECALL_AT = (1, 3, 5, 10)
#: Chunks retrieved per query before they are aggregated per document.
DEPTH = 100


@dataclass(frozen=True)
class ImageQuery:
    """A query by example: the image file at ``path``."""

    path: Path


def load_queries(path: str | Path) -> dict[str, str | ImageQuery]:
    queries: dict[str, str | ImageQuery] = {}
    for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if "image" in row and "text" not in row:
                queries[str(row["_id"])] = ImageQuery(Path(path).parent / str(row["image"]))
            else:
                queries[str(row["_id"])] = str(row["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise MragError(
                f'{path}:{line_no}: expected {{"_id": ..., "text": ...}} or '
                f'{{"_id": ..., "image": "file"}}: {exc}'
            ) from None
    return queries


def load_qrels(path: str | Path) -> dict[str, dict[str, float]]:
    qrels: dict[str, dict[str, float]] = {}
    for line_no, line in enumerate(Path(path).read_text().splitlines(), 1):
        parts = line.strip().split("\t") if "\t" in line else line.split()
        if not parts or (line_no == 1 and parts[0] == "query-id"):
            continue
        if len(parts) != 3:
            raise MragError(f"{path}:{line_no}: expected 'query-id corpus-id score'")
        try:
            qrels.setdefault(parts[0], {})[parts[1]] = float(parts[2])
        except ValueError:
            raise MragError(f"{path}:{line_no}: score {parts[2]!r} is not a number") from None
    return qrels


def doc_ids(hits: list[Hit], known_ids: set[str]) -> list[str]:
    """Hits → the qrels' corpus ids in rank order, each document once, where its best (first)
    chunk ranks: max aggregation of chunk scores per document."""
    ranked: list[str] = []
    for hit in hits:
        name = hit.uri.rsplit("/", 1)[-1]
        page = f"{name}#page={hit.page}" if hit.page is not None else None  # a PDF page
        for candidate in (hit.chunk_id, page, hit.asset_id, hit.uri, name):
            if candidate in known_ids:
                break
        else:
            candidate = hit.uri
        if candidate not in ranked:
            ranked.append(candidate)
    return ranked


def ndcg_at(ranked: list[str], relevant: dict[str, float], k: int = 10) -> float:
    dcg = sum(relevant.get(d, 0.0) / math.log2(i + 2) for i, d in enumerate(ranked[:k]))
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mrr_at(ranked: list[str], relevant: dict[str, float], k: int = 10) -> float:
    for i, d in enumerate(ranked[:k]):
        if relevant.get(d, 0.0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def recall_at(ranked: list[str], relevant: dict[str, float], k: int) -> float:
    wanted = {d for d, g in relevant.items() if g > 0}
    return len(wanted & set(ranked[:k])) / len(wanted) if wanted else 0.0


@dataclass
class EvalReport:
    """Mean metrics per mode (``hybrid``, and ``hybrid/score`` for another fusion) over the
    queries that have judgements, each query's documents ranked from its top ``depth`` chunks."""

    n_queries: int = 0
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    depth: int = DEPTH

    def render(self) -> str:
        names = [f"recall@{k}" for k in RECALL_AT] + ["nDCG@10", "MRR@10"]
        width = max(8, *(len(mode) + 1 for mode in self.metrics))
        header = f"{'mode':<{width}}" + "".join(f"{n:>11}" for n in names)
        rows = [header, "-" * len(header)]
        for mode, values in self.metrics.items():
            rows.append(f"{mode:<{width}}" + "".join(f"{values[n]:>11.3f}" for n in names))
        rows.append(f"({self.n_queries} queries; documents by their best of {self.depth} chunks)")
        return "\n".join(rows)


def evaluate(
    engine: QueryEngine,
    queries: dict[str, str | ImageQuery],
    qrels: dict[str, dict[str, float]],
    modes: tuple[str, ...] | None = None,
    fusions: tuple[str, ...] | None = None,
    *,
    group: str | None = None,
    depth: int = DEPTH,
) -> EvalReport:
    """Scores each mode; ``vector`` and ``hybrid`` once per fusion in ``fusions`` (default:
    the configured one first, then the others), named ``mode`` for the configured fusion and
    ``mode/<fusion>`` for the others. A mode ``<mode>+rerank`` is that mode reranked (the
    default modes add ``hybrid+rerank`` when a reranker is configured); plain modes are scored
    without reranking, whatever ``rerank.enabled`` says. ``depth``: chunks retrieved per query
    before they are aggregated per document (at least 10)."""
    from mrag.query import validate_request

    if modes is None:
        modes = (*MODES, "hybrid+rerank") if engine.reranker is not None else MODES
    judged = {qid: q for qid, q in queries.items() if qid in qrels}
    if not judged:
        raise MragError("no query has judgements in the qrels file (check the ids)")
    default_fusion = engine.config.retrieval.fusion
    if fusions is None:
        fusions = (default_fusion, *(f for f in FUSION_METHODS if f != default_fusion))
    if depth < max(RECALL_AT):
        raise MragError(f"depth must be at least {max(RECALL_AT)} chunks, got {depth}")
    known = {doc for rels in qrels.values() for doc in rels}
    # In process, not behind the server: the eval may ask for more than serve.max_k hits.
    max_k = max(depth, engine.config.serve.max_k)
    images: dict[Path, bytes] = {}
    report = EvalReport(n_queries=len(judged), depth=depth)
    for mode_name in modes:
        mode, _, reranked = mode_name.partition("+")
        if mode not in MODES or reranked not in ("", "rerank"):
            raise MragError(
                f"mode {mode_name!r}: expected one of {', '.join(MODES)}, or one + rerank"
            )
        for fusion in fusions if mode != "fts" else fusions[:1]:
            requests: dict[str, SearchRequest] = {}
            for qid, query in judged.items():
                body = {"k": depth, "mode": mode, "fusion": fusion, "rerank": bool(reranked),
                        "group": group}  # fmt: skip
                if isinstance(query, ImageQuery):
                    if mode == "fts":
                        continue  # full-text search takes no image: nothing ranked
                    if query.path not in images:
                        try:
                            images[query.path] = query.path.read_bytes()
                        except OSError as exc:
                            raise MragError(f"cannot read query image: {exc}") from None
                    body["image"] = images[query.path]
                else:
                    body["query"] = query
                requests[qid] = validate_request(body, max_k)
            vectors = dict(zip(requests, engine.encode(list(requests.values())), strict=True))
            sums: dict[str, float] = {}
            for qid in judged:
                hits = []
                if qid in requests:
                    hits = engine.run(requests[qid], vectors[qid])  # one batch per model
                ranked = doc_ids(hits, known)
                values = {f"recall@{k}": recall_at(ranked, qrels[qid], k) for k in RECALL_AT}
                values["nDCG@10"] = ndcg_at(ranked, qrels[qid])
                values["MRR@10"] = mrr_at(ranked, qrels[qid])
                for name, value in values.items():
                    sums[name] = sums.get(name, 0.0) + value
            row = (
                mode_name if fusion == default_fusion or mode == "fts" else f"{mode_name}/{fusion}"
            )
            report.metrics[row] = {name: total / len(judged) for name, total in sums.items()}
    return report
