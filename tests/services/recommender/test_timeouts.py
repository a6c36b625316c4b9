"""Slow clients are cut off: a real uvicorn server configured as `shelfsight serve` configures it."""

import socket
import threading
import time

import pytest
import uvicorn
from fastapi import FastAPI, Request

from services.recommender.http.timeouts import BodyTimeout, server_config
from services.settings import load_settings
from tests.ports import free_port


@pytest.fixture(scope="module")
def server():
    settings = load_settings(api_host="127.0.0.1", api_port=free_port(), api_head_timeout_s=0.5, api_body_timeout_s=0.5)
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"bytes": len(await request.body())}

    app.add_middleware(BodyTimeout, timeout_s=settings.api_body_timeout_s)
    server = uvicorn.Server(server_config(app, settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    yield settings
    server.should_exit = True
    thread.join(5)


def _connect(settings) -> socket.socket:
    conn = socket.create_connection((settings.api_host, settings.api_port), timeout=5)
    conn.settimeout(5)
    return conn


def _read_all(conn: socket.socket) -> bytes:
    chunks = []
    while chunk := conn.recv(4096):
        chunks.append(chunk)
    return b"".join(chunks)


def test_a_trickled_request_head_is_cut_off(server):
    conn = _connect(server)
    started = time.monotonic()
    conn.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\n")  # the head never ends
    try:
        assert _read_all(conn) == b""  # closed by the server, no answer
    except ConnectionResetError:
        pass
    assert time.monotonic() - started < 3


def test_a_trickled_body_gets_408(server):
    conn = _connect(server)
    conn.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    started = time.monotonic()
    answer = _read_all(conn)
    assert answer.startswith(b"HTTP/1.1 408") and b"not received within 0.5 s" in answer
    assert time.monotonic() - started < 3


def test_prompt_clients_keep_their_connection(server):
    conn = _connect(server)
    for _ in range(2):  # two requests on one keep-alive connection, the second after a pause
        conn.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc")
        answer = conn.recv(4096)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b'{"bytes":3}')
        time.sleep(0.2)
    conn.close()
