"""Server-side requests go where they were checked: a webhook is sent to the address its check resolved (a DNS
answer that changes in between, rebinding, reaches nothing else), redirects are not followed, and a tracker URI
is checked again where the worker uses it. Names are resolved by a scripted resolver (socket.getaddrinfo), the
one edge a test cannot run for real; the receivers are real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from api.settings import Settings
from api.targets import TargetError, pin
from worker.integrations import check_target
from worker.webhooks import send

PUBLIC = "93.184.215.14"  # a global address; nothing here can reach it, which is the point


class Server:
    """An HTTP server on 127.0.0.1 that keeps every request and answers `status` (with `location`)."""

    def __init__(self, status: int = 200, location: str | None = None):
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                server.hits.append(f"{self.command} {self.path}")
                self.send_response(status)
                if location:
                    self.send_header("location", location)
                self.send_header("content-length", "0")
                self.end_headers()

            do_GET = do_POST = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_port
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def rebinding(monkeypatch):
    """`rebind.test` answers a public address to the first lookup and 127.0.0.1 to every later one."""
    real = socket.getaddrinfo
    answers = [PUBLIC]

    def getaddrinfo(host, port, *args, **kwargs):
        if host == "rebind.test":
            address = answers.pop(0) if answers else "127.0.0.1"
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def shared_settings() -> Settings:
    settings = Settings(broker_url="redis://127.0.0.1:1/0", host="0.0.0.0", allow_private_targets=None)
    assert not settings.private_targets_allowed
    return settings.model_copy(update={"webhook_timeout_seconds": 1})


def test_a_rebound_webhook_name_reaches_only_the_checked_address(rebinding):
    internal = Server()
    try:
        with httpx.Client(timeout=1, follow_redirects=False, trust_env=False) as client:
            url = f"http://rebind.test:{internal.port}/hook"
            attempt = send(client, shared_settings(), url, "whsec_" + "A" * 32, "msg_1", "{}")
        assert not attempt.ok and internal.hits == []  # it went to PUBLIC (unreachable), never to 127.0.0.1
    finally:
        internal.close()


def test_pinning_keeps_the_name_for_host_and_tls():
    def resolver(host, port, *args, **kwargs):
        return [(socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:4700::1", port, 0, 0))]

    real, socket.getaddrinfo = socket.getaddrinfo, resolver
    try:
        assert pin("https://hooks.example:8443/a?b=1", allow_private=False) == (
            "https://[2606:4700::1]:8443/a?b=1",
            {"host": "hooks.example:8443"},
            {"sni_hostname": "hooks.example"},
        )
        assert pin("http://hooks.example/a", allow_private=True) == ("http://hooks.example/a", {}, {})
    finally:
        socket.getaddrinfo = real


def test_a_webhook_redirect_is_not_followed():
    internal = Server()
    redirecting = Server(307, f"http://127.0.0.1:{internal.port}/internal")
    try:
        with httpx.Client(timeout=1, trust_env=False) as client:
            settings = Settings(allow_private_targets=True)
            attempt = send(
                client, settings, f"http://127.0.0.1:{redirecting.port}/hook", "whsec_" + "A" * 32, "m", "{}"
            )
        assert attempt.status_code == 307 and not attempt.ok and internal.hits == []
    finally:
        internal.close()
        redirecting.close()


def test_a_tracker_uri_is_checked_again_where_it_is_used(monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_HTTP_REDIRECTS", raising=False)
    # Stored at submit on a deployment that allowed it (or resolved elsewhere then): refused at use here.
    with pytest.raises(TargetError, match="UDS_ALLOW_PRIVATE_TARGETS"):
        check_target({"type": "mlflow", "tracking_uri": "http://127.0.0.1:5000"}, allow_private=False)
    with pytest.raises(TargetError):
        check_target({"type": "mlflow", "tracking_uri": "file:///tmp/mlruns"}, allow_private=False)
    check_target({"type": "mlflow", "tracking_uri": "http://127.0.0.1:5000"}, allow_private=True)
    check_target({"type": "wandb", "wandb": {"project": "p"}}, allow_private=False)


def test_mlflow_follows_no_redirect_where_private_targets_are_refused(rebinding, monkeypatch):
    """The tracker's name passes the check, then its server answers 307 to an internal address: not followed."""
    monkeypatch.delenv("MLFLOW_ALLOW_HTTP_REDIRECTS", raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    internal = Server()
    tracker = Server(307, f"http://127.0.0.1:{internal.port}/api/2.0/mlflow/experiments/get-by-name")
    try:
        spec = {"type": "mlflow", "tracking_uri": f"http://rebind.test:{tracker.port}", "experiment": "x"}
        check_target(spec, allow_private=False)  # resolves PUBLIC: allowed
        from worker.integrations import MlflowTracker

        with pytest.raises(Exception):  # noqa: B017 - MLflow's own error for a 3xx answer
            MlflowTracker(spec, "ftjob-x").start()
        assert tracker.hits and internal.hits == []
    finally:
        internal.close()
        tracker.close()
