"""Drive a XenstoreCore with packets, as a connection would, and pick replies apart."""

from __future__ import annotations

from dataclasses import dataclass, field

from xenvirtio.spec.xs_wire import XsdSockmsgType as T
from xenvirtio.xenstore.core import Effect, Send, XenstoreCore
from xenvirtio.xenstore.quota import Quota
from xenvirtio.xenstore.wire import Packet


@dataclass
class Reply:
    packet: Packet
    effects: list[Effect]

    @property
    def error(self) -> str | None:
        if self.packet.type == T.XS_ERROR:
            return self.packet.payload.rstrip(b"\0").decode()
        return None

    @property
    def payload(self) -> bytes:
        return self.packet.payload


@dataclass
class Harness:
    quota: Quota | None = None
    core: XenstoreCore = field(init=False)
    next_req: int = 100

    def __post_init__(self) -> None:
        self.core = XenstoreCore(self.quota)

    def connect(self, conn_id: int, domid: int = 0) -> int:
        self.core.connect(conn_id, domid)
        return conn_id

    def send(
        self, conn: int, type_: int, *args: bytes | str, tx: int = 0, terminate: bool = True
    ) -> Reply:
        self.next_req += 1
        packet = Packet.build(type_, self.next_req, tx, *args, terminate=terminate)
        return self.send_packet(conn, packet)

    def send_packet(self, conn: int, packet: Packet) -> Reply:
        effects = self.core.handle(conn, packet)
        replies = [
            e
            for e in effects
            if isinstance(e, Send) and e.conn_id == conn and e.packet.type != T.XS_WATCH_EVENT
        ]
        assert len(replies) == 1, effects
        reply = replies[0].packet
        assert reply.req_id == packet.req_id and reply.tx_id == packet.tx_id
        assert reply.type in (packet.type, T.XS_ERROR)
        return Reply(reply, effects)

    def ok(
        self, conn: int, type_: int, *args: bytes | str, tx: int = 0, terminate: bool = True
    ) -> bytes:
        reply = self.send(conn, type_, *args, tx=tx, terminate=terminate)
        assert reply.error is None, reply.error
        return reply.payload

    def err(
        self, conn: int, type_: int, *args: bytes | str, tx: int = 0, terminate: bool = True
    ) -> str:
        reply = self.send(conn, type_, *args, tx=tx, terminate=terminate)
        assert reply.error is not None, reply.payload
        return reply.error

    # Shorthands for the common requests.
    def write(self, conn: int, path: str, value: bytes | str, tx: int = 0) -> Reply:
        return self.send(conn, T.XS_WRITE, path, value, tx=tx, terminate=False)

    def read(self, conn: int, path: str, tx: int = 0) -> Reply:
        return self.send(conn, T.XS_READ, path, tx=tx)

    def start(self, conn: int) -> int:
        return int(self.ok(conn, T.XS_TRANSACTION_START, "").rstrip(b"\0"))

    def end(self, conn: int, tx: int, commit: bool = True) -> Reply:
        return self.send(conn, T.XS_TRANSACTION_END, "T" if commit else "F", tx=tx)

    def perms(self, conn: int, path: str, *perms: str, tx: int = 0) -> Reply:
        return self.send(conn, T.XS_SET_PERMS, path, *perms, tx=tx)


def events(effects: list[Effect], conn: int | None = None) -> list[tuple[str, str]]:
    """(path, token) of the watch events among ``effects`` (for one connection)."""
    out = []
    for e in effects:
        if not isinstance(e, Send) or e.packet.type != T.XS_WATCH_EVENT:
            continue
        if conn is None or e.conn_id == conn:
            path, token, rest = e.packet.payload.split(b"\0")
            assert rest == b""
            out.append((path.decode(), token.decode()))
    return out
