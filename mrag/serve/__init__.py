"""The search API on Ray Serve: FastAPI ingress → batched query encoders → LanceDB retriever.

Modules (importing this package imports none of them, nor Ray):

- :mod:`mrag.serve.api`: the pydantic request model (the in-process search's own,
  :class:`mrag.query.SearchRequest`) and response models; no Ray, no FastAPI.
- :mod:`mrag.serve.encoder`: the ``QueryEncoder`` deployment (CLIP and the text model, batched).
- :mod:`mrag.serve.ingress`: the FastAPI app and the ``SearchIngress`` deployment.
- :mod:`mrag.serve.gate`: what a request passes before a route runs (drain, admission, token,
  body limit) and how errors are said.
- :mod:`mrag.serve.search`, :mod:`mrag.serve.answer`: what ``/v1/search`` and ``/v1/answer`` do
  once a request is valid.
- :mod:`mrag.serve.retriever`, :mod:`mrag.serve.reranker`, :mod:`mrag.serve.generator`: the
  other deployments.
- :mod:`mrag.serve.builder`: binds them into an application (``build_app``, ``app_builder``).
- :mod:`mrag.serve.runner`: ``run_server`` and ``serve_until_stopped``, what ``mrag serve`` runs
  (loopback unless a token is set).
- :mod:`mrag.serve.shutdown`: the clean stop on SIGTERM or Ctrl-C (drain the ingress, then shut
  Serve and Ray down).
- :mod:`mrag.serve.app`: the entry points (``serve run mrag.serve.app:app``).

HTTP API (JSON in and out; the schema is served at ``/openapi.json`` and ``/docs``):

- ``GET /healthz`` → ``{"status": "ok", ...}``; never needs a token (load-balancer probes); 503
  once the server drains for a shutdown.
- ``POST /v1/search`` with ``{"query": "a red car"}`` or ``{"image": "<base64 image bytes>"}``
  plus optional ``"k"`` (default 10, at most ``serve.max_k``), ``"mode"`` (``vector``, ``fts`` or
  ``hybrid``, the default: every embedding space plus full-text, fused by RRF), ``"filters"``
  (``{"modality": "image" | [...], "uri_prefix": "s3://bucket/photos/", "page": 2}``) and
  ``"include_thumbnail"`` → ``{"hits": [{"chunk_id", "asset_id", "uri", "modality", "score",
  ...}], "took_ms": 12.3}``, hits best first.

When a token is configured (``MRAG_API_TOKEN`` in the environment of the process that builds the
application), every ``/v1/`` call needs ``Authorization: Bearer <token>``.

Errors are always ``{"error": "<what is wrong and how to fix it>"}``: 401 for a missing or wrong
token, 413 for a body over ``serve.max_body_bytes``, 400 for every other problem with a request
(malformed JSON, not an object, unknown field, neither or both of query and image, ``k`` out of
range or not an integer, an unknown mode or ``fts`` with an image, bad filters, invalid base64,
bytes that are not an image, an image over ``ingest.max_image_pixels``), 409 when the database
has no full-text index yet, 404 and 405 for unknown routes and methods, 503 when the server is
at the capacity it measured, a queue is full or the server is shutting down (with
``Retry-After``: seconds to wait before retrying), and 500 for anything unexpected. 422 is never
used.

Overload: each ingress replica admits as many searches at once as it answers per second times
``serve.admission_target_latency_s`` (:class:`mrag.serve.gate.AdaptiveLimit`) and refuses the
others before reading their bodies, telling each refused client how long the clients already
waiting will take to serve. Model deployments autoscale between ``serve.<stage>_replicas`` and
``serve.<stage>_max_replicas``; the retriever and a model-free reranker can run inside the
ingress (``serve.retriever_replicas: 0``, ``serve.reranker_replicas: 0``), one Ray hop fewer each.

The image is always the request's own bytes: the API never opens a path or fetches a URL a
client names. ``mrag serve`` binds 127.0.0.1 unless told otherwise and refuses any other
address without ``MRAG_API_TOKEN``; the token is never logged nor echoed.
"""
