"""``mrag serve``: the search API on a local (or joined) Ray, in this process."""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING

from mrag.serve.builder import APP_NAME, TOKEN_ENV, build_app

if TYPE_CHECKING:
    from mrag.config import MragConfig

log = logging.getLogger(__name__)

_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def run_server(config: MragConfig, *, blocking: bool = True) -> str:
    """Starts (or joins) Ray, starts Serve on ``serve.host:serve.port`` and deploys the app.

    Returns the base URL. With ``blocking`` it serves until Ctrl-C and then shuts Serve down;
    without, it returns once the application is running and Serve keeps running in the Ray
    instance (callers own ``serve.shutdown()``).
    """
    from ray import serve

    from mrag.ray_runtime import init_ray

    host, port = config.serve.host, config.serve.port
    if host not in _LOOPBACK_HOSTS and not os.environ.get(TOKEN_ENV):
        log.warning(
            "serving on %s without %s: /v1/ is open to anyone who can reach it", host, TOKEN_ENV
        )
    init_ray(config.ray_address)
    serve.start(http_options={"host": host, "port": port})
    url = f"http://{host}:{port}"
    where = (
        f"page {url}/, POST {url}/v1/search and {url}/v1/answer "
        f"(docs: {url}/docs, health: {url}/healthz)"
    )
    application = build_app(config)
    if not blocking:
        serve.run(application, name=APP_NAME, route_prefix="/")
        print(f"mrag API ready: {where}", flush=True)
        return url
    print(f"mrag API starting: {where}; Ctrl-C stops it", flush=True)
    try:
        serve.run(application, name=APP_NAME, route_prefix="/", blocking=True)
    except KeyboardInterrupt:
        serve.shutdown()
    return url
