"""Entry points of the search API (the package docstring, :mod:`mrag.serve`, has the HTTP API).

Start it (each loads the config the same way as the CLI)::

    mrag serve --db ./mrag-db --profile offline                 # local Ray, 127.0.0.1:8000
    MRAG_DB=./mrag-db MRAG_PROFILE=offline serve run mrag.serve.app:app
    serve run mrag.serve.app:app_builder db=./mrag-db profile=offline serve.max_k=50
    serve deploy cluster/serve.yaml                             # a running Ray cluster
"""

from __future__ import annotations

from typing import Any

from mrag.serve.builder import APP_NAME, app_builder, app_from_env, build_app
from mrag.serve.runner import run_server

# ``app`` is left out: a star import would build an application.
__all__ = ["APP_NAME", "app_builder", "build_app", "run_server"]


def __getattr__(name: str) -> Any:
    """``mrag.serve.app:app``, built on access from ``MRAG_CONFIG``, ``MRAG_DB``,
    ``MRAG_PROFILE`` and ``MRAG_CLIP_WEIGHTS``.

    Lazy (PEP 562) so importing this module reads no config and touches no database.
    """
    if name == "app":
        return app_from_env()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
