"""The search API over real HTTP: local Ray, Serve on 127.0.0.1, a LanceDB built by the ingest job.

One Serve start for the module (auth on); every request goes through the proxy like a client's.
The Serve config file in ``cluster/`` is validated against Ray's own schema and the app's graph.
"""

from __future__ import annotations

import base64
import json
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from mrag.config import MragConfig, load_config
from tests.media import encode, pattern
from tests.speech_media import recording, wav_bytes

TOKEN = "s3cret-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_K = 20
MAX_BODY_BYTES = 256 * 1024
REPO = Path(__file__).resolve().parents[2]

# Four distinct pictures, two of them under nested/ to exercise uri_prefix filters.
IMAGES = {
    "a.png": ("PNG", 21),
    "b.jpg": ("JPEG", 22),
    "nested/c.png": ("PNG", 23),
    "nested/d.jpg": ("JPEG", 24),
}
#: Said in talks/ferry.wav: (start_s, sentence).
SPOKEN = (2.0, "The submarine cable to the island was cut by a dragging anchor.")


@dataclass
class Server:
    url: str
    client: httpx.Client
    config: MragConfig
    images: dict[str, bytes]  # uri → file bytes
    media_root: Path

    def search(self, body: dict | bytes, headers: dict | None = None) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return self.client.post(
            "/v1/search",
            content=content,
            headers={"Content-Type": "application/json", **(AUTH if headers is None else headers)},
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FIELD_NOTES = (
    "Field notes from the estuary survey.\n\n"
    "At dawn we counted herons along the mudflats. The zephyrine quokka ledger lists each "
    "sighting with the tide height."
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def server(ray_local, tmp_path_factory):
    from ray import serve

    from mrag.pipelines.ingest import run_ingest
    from mrag.serve.app import run_server
    from mrag.store import schema
    from mrag.store.lance import Store

    root = tmp_path_factory.mktemp("serve")
    media = root / "media"
    for name, (fmt, seed) in IMAGES.items():
        path = media / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(pattern(seed), fmt, **({"quality": 90} if fmt == "JPEG" else {})))
    config = load_config(
        profile="offline",
        overrides={
            "db_uri": str(root / "db"),
            "serve.port": _free_port(),
            "serve.max_k": MAX_K,
            "serve.max_body_bytes": MAX_BODY_BYTES,
            "serve.encoder_max_batch_size": 8,
            "serve.encoder_batch_wait_s": 0.1,  # wide window so concurrent calls share a batch
            "serve.max_ongoing_requests": 32,
        },
    )
    (media / "notes").mkdir()
    (media / "notes" / "field-notes.txt").write_text(FIELD_NOTES)
    (media / "talks").mkdir()
    (media / "talks" / "ferry.wav").write_bytes(wav_bytes(recording([SPOKEN], 12.0)))
    summary = run_ingest(config, [str(media)])
    assert summary.ingested == len(IMAGES) + 2, summary.render()
    uris = Store(config.db_uri).read(schema.CHUNKS, ["uri"])["uri"].to_pylist()
    by_name = {name: next(u for u in uris if u.endswith(name)) for name in IMAGES}

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MRAG_API_TOKEN", TOKEN)  # read when the app is built, after Ray started
        url = run_server(config, blocking=False)
    client = httpx.Client(base_url=url, timeout=60)
    try:
        yield Server(
            url=url,
            client=client,
            config=config,
            images={by_name[n]: (media / n).read_bytes() for n in IMAGES},
            media_root=media,
        )
    finally:
        client.close()
        serve.shutdown()


def _error(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"], body
    return body["error"]


@pytest.mark.integration
def test_healthz_needs_no_token(server: Server) -> None:
    response = server.client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "clip_model": "tiny-clip-random",
        "max_k": MAX_K,
        "max_body_bytes": MAX_BODY_BYTES,  # so the page can refuse an image too large to send
        "auth": True,
    }


@pytest.mark.integration
@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": TOKEN},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ],
    ids=["missing", "wrong-token", "no-scheme", "basic-auth"],
)
def test_search_without_the_token_is_401(server: Server, headers: dict) -> None:
    response = server.search({"query": "a photo"}, headers=headers)
    assert response.status_code == 401
    assert "token" in _error(response)
    assert response.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in response.text


