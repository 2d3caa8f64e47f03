"""Tiny model servers on 127.0.0.1 for probe tests: real HTTP, ephemeral ports, threads.

Behaviours: "A" and "B" answer the replica contract with two different models; "slow"
answers like A after `delay` seconds; "500" fails; "garbage" answers non-JSON; "no-outputs"
answers JSON without the "outputs" key; "redirect" answers 307 to elsewhere.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


def model_a(inputs: Any) -> Any:
    x = inputs["x"]
    return {"label": "even" if x % 2 == 0 else "odd", "score": round(x * 0.5, 6)}


def model_b(inputs: Any) -> Any:
    x = inputs["x"]
    return {"label": "odd" if x % 2 == 0 else "even", "score": round(x * 0.5 + 0.2, 6)}


class ModelServer:
    def __init__(self, behaviour: str, delay: float = 1.0, sha256: str = "") -> None:
        self.behaviour = behaviour
        self.delay = delay
        self.sha256 = sha256
        self.requests: list[Any] = []
        self._release = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                server.requests.append((self.path, body))
                server.answer(self, body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def answer(self, handler: BaseHTTPRequestHandler, body: Any) -> None:
        if self.behaviour == "500":
            self._send(handler, 500, b'{"detail": "boom"}')
        elif self.behaviour == "garbage":
            self._send(handler, 200, b"<html>not json</html>")
        elif self.behaviour == "redirect":
            handler.send_response(307)
            handler.send_header("Location", "http://127.0.0.1:9/elsewhere")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        elif self.behaviour == "no-outputs":
            self._send(handler, 200, b'{"result": 1}')
        else:
            if self.behaviour == "slow":
                self._release.wait(self.delay)
            model = model_b if self.behaviour == "B" else model_a
            payload = {"outputs": model(body["inputs"])}
            if self.sha256:
                payload["sha256"] = self.sha256
            self._send(handler, 200, json.dumps(payload).encode())

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, data: bytes) -> None:
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass  # the prober gave up (timeout) and closed the socket

    def start(self) -> ModelServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@contextmanager
def running(*behaviours: str, **kwargs: Any) -> Iterator[list[ModelServer]]:
    servers = [ModelServer(b, **kwargs).start() for b in behaviours]
    try:
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(name="model_servers")
def model_servers_fixture():
    """model_servers("A", "A", "B") -> started servers, stopped at teardown."""
    started: list[ModelServer] = []

    def start(*behaviours: str, **kwargs: Any) -> list[ModelServer]:
        servers = [ModelServer(b, **kwargs).start() for b in behaviours]
        started.extend(servers)
        return servers

    yield start
    for server in started:
        server.stop()


def closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    server = ModelServer("A")
    url = server.url
    server.httpd.server_close()
    return url
