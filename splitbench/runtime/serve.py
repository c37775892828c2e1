"""``splitbench serve RUN_DIR | BUNDLE --run RUN_DIR | RUN_DIR --codec jpeg``: the edge server on uvicorn, and the
same server in a thread.

What a server needs is the run folder (the server network and the coder); a bundle only says which model its
devices run. So ``serve RUN_DIR`` serves the run, and ``serve BUNDLE --run RUN_DIR`` serves the run *and* checks,
at start, that the bundle was exported from it (fingerprints equal), then reports the bundle's manifest on
``GET /v1/model``. The manifest names its run (``OUT/<run>``) but not the ``OUT`` folder it was trained in,
so ``--run`` is required with a bundle rather than guessed. ``serve RUN_DIR --codec NAME`` serves an unsplit
(classifier) run behind a standard image codec: the full-offloading reference
(:mod:`~splitbench.runtime.codec_server`).

The server binds 127.0.0.1 by default; binding any other address without a token is refused, since anyone who
can reach the port could then use the model.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from splitbench.errors import SplitbenchError
from splitbench.runtime.app import Model, ServeSettings, create_app
from splitbench.runtime.bundle import MANIFEST
from splitbench.runtime.codec_server import DEFAULT_MAX_PIXELS, CodecServer
from splitbench.runtime.server import Server

MAX_CONNECTIONS = 512  # uvicorn answers 503 beyond this many open connections and tasks


def load_model(target: Path, run: Path | None = None, codec: str | None = None,
               max_pixels: int | None = None) -> tuple[Model, dict[str, Any] | None]:
    """The server of ``target`` (a run folder, a bundle with ``run`` its run folder, or an unsplit run folder
    behind ``codec``, refusing images over ``max_pixels``) and the bundle's manifest."""
    target = Path(target)
    if codec is not None:
        if run is not None or (target / MANIFEST).is_file():
            raise SplitbenchError("--codec serves an unsplit run folder (the device sends image files); bundles "
                                  "and --run are for learned bottlenecks")
        return CodecServer(target, codec, max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels), None
    if max_pixels is not None:
        raise SplitbenchError("--max-pixels goes with --codec (a learned bottleneck's stream carries its own size)")
    if (target / MANIFEST).is_file():
        if run is None:
            raise SplitbenchError(f"{target} is a bundle; its server runs the run it was exported from: pass "
                                  f"--run OUT/<run> (the run folder)")
        server = Server(run)
        return server, server.check_bundle(target)
    if run is not None:
        raise SplitbenchError(f"--run goes with a bundle; {target} is not one (no {MANIFEST})")
    return Server(target), None


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def uvicorn_config(app: FastAPI, settings: ServeSettings) -> uvicorn.Config:
    if not is_loopback(settings.host) and not settings.token:
        raise SplitbenchError(f"refusing to serve on {settings.host} without a token: pass --token (or set "
                              f"SPLITBENCH_TOKEN), or keep the default 127.0.0.1")
    return uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning", access_log=False,
                          timeout_keep_alive=5, limit_concurrency=MAX_CONNECTIONS, lifespan="on")


def serve(target: Path, settings: ServeSettings, run: Path | None = None, codec: str | None = None,
          max_pixels: int | None = None) -> None:
    """Load the model and serve it until interrupted."""
    model, manifest = load_model(target, run, codec, max_pixels)
    uvicorn.Server(uvicorn_config(create_app(model, settings, manifest), settings)).run()


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class ThreadedServer:
    """The server in a background thread of this process (tests, benchmarks): ``with ThreadedServer(app, settings)
    as url: ...``; :meth:`stop` (or leaving the block) closes every connection and waits for the thread."""

    def __init__(self, app: FastAPI, settings: ServeSettings, start_timeout_s: float = 30.0) -> None:
        self.settings = settings
        self.server = uvicorn.Server(uvicorn_config(app, settings))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="splitbench-serve")
        self.start_timeout_s = start_timeout_s

    @property
    def url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"

    def start(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise SplitbenchError(f"the server did not start on {self.url}")
            time.sleep(0.01)
        return self.url

    def stop(self, force: bool = False) -> None:
        self.server.should_exit = True
        self.server.force_exit = force
        self.thread.join(timeout=10)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
