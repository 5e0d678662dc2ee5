"""An upload over the size limit is refused while it streams, over a real socket to a real uvicorn server:
the 413 arrives while the client is still sending (long before the whole body is sent), and nothing is stored.
With a declared Content-Length over the limit the 413 comes before a single body byte is sent."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from api.main import create_app
from api.settings import Settings
from tests.utils.service import free_port

LIMIT = 256 * 1024
TOTAL = 256 * 1024 * 1024  # what the client would send if the server let it: 1000 x the limit
CHUNK = 64 * 1024
LINE = (
    json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x" * 200}]}) + "\n"
).encode()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("streaming")
    settings = Settings(
        data_dir=data,
        database_url=f"sqlite:///{data}/uds.db",
        broker_url=None,
        require_auth=False,
        max_upload_bytes=LIMIT,
        embedded_worker=False,
        min_examples=2,
    )
    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    instance = uvicorn.Server(config)
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    yield {"port": port, "data": data}
    instance.should_exit = True
    thread.join(10)


def stored(data_dir) -> list[str]:
    return [str(p) for p in (data_dir / "datasets").rglob("*") if p.is_file()] + [
        str(p) for p in (data_dir / "tmp").rglob("*") if p.is_file()
    ]


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    sock.settimeout(10)
    raw = b""
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in raw or len(raw) < raw.index(b"\r\n\r\n") + 4 + 10:
            part = sock.recv(65536)
            if not part:
                break
            raw += part
            if b"}}" in raw:
                break
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("path", ["/api/v1/datasets", "/v1/files"])
def test_chunked_upload_over_the_limit_is_cut_off_while_streaming(server, path):
    boundary = "fuzzboundary"
    preamble = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.jsonl"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    sock = socket.create_connection(("127.0.0.1", server["port"]))
    sock.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
        ).encode()
    )
    payload = LINE * (CHUNK // len(LINE))
    sent, answered = 0, False
    sock.sendall(b"%x\r\n%s\r\n" % (len(preamble), preamble))
    sock.setblocking(False)
    deadline = time.monotonic() + 60
    while sent < TOTAL and time.monotonic() < deadline:
        readable, writable, _ = select.select([sock], [sock], [], 1)
        if readable:
            answered = True
            break
        if writable:
            frame = b"%x\r\n%s\r\n" % (len(payload), payload)
            try:
                sock.send(frame)  # partial sends just truncate the frame: the server answers before parsing it
            except (BrokenPipeError, ConnectionResetError):
                answered = True
                break
            sent += len(payload)
    sock.setblocking(True)
    status, body = read_response(sock)
    sock.close()
    assert answered and status == 413, (status, body[:300])
    assert json.loads(body[body.index(b"{") : body.rindex(b"}") + 1])["error"]["code"] == "file_too_large"
    # The server stopped reading at the limit; what the client got out is the limit plus the loopback socket
    # buffers (a few MiB), nowhere near the quarter GiB it was going to send.
    assert sent < 32 * 1024 * 1024, sent
    assert stored(server["data"]) == []


@pytest.mark.parametrize("path", ["/api/v1/datasets", "/v1/files"])
def test_declared_oversize_is_refused_before_any_body_byte(server, path):
    sock = socket.create_connection(("127.0.0.1", server["port"]))
    sock.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {10 * 1024**3}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n\r\n"
        ).encode()
    )
    status, body = read_response(sock)  # not one byte of the 10 GiB body was sent
    sock.close()
    assert status == 413, body[:300]
    assert stored(server["data"]) == []


def test_a_good_upload_still_works(server):
    response = httpx.post(
        f"http://127.0.0.1:{server['port']}/api/v1/datasets", files={"file": ("ok.jsonl", LINE * 4)}, timeout=30
    )
    assert response.status_code == 201, response.text
