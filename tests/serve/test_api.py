"""The request model of ``/v1/search``, as the CLI, notebooks and the HTTP API all validate it."""

from __future__ import annotations

import base64

import pytest
from pydantic import ValidationError

from mrag.errors import MragError
from mrag.query import validate_request
from mrag.retrieve.search import SearchFilters, error_message
from mrag.serve.api import DEFAULT_K, search_request_model


def test_defaults_and_base64_forms_of_an_image() -> None:
    model = search_request_model(50)
    request = model.model_validate({"query": "  a red car "})
    assert (request.query, request.k, request.mode, request.include_thumbnail) == (
        "a red car",
        DEFAULT_K,
        "hybrid",
        False,
    )
    assert request.filters == SearchFilters()
    png = b"\x89PNG\r\n\x1a\n-not-really"
    text = base64.b64encode(png).decode()
    wrapped = "\n".join(text[i : i + 8] for i in range(0, len(text), 8))
    for image in (text, f"data:image/png;base64,{text}", wrapped, png):
        assert model.model_validate({"image": image, "mode": "vector"}).image == png


def test_default_k_never_exceeds_the_servers_limit() -> None:
    assert search_request_model(3).model_validate({"query": "x"}).k == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"query": "x", "k": 6}, "k must be an integer from 1 to 5, got 6"),
        ({"query": "x", "k": "3"}, "k must be an integer from 1 to 5, got '3'"),
        ({"query": "x", "top_k": 3}, "unknown field 'top_k'; allowed: query, image, k, mode"),
        ({"image": None}, "give exactly one of a text query or an image"),
        ({"query": "x", "filters": {"page": 0}}, "filters.page must be a page number >= 1"),
        ({"query": "x", "filters": {"modality": ["image", "x"]}}, "filters.modality must be"),
        ({"query": "x" * 100, "k": 0}, "got 0"),
        ({"query": 9 * ["a"]}, "non-empty string, got ['a', 'a', 'a', 'a', 'a', 'a', 'a', '..."),
    ],
)
def test_errors_are_one_sentence_naming_the_field(data: dict, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        search_request_model(5).model_validate(data)
    assert message in error_message(caught.value)
    with pytest.raises(MragError) as raised:  # the in-process path says the same
        validate_request(data, max_k=5)
    assert message in str(raised.value)


def test_schema_states_the_limits_a_client_must_respect() -> None:
    schema = search_request_model(20).model_json_schema()
    properties = schema["properties"]
    assert set(properties) == {
        "query", "image", "k", "mode", "filters", "include_thumbnail",
        "rerank", "group", "fusion", "weights",
    }  # fmt: skip
    assert schema["additionalProperties"] is False
    assert (properties["k"]["minimum"], properties["k"]["maximum"]) == (1, 20)
    assert properties["mode"]["enum"] == ["vector", "fts", "hybrid"]
    assert properties["image"]["anyOf"][0] == {"type": "string"}
    filters = schema["$defs"]["SearchFilters"]
    assert set(filters["properties"]) == {"modality", "uri_prefix", "page", "time_range"}
    assert filters["additionalProperties"] is False


def test_rerank_group_fusion_and_weights_are_validated() -> None:
    model = search_request_model(50)
    request = model.model_validate(
        {"query": "x", "rerank": True, "group": "asset", "fusion": "score", "weights": {"bm25": 2}}
    )
    assert (request.rerank, request.group, request.fusion) == (True, "asset", "score")
    assert request.weights == {"bm25": 2.0}
    defaults = model.model_validate({"query": "x"})
    assert (defaults.rerank, defaults.group, defaults.fusion, defaults.weights) == (
        None, None, None, None,  # rerank null: the server's rerank.enabled
    )  # fmt: skip
    for body, words in (
        ({"rerank": "yes"}, "rerank must be true, false or null"),
        ({"group": "page"}, "group must be 'asset' or null"),
        ({"fusion": "max"}, "fusion must be one of rrf, score"),
        ({"weights": {"bm25": -1}}, "weights must map list names to numbers from 0 to 100"),
        ({"weights": ["bm25"]}, "weights must map"),
    ):
        with pytest.raises(MragError, match=words):
            validate_request({"query": "x", **body}, 50)
