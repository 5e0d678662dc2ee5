"""Slow clients on real sockets against a real uvicorn server: one tenant's stalled uploads and unread downloads
must not take the service from another tenant, and are themselves capped and cut off.

The server's pool is 2 connections with a 2 s wait, so before the fix three stalled transfers were enough to
make every other request fail. The stalled state is reached deterministically, without sleeping or polling:
an upload sends `Expect: 100-continue` and waits for the server's `100 Continue` (sent when the route, its
dependencies done, first reads the body); a download reads its response headers (the route has returned and the
file is streaming) and then stops reading with a tiny receive buffer.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import httpx
import pytest
import uvicorn

from api.main import create_app
from api.settings import Settings
from tests.utils.factories import bearer, chat_rows, jsonl, new_tenant_key
from tests.utils.service import free_port

IDLE = 2.0
BIG = 32 * 1024 * 1024  # far more than the loopback socket buffers hold, so an unread download blocks


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("slow")
    url = f"sqlite:///{data}/uds.db"
    settings = Settings(
        data_dir=data,
        database_url=url,
        broker_url=None,
        require_auth=True,
        embedded_worker=False,
        min_examples=2,
        db_pool_size=2,
        db_max_overflow=0,
        db_pool_timeout_seconds=2,
        max_uploads_per_key=3,
        max_downloads_per_key=3,
        client_idle_timeout_seconds=IDLE,
        min_transfer_bytes_per_second=200,
    )
    port = free_port()
    app = create_app(settings)
    instance = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=instance.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not instance.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    attacker, victim = new_tenant_key(url)[1], new_tenant_key(url)[1]
    with httpx.Client(base_url=base, timeout=30) as client:
        big = (
            client.post("/v1/files", headers=bearer(attacker), files={"file": ("big.jsonl", jsonl(chat_rows(3)))})
            .raise_for_status()
            .json()
        )
    (data / "datasets" / f"{big['id']}.jsonl").write_bytes(b"x" * BIG)  # its stored file, now big
    yield {"port": port, "base": base, "attacker": attacker, "victim": victim, "big": big["id"], "app": app}
    instance.should_exit = True
    thread.join(10)


def _connect(port: int, rcvbuf: int | None = None) -> socket.socket:
    sock = socket.socket()
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(10)
    return sock


def _read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        part = sock.recv(1)
        assert part, f"connection closed after {head!r}"
        head += part
    return head


def stalled_upload(port: int, key: str, path: str = "/api/v1/datasets") -> socket.socket:
    """An upload whose route is reading the body, and which will not send it."""
    sock = _connect(port)
    sock.sendall(
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: 100000\r\n"
            "Expect: 100-continue\r\n\r\n"
        ).encode()
    )
    head = _read_head(sock)
    assert head.startswith(b"HTTP/1.1 100"), head
    return sock


def stalled_download(port: int, key: str, file_id: str) -> socket.socket:
    """A download that is streaming, read no further than its headers."""
    sock = _connect(port, rcvbuf=4096)
    sock.sendall(
        (f"GET /v1/files/{file_id}/content HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n\r\n").encode()
    )
    head = _read_head(sock)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


def test_stalled_transfers_leave_other_tenants_served(server):
    port, attacker = server["port"], server["attacker"]
    sockets = [stalled_upload(port, attacker) for _ in range(3)]
    sockets += [stalled_download(port, attacker, server["big"]) for _ in range(3)]
    try:
        with httpx.Client(base_url=server["base"], headers=bearer(server["victim"]), timeout=10) as victim:
            started = time.monotonic()
            assert victim.get("/api/v1/jobs").status_code == 200
            assert victim.get("/api/v1/datasets").status_code == 200
            assert victim.get("/readyz").status_code == 200
            uploaded = victim.post("/api/v1/datasets", files={"file": ("ok.jsonl", jsonl(chat_rows(3)))})
            assert uploaded.status_code == 201, uploaded.text
            # Well inside the pool's 2 s wait and the idle timeout: nothing queued behind the stalled clients.
            assert time.monotonic() - started < IDLE - 0.5
    finally:
        for sock in sockets:
            sock.close()


def test_per_key_caps_refuse_one_more_transfer(server):
    port, attacker = server["port"], server["attacker"]
    uploads = [stalled_upload(port, attacker) for _ in range(3)]
    downloads = [stalled_download(port, attacker, server["big"]) for _ in range(3)]
    try:
        with httpx.Client(base_url=server["base"], timeout=10) as client:
            # The same key spelled differently is still the same key.
            refused = client.post(
                "/api/v1/datasets",
                headers={"Authorization": f"BEARER   {attacker}"},
                files={"file": ("x.jsonl", jsonl(chat_rows(3)))},
            )
            assert refused.status_code == 429 and refused.json()["error"]["code"] == "too_many_transfers"
            assert "UDS_MAX_UPLOADS_PER_KEY" in refused.json()["error"]["message"] and refused.headers["retry-after"]
            more = client.get(f"/v1/files/{server['big']}/content", headers=bearer(attacker))
            assert more.status_code == 429, more.status_code
            # Another tenant's transfers are counted on their own.
            ok = client.post(
                "/v1/files", headers=bearer(server["victim"]), files={"file": ("ok.jsonl", jsonl(chat_rows(3)))}
            )
            assert ok.status_code == 200, ok.text
    finally:
        for sock in uploads + downloads:
            sock.close()


def test_a_stalled_upload_is_cut_off_after_the_idle_timeout(server):
    sock = stalled_upload(server["port"], server["attacker"], "/v1/files")
    started = time.monotonic()
    head = _read_head(sock)  # the server speaks first: the client sent nothing
    elapsed = time.monotonic() - started
    rest = b""
    with contextlib.suppress(OSError):
        while b"client_too_slow" not in rest and (part := sock.recv(4096)):
            rest += part
    sock.close()
    assert head.startswith(b"HTTP/1.1 408"), head
    assert b"client_too_slow" in rest and IDLE - 0.2 <= elapsed < IDLE + 5, (elapsed, rest)


def test_a_trickling_upload_is_cut_off_under_the_minimum_rate(server):
    """A byte every 0.3 s never idles out, but averages far under 200 bytes/s."""
    sock = stalled_upload(server["port"], server["attacker"])
    sock.sendall(b'--b\r\nContent-Disposition: form-data; name="file"; filename="t.jsonl"\r\n\r\n')
    sock.setblocking(False)
    deadline = time.monotonic() + IDLE + 10
    answer = b""
    while time.monotonic() < deadline and b"\r\n\r\n" not in answer:
        with contextlib.suppress(BlockingIOError):
            sock.send(b"x")
        time.sleep(0.3)
        with contextlib.suppress(BlockingIOError):
            answer += sock.recv(4096)
    sock.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"UDS_MIN_TRANSFER_BYTES_PER_SECOND" in answer, answer


def test_an_unread_download_is_dropped_and_its_slot_freed(server):
    port, attacker = server["port"], server["attacker"]
    sockets = [stalled_download(port, attacker, server["big"]) for _ in range(3)]
    try:
        # The state under test is "stalled for longer than the idle timeout": wait it out without reading.
        time.sleep(IDLE + 1.5)
        assert server["app"].state.transfers.in_flight("download") == 0
        # The server closed the connections: reading now drains what was buffered, then EOF.
        for sock in sockets:
            sock.settimeout(IDLE + 10)
            received = 0
            while part := sock.recv(1 << 20):
                received += len(part)
            assert received < BIG
        # The three slots are free again.
        with httpx.Client(base_url=server["base"], headers=bearer(attacker), timeout=30) as client:
            with client.stream("GET", f"/v1/files/{server['big']}/content") as response:
                assert response.status_code == 200
                assert sum(len(chunk) for chunk in response.iter_bytes()) == BIG
    finally:
        for sock in sockets:
            sock.close()