@pytest.mark.integration
def test_replicas_warm_up_before_they_report_healthy(server: Server) -> None:
    """The ingress ran one real query (encoders, retriever, FTS) before Serve routed to it."""
    from ray import serve

    ingress = serve.get_deployment_handle("SearchIngress", app_name="mrag")
    assert ingress.warm_up_ms.remote().result(timeout_s=30) > 0


@pytest.mark.integration
def test_rerank_group_and_fusion_reach_the_search(server: Server) -> None:
    plain = server.search({"query": "herons on the mudflats", "k": 5}).json()["hits"]
    for body in (
        {"rerank": True},  # no reranker configured: the fused order unchanged
        {"fusion": "rrf", "weights": {"bm25": 1}},
        {"group": "asset"},
    ):
        response = server.search({"query": "herons on the mudflats", "k": 5, **body})
        assert response.status_code == 200, response.text
        hits = response.json()["hits"]
        if "rerank" in body:
            assert [h["chunk_id"] for h in hits] == [h["chunk_id"] for h in plain]
        if "group" in body:
            assert len({h["asset_id"] for h in hits}) == len(hits)
            groups = response.json()["groups"]  # the refiner's evidence, per asset
            assert [g["asset_id"] for g in groups] == [h["asset_id"] for h in hits]
            for group in groups:
                assert group["evidence"] and all(e["chunk_ids"] for e in group["evidence"])
        else:
            assert "groups" not in response.json()
    unknown = server.search({"query": "x", "weights": {"colour": 1}})
    assert unknown.status_code == 400 and "unknown list 'colour'" in _error(unknown)


@pytest.mark.integration
def test_text_search_returns_k_ranked_hits(server: Server) -> None:
    images_only = {"modality": "image"}
    response = server.search({"query": "a colourful picture", "k": 3, "filters": images_only})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert len(hits) == 3
    for hit in hits:
        assert {"chunk_id", "asset_id", "uri", "modality", "score"} <= set(hit)
        assert hit["modality"] == "image" and hit["uri"] in server.images
        assert "thumbnail_jpeg_b64" not in hit
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)

    everything = server.search({"query": "a picture", "filters": images_only}).json()["hits"]
    assert sorted(h["uri"] for h in everything) == sorted(server.images)  # default k=10 > 4 rows


@pytest.mark.integration
def test_image_search_finds_the_same_image_first(server: Server) -> None:
    for uri, data in server.images.items():
        response = server.search({"image": _b64(data), "k": 2})
        assert response.status_code == 200, response.text
        hits = response.json()["hits"]
        assert [h["uri"] for h in hits][:1] == [uri]
        assert hits[0]["score"] > 0.999


@pytest.mark.integration
def test_image_as_data_url_or_wrapped_base64_with_thumbnail(server: Server) -> None:
    uri, data = next(iter(server.images.items()))
    wrapped = "\n".join(_b64(data)[i : i + 76] for i in range(0, len(_b64(data)), 76))
    for image in (f"data:image/png;base64,{_b64(data)}", wrapped):
        response = server.search({"image": image, "k": 1, "include_thumbnail": True})
        assert response.status_code == 200, response.text
        (hit,) = response.json()["hits"]
        assert hit["uri"] == uri
        assert base64.b64decode(hit["thumbnail_jpeg_b64"])[:2] == b"\xff\xd8"  # a JPEG


@pytest.mark.integration
def test_filters_restrict_results(server: Server) -> None:
    nested = str(server.media_root / "nested") + "/"
    response = server.search({"query": "a picture", "k": 10, "filters": {"uri_prefix": nested}})
    assert response.status_code == 200, response.text
    assert sorted(h["uri"] for h in response.json()["hits"]) == sorted(
        u for u in server.images if u.startswith(nested)
    )
    images_only = server.search({"query": "x", "filters": {"modality": ["image"]}}).json()
    assert len(images_only["hits"]) == len(server.images)
    text_only = server.search({"query": "x", "filters": {"modality": "text"}}).json()
    assert [h["modality"] for h in text_only["hits"]] == ["text"]


