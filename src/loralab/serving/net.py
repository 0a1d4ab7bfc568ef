"""Sockets for the HTTP service: binding (with TCP_NODELAY), a server in a thread, loopback checks."""

import contextlib
import ipaddress
import socket
import threading
import time
from collections.abc import Iterator


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket for uvicorn (``port=0``: a free port).

    Created with ``proto=IPPROTO_TCP`` on purpose: asyncio sets TCP_NODELAY only on sockets that
    say so, and without it every response (headers and body are two writes) waits ~40 ms for
    the client's delayed ACK (Nagle's algorithm).
    """
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)  # connectable from now on: clients wait in the backlog until uvicorn runs
    except OSError:
        sock.close()
        raise
    return sock


@contextlib.contextmanager
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, timeout: float = 30.0) -> Iterator[str]:
    """Run ``app`` with uvicorn in a background thread (tests, benchmarks); yields its base URL.
    ``port=0`` picks a free port. The server stops when the block exits."""
    import uvicorn

    sock = bind_socket(host, port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="loralab-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
    try:
        yield f"http://{shown}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
