"""The app behind a real uvicorn socket: size limits before the body is read, and the serve command."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

from .conftest import AUTH, TOKEN, bundle_24h, free_port


def _raw(url: str, head: bytes, body: bytes = b"") -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head + body)
        data = b""
        while b"\r\n\r\n" not in data or not data.endswith(b"}"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_a_50_megabyte_upload_is_refused_before_it_is_read(live_server):
    head = (b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: " + AUTH["Authorization"].encode() + b"\r\nContent-Length: 52428800\r\n\r\n")
    t0 = time.monotonic()
    answer = _raw(live_server, head, b"{" * 1000)   # the client has sent 1 kB of its 50 MB
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"larger than the limit" in answer and time.monotonic() - t0 < 5
    assert httpx.post(f"{live_server}/v1/score", json=bundle_24h(), headers=AUTH, timeout=30).status_code == 200


def test_a_chunked_body_over_the_limit_is_refused(live_server):
    head = (b"POST /v1/score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: " + AUTH["Authorization"].encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
    chunk = b" " * 65536
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20))   # 1.25 MB > 1 MB
    answer = _raw(live_server, head, body + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert httpx.get(f"{live_server}/healthz").status_code == 200


@pytest.mark.slow
def test_serve_command_binds_loopback_and_answers(served, tmp_path):
    port = free_port()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "sepsiscope.cli", "serve", "--run", str(served.cpn_dir.parent.parent),
           "--cohort", str(served.cohort_dir), "--port", str(port), "--token-file", str(token_file),
           "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "serve did not answer within 120 s"
            time.sleep(0.3)
        info = httpx.get(f"http://127.0.0.1:{port}/v1/model", headers=AUTH).json()
        assert info["primary"]["name"] == "cpn" and [m["name"] for m in info["compare"]] == ["lightgbm"]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/model").status_code == 401
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert f"page: http://127.0.0.1:{port}/" in out and TOKEN not in out