@pytest.mark.integration
def test_modes_full_text_vector_and_hybrid(server: Server) -> None:
    fts = server.search({"query": "zephyrine quokka", "mode": "fts", "k": 3})
    assert fts.status_code == 200, fts.text
    (hit,) = fts.json()["hits"]  # only the text chunk contains the phrase
    assert hit["uri"].endswith("field-notes.txt") and hit["modality"] == "text"
    assert "zephyrine quokka" in hit["text"]
    assert FIELD_NOTES[hit["char_start"] : hit["char_end"]] == hit["text"]
    hybrid = server.search({"query": "zephyrine quokka ledger", "k": 3}).json()["hits"]
    assert hybrid[0]["uri"].endswith("field-notes.txt")  # first in fts and in text_vec
    vector = server.search({"query": "herons on the mudflats", "mode": "vector", "k": 5})
    assert vector.status_code == 200 and len(vector.json()["hits"]) == 5


_NOT_AN_IMAGE = _b64(b"%PDF-1.4 definitely not pixels" * 10)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe\x00garbage", 400, "not valid JSON"),
        (b"[" * 100_000, 400, "not valid JSON"),
        (b'["a photo"]', 400, "JSON object"),
        (b"", 400, "request body is empty"),
        ({"query": "x", "limit": 3}, 400, "unknown field 'limit'"),
        ({}, 400, "exactly one"),
        ({"k": 3}, 400, "exactly one"),
        ({"query": "x", "image": _NOT_AN_IMAGE}, 400, "exactly one"),
        ({"query": "   "}, 400, "non-empty"),
        ({"query": 42}, 400, "non-empty string"),
        ({"query": "x", "k": 0}, 400, f"from 1 to {MAX_K}"),
        ({"query": "x", "k": MAX_K + 1}, 400, f"from 1 to {MAX_K}"),
        ({"query": "x", "k": "3"}, 400, "k must be an integer"),
        ({"query": "x", "k": 2.5}, 400, "k must be an integer"),
        ({"query": "x", "k": True}, 400, "k must be an integer"),
        ({"query": "x", "k": None}, 400, "k must be an integer"),
        ({"image": "not base64!!"}, 400, "not valid base64"),
        ({"image": ""}, 400, "image is empty"),
        ({"image": "===="}, 400, "not valid base64"),
        ({"image": 123}, 400, "base64 string"),
        ({"image": _NOT_AN_IMAGE}, 400, "could not be decoded"),
        ({"query": "x", "filters": {"color": "red"}}, 400, "unknown key 'color'"),
        ({"query": "x", "filters": {"modality": "hologram"}}, 400, "filters.modality"),
        ({"query": "x", "filters": {"uri_prefix": 7}}, 400, "filters.uri_prefix"),
        ({"query": "x", "filters": {"page": 0}}, 400, "filters.page"),
        ({"query": "x", "filters": ["modality"]}, 400, "filters must be an object"),
        ({"query": "x", "include_thumbnail": "yes"}, 400, "include_thumbnail"),
        ({"query": "x", "mode": "semantic"}, 400, "mode must be one of"),
        ({"query": "x", "rerank": "yes"}, 400, "rerank must be true, false or null"),
        ({"query": "x", "group": "page"}, 400, "group must be 'asset' or null"),
        ({"query": "x", "fusion": "max"}, 400, "fusion must be one of"),
        ({"image": _b64(encode(pattern(1), "PNG")), "mode": "fts"}, 400, "needs a text query"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_bad_requests_get_a_json_error(server: Server, body, status: int, words: str) -> None:
    response = server.search(body)
    assert response.status_code == status, response.text
    assert words in _error(response)


def _png_declaring(width: int, height: int) -> bytes:
    """A valid 8x8 PNG whose header claims ``width`` x ``height`` (a decompression bomb's
    header: a few hundred bytes on the wire, gigapixels once decoded)."""
    import io
    import struct
    import zlib

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    png = bytearray(buffer.getvalue())
    png[16:24] = struct.pack(">II", width, height)  # IHDR data follows its length and type
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


@pytest.mark.integration
def test_an_image_over_the_pixel_limit_is_400_before_decoding(server: Server) -> None:
    bomb = _png_declaring(20_000, 20_000)
    assert len(bomb) < 1024
    for path in ("/v1/search", "/v1/answer"):
        response = server.client.post(path, json={"image": _b64(bomb)}, headers=AUTH)
        assert response.status_code == 400, response.text
        assert "max_image_pixels" in _error(response)
    assert server.search({"query": "still serving", "k": 1}).status_code == 200


@pytest.mark.integration
def test_an_image_named_by_url_or_server_path_is_never_fetched(server: Server) -> None:
    """The image is the request's own bytes: a URL or a path in its place is refused as bad
    base64 and nothing is fetched (a loopback server that holds a real picture counts)."""
    import http.server
    import threading

    picture = next(iter(server.images.values()))
    fetched: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            fetched.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            self.wfile.write(picture)

        def log_message(self, *args: object) -> None:
            pass

    origin = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=origin.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{origin.server_address[1]}/a.png"
    local_file = next(server.media_root.rglob("*.png"))
    try:
        for body, words in (
            ({"image": url}, "not valid base64"),
            ({"image": f"file://{local_file}"}, "not valid base64"),
            ({"image": str(local_file)}, "not valid base64"),
            ({"image": {"url": url}}, "base64 string"),
            ({"image_url": url}, "unknown field 'image_url'"),
            ({"query": "x", "image_url": {"url": url}}, "unknown field 'image_url'"),
        ):
            for path in ("/v1/search", "/v1/answer"):
                response = server.client.post(path, json=body, headers=AUTH)
                assert response.status_code == 400, (body, response.text)
                assert words in _error(response), (body, response.text)
    finally:
        origin.shutdown()
        origin.server_close()
    assert fetched == []


@pytest.mark.integration
def test_a_form_content_type_is_still_read_as_json(server: Server) -> None:
    """What ``curl -d '{"query": ...}'`` sends (application/x-www-form-urlencoded)."""
    form = {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    response = server.search({"query": "a picture", "k": 1}, headers=form)
    assert response.status_code == 200, response.text
    assert len(response.json()["hits"]) == 1


@pytest.mark.integration
def test_openapi_publishes_the_search_request_schema(server: Server) -> None:
    response = server.client.get("/openapi.json")  # no token: the schema reveals no data
    assert response.status_code == 200
    spec = response.json()
    operation = spec["paths"]["/v1/search"]["post"]
    assert operation["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/SearchRequest"
    }
    schemas = spec["components"]["schemas"]
    request = schemas["SearchRequest"]
    assert set(request["properties"]) == {
        "query", "image", "k", "mode", "filters", "include_thumbnail",
        "rerank", "group", "fusion", "weights",
    }  # fmt: skip
    assert request["properties"]["k"]["maximum"] == MAX_K  # this server's serve.max_k
    assert set(schemas["SearchFilters"]["properties"]) == {
        "modality",
        "uri_prefix",
        "page",
        "time_range",
    }
    assert "422" not in operation["responses"]
    assert {"hits", "took_ms"} <= set(schemas["SearchResponse"]["properties"])
    docs = server.client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


@pytest.mark.integration
def test_an_internal_error_is_a_json_500(server: Server, tmp_path: Path) -> None:
    """A second ingress over a database whose chunks table lacks most columns (an older
    schema): the search fails inside LanceDB, and the client still gets a JSON answer."""
    import lancedb
    import pyarrow as pa
    from ray import serve

    from mrag.models import get_model_spec
    from mrag.serve.ingress import SearchIngress

    dim = get_model_spec(server.config.clip_model).embed_dim
    db = str(tmp_path / "old-db")
    clip = pa.array([[0.1] * dim], type=pa.list_(pa.float32(), dim))
    lancedb.connect(db).create_table("chunks", pa.table({"chunk_id": ["c1"], "clip": clip}))
    config = load_config(profile="offline", overrides={"db_uri": db, "serve.max_k": MAX_K})
    encoder = serve.get_deployment_handle("QueryEncoder", app_name="mrag")
    ingress = SearchIngress.options(ray_actor_options={"num_cpus": 0.1}).bind(config, encoder)
    serve.run(ingress, name="mrag-old-db", route_prefix="/old-db")
    try:
        response = server.client.post("/old-db/v1/search", json={"query": "a picture"})
        assert response.status_code == 500, response.text
        assert "internal error" in _error(response)
        assert server.search({"query": "still works", "k": 1}).status_code == 200
    finally:
        serve.delete("mrag-old-db")


@pytest.mark.integration
def test_oversize_bodies_are_413_by_header_and_by_length(server: Server) -> None:
    oversize = json.dumps({"query": "x" * (MAX_BODY_BYTES + 1)}).encode()
    by_header = server.search(oversize)
    assert by_header.status_code == 413
    assert str(MAX_BODY_BYTES) in _error(by_header)

    def chunked():  # no Content-Length: only the running count can catch it
        for start in range(0, len(oversize), 16 * 1024):
            yield oversize[start : start + 16 * 1024]

    by_length = server.client.post(
        "/v1/search", content=chunked(), headers={"Content-Type": "application/json", **AUTH}
    )
    assert "content-length" not in by_length.request.headers
    assert by_length.status_code == 413
    assert str(MAX_BODY_BYTES) in _error(by_length)

    # The check leaves the server healthy and a body just under the limit still works.
    fits = b'{"query": "a photo", "k": 1}'
    assert server.search(fits.ljust(MAX_BODY_BYTES, b" ")).status_code == 200


@pytest.mark.integration
def test_unknown_routes_use_the_same_error_shape(server: Server) -> None:
    assert server.client.get("/v1/nothing-here", headers=AUTH).status_code == 404
    response = server.client.get("/v1/search", headers=AUTH)
    assert response.status_code == 405
    assert _error(response)


def _sse_events(response: httpx.Response) -> list[tuple[str, dict]]:
    """``event:``/``data:`` blocks of a server-sent event stream, in order."""
    events = []
    for block in response.text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if fields:
            events.append((fields["event"], json.loads(fields["data"])))
    return events


@pytest.mark.integration
def test_answer_cites_returned_hits(server: Server) -> None:
    body = {"query": "when were the herons counted on the mudflats?", "k": 4}
    response = server.client.post("/v1/answer", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    result = response.json()
    assert set(result) >= {"answer", "citations", "hits", "dropped_citations", "generator"}
    assert result["generator"] == "extractive" and result["dropped_citations"] == 0
    assert "herons" in result["answer"] and "[1]" in result["answer"]
    hit_ids = {hit["chunk_id"] for hit in result["hits"]}
    assert len(result["hits"]) == 4 and result["citations"]
    for citation in result["citations"]:
        assert f"[{citation['n']}]" in result["answer"]
        assert citation["chunk_id"] in hit_ids and set(citation["chunk_ids"]) <= hit_ids
    cited = next(h for h in result["hits"] if h["chunk_id"] == result["citations"][0]["chunk_id"])
    assert cited["uri"].endswith("field-notes.txt")
    assert all("thumbnail_jpeg_b64" not in hit for hit in result["hits"])  # not asked for


@pytest.mark.integration
def test_an_answer_about_something_said_cites_the_recording_with_its_time_range(
    server: Server,
) -> None:
    body = {"query": "What cut the cable to the island?", "k": 4}
    response = server.client.post("/v1/answer", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    result = response.json()
    cited = [c for c in result["citations"] if c["uri"].endswith("ferry.wav")]
    assert cited, result
    start_s, sentence = SPOKEN
    assert cited[0]["start_s"] <= start_s + 0.8 and cited[0]["end_s"] >= start_s + 2.5
    assert "anchor" in result["answer"].lower()


@pytest.mark.integration
def test_answer_streams_hits_deltas_citations_then_done(server: Server) -> None:
    body = {"query": "herons at dawn, and the ledger of sightings by tide", "k": 3, "stream": True}
    response = server.client.post("/v1/answer", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    events = _sse_events(response)
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "hits" and kinds[-2:] == ["citations", "done"], kinds
    deltas = [data["text"] for kind, data in events if kind == "delta"]
    assert len(deltas) >= 2 and set(kinds[1:-2]) == {"delta"}, kinds
    done = events[-1][1]
    assert "".join(deltas) == done["answer"] and done["took_ms"] > 0
    hit_ids = {hit["chunk_id"] for hit in events[0][1]["hits"]}
    citations = events[-2][1]["citations"]
    assert citations and all(c["chunk_id"] in hit_ids for c in citations)


@pytest.mark.integration
def test_answer_to_an_image_cites_that_image(server: Server) -> None:
    uri, data = next(iter(server.images.items()))
    body = {"image": _b64(data), "k": 3, "include_thumbnail": True}
    response = server.client.post("/v1/answer", json=body, headers=AUTH)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["hits"][0]["uri"] == uri and result["hits"][0]["thumbnail_jpeg_b64"]
    hit_ids = {hit["chunk_id"] for hit in result["hits"]}
    assert all(c["chunk_id"] in hit_ids for c in result["citations"])


@pytest.mark.integration
@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        ({"query": "herons"}, {}, 401, "bearer token"),
        ({"query": "herons", "k": MAX_K + 1}, None, 400, f"from 1 to {MAX_K}"),
        ({"query": "herons", "stream": "yes"}, None, 400, "stream must be true or false"),
        ({"query": "herons", "image": "aGk="}, None, 400, "exactly one"),
        ({"query": "herons", "colour": "red"}, None, 400, "unknown field 'colour'"),
        ({"query": "x" * MAX_BODY_BYTES}, None, 413, "limit"),
    ],
)
def test_answer_obeys_auth_and_the_search_limits(
    server: Server, body: dict, headers: dict | None, status: int, words: str
) -> None:
    response = server.client.post(
        "/v1/answer", json=body, headers=AUTH if headers is None else headers
    )
    assert response.status_code == status, response.text
    assert words in _error(response)


@pytest.mark.integration
def test_the_search_page_is_served_without_a_token(server: Server) -> None:
    page = server.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "v1/answer" in page.text
    assert server.client.get("/static/../ingress.py").status_code == 404


@pytest.mark.integration
def test_concurrent_requests_all_succeed_and_share_batches(server: Server) -> None:
    from ray import serve

    images = list(server.images.items())
    bodies = [
        {"query": f"picture number {i}", "k": 2}
        if i % 2
        else {"image": _b64(images[i // 2 % len(images)][1]), "k": 1}
        for i in range(16)
    ]
    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(server.search, bodies))
    assert [r.status_code for r in responses] == [200] * 16, [r.text for r in responses]
    for body, response in zip(bodies, responses, strict=True):
        hits = response.json()["hits"]
        if "image" in body:
            assert server.images[hits[0]["uri"]] == base64.b64decode(body["image"])
        else:
            assert len(hits) == 2

    encoder = serve.get_deployment_handle("QueryEncoder", app_name="mrag")
    stats = encoder.stats.remote().result(timeout_s=30)
    assert stats["max_batch_size"] == 8  # from config.serve, applied in the replica
    assert stats["batch_wait_timeout_s"] == pytest.approx(0.1)
    assert 2 <= stats["largest_batch"] <= 8, stats
    # The reranker deployment reorders pools through its @serve.batch method.
    reranker = serve.get_deployment_handle("Reranker", app_name="mrag")
    rerank_stats = reranker.stats.remote().result(timeout_s=30)
    assert rerank_stats["batches"] >= 1 and rerank_stats["largest_batch"] <= 8, rerank_stats


@pytest.mark.integration
def test_encoder_takes_the_config_files_user_config_live(server: Server) -> None:
    from ray import serve

    raw = yaml.safe_load((REPO / "cluster" / "serve.yaml").read_text())
    (encoder_yaml,) = [
        d for d in raw["applications"][0]["deployments"] if d["name"] == "QueryEncoder"
    ]
    encoder = serve.get_deployment_handle("QueryEncoder", app_name="mrag")
    try:
        encoder.reconfigure.remote(encoder_yaml["user_config"]).result(timeout_s=30)
        stats = encoder.stats.remote().result(timeout_s=30)
        assert stats["max_batch_size"] == encoder_yaml["user_config"]["max_batch_size"]
        with pytest.raises(Exception, match="unknown key 'batch_size'"):
            encoder.reconfigure.remote({"batch_size": 4}).result(timeout_s=30)
        assert server.search({"query": "still works", "k": 1}).status_code == 200
    finally:
        serving = server.config.serve
        encoder.reconfigure.remote(
            {
                "max_batch_size": serving.encoder_max_batch_size,
                "batch_wait_timeout_s": serving.encoder_batch_wait_s,
            }
        ).result(timeout_s=30)


def test_serve_config_file_matches_the_app() -> None:
    from ray._common.utils import import_attr
    from ray.serve._private.build_app import build_app as serve_build_app
    from ray.serve.schema import DeploymentSchema, ServeDeploySchema

    raw = yaml.safe_load((REPO / "cluster" / "serve.yaml").read_text())
    config = ServeDeploySchema.model_validate(raw)
    (app_config,) = config.applications
    assert (app_config.name, app_config.route_prefix) == ("mrag", "/")

    # Serve ignores unknown deployment keys, so a typo would silently do nothing.
    for deployment in raw["applications"][0]["deployments"]:
        assert set(deployment) <= set(DeploymentSchema.model_fields), deployment
        assert deployment["autoscaling_config"]["max_replicas"] >= 1

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MRAG_DB", "/nonexistent/mrag-db")  # building touches no database
        env.setenv("MRAG_PROFILE", "offline")
        application = import_attr(app_config.import_path)
    from ray import serve

    assert isinstance(application, serve.Application)
    built = serve_build_app(application, name="mrag")
    assert built.ingress_deployment_name == "SearchIngress"
    assert sorted(d.name for d in built.deployments) == sorted(
        d.name for d in app_config.deployments
    )
    encoder_yaml = next(
        d for d in raw["applications"][0]["deployments"] if d["name"] == "QueryEncoder"
    )
    assert set(encoder_yaml.get("user_config", {})) <= {"max_batch_size", "batch_wait_timeout_s"}
    # serve.batch never forms batches larger than max_ongoing_requests.
    assert encoder_yaml["user_config"]["max_batch_size"] <= encoder_yaml["max_ongoing_requests"]


def test_app_builder_takes_serve_run_arguments() -> None:
    """What ``serve run mrag.serve.app:app_builder db=... profile=... serve.max_k=5`` does."""
    from ray import serve
    from ray._common.utils import import_attr
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary as call

    from mrag.errors import ConfigError

    builder = import_attr("mrag.serve.app:app_builder")
    args = {"db": "/nonexistent/db", "profile": "offline", "seed": "3", "serve.max_k": "5"}
    application = call(builder, args)
    assert isinstance(application, serve.Application)
    ingress_config = application._bound_deployment.init_args[0]
    assert (ingress_config.db_uri, ingress_config.seed, ingress_config.serve.max_k) == (
        "/nonexistent/db",
        3,
        5,
    )
    with pytest.raises(ConfigError, match="unknown argument 'colour'"):
        call(builder, {"colour": "red"})


def test_the_retriever_and_reranker_deployments_can_be_folded_into_the_ingress() -> None:
    from ray.serve._private.build_app import build_app as serve_build_app

    from mrag.serve.builder import build_app

    def deployments(**overrides: object) -> list[str]:
        config = load_config(profile="offline", overrides={"db_uri": "/nonexistent", **overrides})
        built = serve_build_app(build_app(config), name="mrag")
        return sorted(d.name for d in built.deployments)

    assert deployments() == ["Generator", "QueryEncoder", "Reranker", "Retriever", "SearchIngress"]
    assert "Retriever" not in deployments(**{"serve.retriever_replicas": 0})
    assert deployments(**{"serve.retriever_replicas": 0, "serve.reranker_replicas": 0}) == [
        "Generator",
        "QueryEncoder",
        "SearchIngress",
    ]
