"""Slow clients against the real `flask serve`, over real sockets: they cannot hold the server.

The attacking sockets come from 127.0.0.2 (all of 127/8 is loopback on Linux), the well-behaved
client from 127.0.0.1, so the per-IP connection limit tells them apart as it would two hosts.
"""
from __future__ import annotations

import socket
import threading
import time

import pytest
import requests

from faultproc import EmbeddedPostgres, ServerProcess

READ_TIMEOUT = 3
PER_IP = 10
PARTIAL_POST = (b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: 100000\r\n\r\n[")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pg = EmbeddedPostgres()
    process = ServerProcess(
        tmp_path_factory.mktemp("slow-clients"), pg.data_dir,
        EVENTSAPP_REQUEST_READ_TIMEOUT=str(READ_TIMEOUT), EVENTSAPP_MAX_CONNECTIONS_PER_IP=str(PER_IP),
        EVENTSAPP_CHANNEL_TIMEOUT="30",
    )
    try:
        yield process.wait_ready()
    finally:
        process.terminate()
        pg.close()


def open_slow(port: int, source: str = "127.0.0.2") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock.sendall(PARTIAL_POST)
    return sock


def trickle(sockets: list[socket.socket], stop: threading.Event, every: float) -> None:
    """Send one more body byte on each socket every ``every`` seconds: never idle, never done."""
    while not stop.wait(every):
        for sock in sockets:
            try:
                sock.send(b" ")
            except OSError:
                pass  # closed by the server: what we want


@pytest.mark.slow
def test_many_trickling_connections_do_not_block_other_clients(server):
    stop = threading.Event()
    sockets = []
    try:
        for _ in range(120):
            try:
                sockets.append(open_slow(server.port))
            except OSError:
                pass  # refused outright is fine too
        sender = threading.Thread(target=trickle, args=(sockets, stop, 1.0), daemon=True)
        sender.start()
        for _ in range(5):  # while the 120 are trickling, for longer than the read deadline
            started = time.monotonic()
            response = requests.get(server.url + "/health", timeout=5)
            assert response.status_code == 200
            assert time.monotonic() - started < 3
            time.sleep(1)
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
    assert "refused a connection: 127.0.0.2 already holds" in server.log()


@pytest.mark.slow
def test_a_request_trickling_in_is_closed_after_the_read_timeout(server):
    sock = open_slow(server.port)
    sock.settimeout(0.5)
    started = time.monotonic()
    closed_after = None
    try:
        while time.monotonic() - started < 15:
            try:
                sock.send(b" ")  # progress every half second: the channel timeout alone never fires
                if sock.recv(4096) == b"":
                    closed_after = time.monotonic() - started
                    break
            except socket.timeout:
                continue
            except OSError:
                closed_after = time.monotonic() - started
                break
    finally:
        sock.close()
    assert closed_after is not None, "the server kept a request trickling in for 15 s"
    assert READ_TIMEOUT - 0.5 <= closed_after <= READ_TIMEOUT + 4, closed_after
    # An ordinary request from the same address is still served.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=("127.0.0.2", 0)) as ok:
        ok.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert ok.recv(4096).startswith(b"HTTP/1.1 200")


@pytest.mark.slow
def test_a_client_over_its_connection_limit_gets_a_503(server):
    held = [open_slow(server.port, "127.0.0.3") for _ in range(PER_IP)]
    try:
        time.sleep(0.5)  # let the server accept them
        with socket.create_connection(("127.0.0.1", server.port), timeout=10,
                                      source_address=("127.0.0.3", 0)) as extra:
            extra.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = extra.recv(4096)
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"Retry-After: 5" in answer and b"Too many connections" in answer
    finally:
        for sock in held:
            sock.close()
