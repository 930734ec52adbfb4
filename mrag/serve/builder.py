"""Binds the deployments into one Serve application, from a config or from ``serve run`` args.

Building needs no Ray and touches no database: each replica builds its own model and store.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from mrag.config import MragConfig, load_config
from mrag.errors import ConfigError
from mrag.serve.encoder import QueryEncoder
from mrag.serve.generator import GeneratorDeployment
from mrag.serve.ingress import SearchIngress
from mrag.serve.reranker import RerankerDeployment
from mrag.serve.retriever import RetrieverDeployment

if TYPE_CHECKING:
    from ray import serve

#: The application name ``run_server`` and ``cluster/serve.yaml`` use.
APP_NAME = "mrag"
#: Environment variables read when the application is built (not when a module is imported).
TOKEN_ENV = "MRAG_API_TOKEN"
CONFIG_ENV = "MRAG_CONFIG"
DB_ENV = "MRAG_DB"
CLIP_WEIGHTS_ENV = "MRAG_CLIP_WEIGHTS"

_INGRESS_NUM_CPUS = 0.25  # parsing, base64, LanceDB calls: I/O bound; decoding runs in a thread
#: Retry-After of the 503 Serve's proxy answers when the ingress's own queue is full (the
#: ingress's admission gate, mrag.serve.gate, says more precisely when it refuses).
_PROXY_RETRY_AFTER_S = 1
#: The stages with a model: each its own deployment, scaled (and autoscaled) apart.
MODEL_STAGES = ("encoder", "reranker", "generator")


def build_app(
    config: MragConfig, *, api_token: str | None = None, drain_coordinator: Any = None
) -> serve.Application:
    """The query encoder, the retriever, the reranker (when one is configured), the generator
    and the ingress, bound into one application; each deployment has its own replicas,
    resources and queue (``serve.max_queued_requests``: past it a call is refused with 503 at
    once). The model stages autoscale when ``serve.<stage>_max_replicas`` is above
    ``serve.<stage>_replicas`` (:func:`replica_options`). ``serve.retriever_replicas: 0`` and
    ``serve.reranker_replicas: 0`` fold those stages into the ingress (one Ray hop fewer each).

    Args:
        config: the whole config; shipped to each replica, which builds its own model and store.
        api_token: bearer token for ``/v1/``; defaults to ``MRAG_API_TOKEN`` in this process.
        drain_coordinator: ``mrag serve``'s shutdown coordinator actor
            (:mod:`mrag.serve.shutdown`), or ``None``.
    """
    serve_config = config.serve
    token = api_token if api_token is not None else env_token()
    queue = {
        "max_ongoing_requests": serve_config.max_ongoing_requests,
        "max_queued_requests": serve_config.max_queued_requests,
    }

    def bound(deployment: Any, stage: str) -> Any:
        """``deployment`` with its replicas (:func:`replica_options`), ``serve.<stage>_num_cpus``
        (and ``_num_gpus``)."""
        resources = {"num_cpus": getattr(serve_config, f"{stage}_num_cpus")}
        if hasattr(serve_config, f"{stage}_num_gpus"):  # a model stage
            resources["num_gpus"] = getattr(serve_config, f"{stage}_num_gpus")
            if serve_config.model_resources:
                resources["resources"] = dict(serve_config.model_resources)
        return deployment.options(
            **replica_options(config, stage),
            **queue,
            ray_actor_options=resources,
        ).bind(config)

    encoder = bound(QueryEncoder, "encoder")
    has_reranker = config.rerank.visual != "none" or config.rerank.text not in ("", "none")
    reranker = None
    if has_reranker and serve_config.reranker_replicas:
        reranker = bound(RerankerDeployment, "reranker")
    searcher = bound(RetrieverDeployment, "retriever") if serve_config.retriever_replicas else None
    generator = bound(GeneratorDeployment, "generator")
    return SearchIngress.options(
        max_ongoing_requests=serve_config.ingress_max_ongoing_requests,
        max_queued_requests=serve_config.max_queued_requests,
        backpressure_config={"retry_after_s": _PROXY_RETRY_AFTER_S},
        ray_actor_options={"num_cpus": _INGRESS_NUM_CPUS},
    ).bind(config, encoder, token, reranker, generator, searcher, drain_coordinator)


def replica_options(config: MragConfig, stage: str) -> dict[str, Any]:
    """``num_replicas``, or for a model stage whose ``serve.<stage>_max_replicas`` is above its
    ``serve.<stage>_replicas``, Serve's ``autoscaling_config`` between the two (the replicas
    keep about ``serve.<stage>_target_ongoing_requests`` calls each, queued ones included).

    The ingress's handles report each deployment's demand every
    ``serve.autoscale_metrics_interval_s``; Serve averages it over ``autoscale_look_back_s``
    and acts once a change has been wanted for ``autoscale_upscale_delay_s`` (up) or
    ``autoscale_downscale_delay_s`` (down). Serve drains a replica before it stops it, so
    requests in flight finish.
    """
    serve_config = config.serve
    least = getattr(serve_config, f"{stage}_replicas")
    most = getattr(serve_config, f"{stage}_max_replicas", 0) if stage in MODEL_STAGES else 0
    if most <= least:
        return {"num_replicas": least}
    return {
        "autoscaling_config": {
            "min_replicas": least,
            "initial_replicas": least,
            "max_replicas": most,
            "target_ongoing_requests": getattr(serve_config, f"{stage}_target_ongoing_requests"),
            "upscale_delay_s": serve_config.autoscale_upscale_delay_s,
            "downscale_delay_s": serve_config.autoscale_downscale_delay_s,
            "look_back_period_s": serve_config.autoscale_look_back_s,
            "metrics_interval_s": serve_config.autoscale_metrics_interval_s,
        }
    }


def env_token() -> str | None:
    """``MRAG_API_TOKEN`` of this process, ``None`` when unset or blank."""
    return os.environ.get(TOKEN_ENV, "").strip() or None


def app_builder(args: dict[str, str]) -> serve.Application:
    """``serve run mrag.serve.app:app_builder db=... profile=... clip_weights=... serve.max_k=50``.

    Keys: ``config`` (YAML path), ``profile``, ``db`` (``db_uri``), any top-level config field
    (``clip_weights``, ``seed``...) and any dotted ``section.field``; anything else is a
    :class:`~mrag.errors.ConfigError`. Also usable as ``args:`` of an application in a Serve
    config file.
    """
    args = dict(args or {})
    path = args.pop("config", None) or os.environ.get(CONFIG_ENV)
    profile = args.pop("profile", None)
    overrides: dict[str, Any] = {"db_uri": args.pop("db", None) or os.environ.get(DB_ENV)}
    sections = {
        name for name, field in MragConfig.model_fields.items()
        if isinstance(field.default_factory, type)
    }  # fmt: skip
    fields = set(MragConfig.model_fields) - sections - {"profile"}
    for key, value in args.items():
        if "." not in key and key not in fields:
            raise ConfigError(
                f"app_builder: unknown argument {key!r}; allowed: config, profile, db, "
                f"{', '.join(sorted(fields))}, or section.field such as serve.max_k"
            )
        overrides[key] = value
    return build_app(load_config(path, profile=profile, overrides=overrides))


def app_from_env() -> serve.Application:
    """The application ``MRAG_CONFIG``, ``MRAG_DB``, ``MRAG_PROFILE`` and ``MRAG_CLIP_WEIGHTS``
    describe (what ``serve run mrag.serve.app:app`` and ``cluster/serve.yaml`` deploy)."""
    overrides = {"db_uri": os.environ.get(DB_ENV), "clip_weights": os.environ.get(CLIP_WEIGHTS_ENV)}
    return build_app(load_config(os.environ.get(CONFIG_ENV), overrides=overrides))
