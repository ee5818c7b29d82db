"""A TCP request/response test (netperf's TCP_RR): one connection, a 1-byte request
answered by a 1-byte response, as many as fit in the time; prints transactions/s.

    python -m xenvirtio.bench.net_rr server ADDRESS PORT      (serves one connection)
    python -m xenvirtio.bench.net_rr client ADDRESS PORT SECONDS

Run each inside its network namespace (``ip netns exec``)."""

from __future__ import annotations

import socket
import sys
import time

_CONNECT_TRIES = 100


def serve(address: str, port: int) -> None:
    with socket.create_server((address, port)) as server:
        server.settimeout(60)
        conn, _ = server.accept()
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(1):
                conn.sendall(data)


def _connect(address: str, port: int) -> socket.socket:
    for _ in range(_CONNECT_TRIES):
        try:
            return socket.create_connection((address, port), timeout=10)
        except ConnectionRefusedError:
            time.sleep(0.05)
    raise ConnectionRefusedError(f"nothing listens on {address}:{port}")


def client(address: str, port: int, seconds: float) -> float:
    """Transactions per second over ``seconds``."""
    with _connect(address, port) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        count = 0
        start = time.perf_counter()
        deadline = start + seconds
        while True:
            conn.sendall(b"x")
            if not conn.recv(1):
                break
            count += 1
            if count % 64 == 0 and time.perf_counter() >= deadline:
                break
        return count / (time.perf_counter() - start)


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "server":
        serve(argv[1], int(argv[2]))
        return 0
    if len(argv) == 4 and argv[0] == "client":
        print(f"{client(argv[1], int(argv[2]), float(argv[3])):.1f}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
