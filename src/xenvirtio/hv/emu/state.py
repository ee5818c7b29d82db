"""The emulated hypervisor's state: domains, connections and what each one holds.

Every resource a connection (a libxen* handle) takes is recorded on it, so closing the
connection (or the process dying) gives everything back, as closing /dev/xen/* does.
Destroying a domain closes its connections, ports and ioreq servers, drops its memory
and raises ``VIRQ_DOM_EXC``. Processes and sockets are the daemon's business: they are
reached through the injected :class:`Platform`.
"""

from __future__ import annotations

import contextlib
import errno
from dataclasses import dataclass, field
from typing import Protocol

from xenvirtio.hv.api.domctl import DomainState
from xenvirtio.hv.api.errors import HypervisorError
from xenvirtio.hv.emu.channels import EventChannels, EventfdOps
from xenvirtio.hv.emu.domains import Domain
from xenvirtio.hv.emu.ioreq import IoreqServerState
from xenvirtio.hv.emu.protocol import Reply
from xenvirtio.spec.event_channel import DOMID_FIRST_RESERVED, VIRQ_DOM_EXC
from xenvirtio.spec.grant_table import GNTTAB_RESERVED_XENSTORE, XEN_PAGE_SIZE, GTF_permit_access

DOM0_MEMORY_MB = 1024
MAX_DOMAINS = 4096
MAX_CONNS_PER_DOMAIN = 256


class Platform(Protocol):
    """What the state needs from the daemon around it."""

    def start_process(self, domain: Domain) -> None: ...

    def connect(self, conn: ConnState) -> int:
        """A new socket served as ``conn``; returns the client's end (to send, then close)."""
        ...

    def kill_process(self, domain: Domain) -> None: ...

    def signal_process(self, domain: Domain, pause: bool) -> None: ...

    def drop_connection(self, conn_id: int) -> None: ...


@dataclass
class GrantMapRecord:
    granter: Domain
    refs: list[int]
    frames: list[int]
    writable: bool
    notify_offset: int | None
    notify_port: int | None


@dataclass
class ShareRecord:
    owner: Domain
    grantee: int
    refs: list[int]
    frames: list[int]
    writable: bool
    notify_offset: int | None
    notify_port: int | None


@dataclass
class ConnState:
    id: int
    domid: int
    privileged: bool
    maps: dict[int, GrantMapRecord] = field(default_factory=dict)
    shares: dict[int, ShareRecord] = field(default_factory=dict)
    foreign: dict[int, tuple[int, int]] = field(default_factory=dict)  # handle -> (domid, n)
    servers: set[tuple[int, int]] = field(default_factory=set)
    refs: set[int] = field(default_factory=set)
    frames: set[int] = field(default_factory=set)
    max_grants: int | None = None
    mapped_grants: int = 0


class HvState:
    def __init__(self, platform: Platform, efd: EventfdOps, dom0_mb: int = DOM0_MEMORY_MB) -> None:
        self.platform = platform
        self.efd = efd
        self.domains: dict[int, Domain] = {}
        self.channels = EventChannels(efd)
        self.conns: dict[int, ConnState] = {}
        self.domain_conns: dict[int, set[int]] = {}
        self.servers: dict[tuple[int, int], IoreqServerState] = {}
        self.ending_shares: list[ShareRecord] = []
        self.outbox: list[tuple[int, Reply]] = []
        self._next_domid = 1
        self._next_id = 1
        dom0 = Domain(0, "Domain-0", dom0_mb, 1, "pv", True, DomainState.RUNNING)
        self._add_domain(dom0)

    def next_id(self) -> int:
        value = self._next_id
        self._next_id = value + 1 if value < 0xFFFF_FFFF else 1
        return value

    # -- lookups ---------------------------------------------------------------------
    def domain(self, domid: int) -> Domain:
        domain = self.domains.get(domid)
        if domain is None or domain.state is DomainState.DYING:
            raise HypervisorError(errno.ESRCH, f"no domain {domid}")
        return domain

    def live(self, domain: Domain) -> bool:
        return self.domains.get(domain.domid) is domain and domain.grants is not None

    # -- connections -----------------------------------------------------------------
    def new_conn(self, domid: int, privileged: bool) -> ConnState:
        self.domain(domid)
        conns = self.domain_conns.setdefault(domid, set())
        if len(conns) >= MAX_CONNS_PER_DOMAIN:
            raise HypervisorError(errno.EMFILE, f"domain {domid} has too many handles")
        conn = ConnState(self.next_id(), domid, privileged)
        self.conns[conn.id] = conn
        conns.add(conn.id)
        return conn

    def close_conn(self, conn_id: int) -> None:
        """Give back everything ``conn_id`` holds (explicit close or process exit)."""
        conn = self.conns.pop(conn_id, None)
        if conn is None:
            return
        self.domain_conns.get(conn.domid, set()).discard(conn_id)
        for handle in list(conn.maps):
            self.unmap_grant(conn, handle)
        for handle in list(conn.shares):
            self.unshare(conn, handle)
        for key in list(conn.servers):
            self.destroy_server(key)
        domain = self.domains.get(conn.domid)
        if domain is not None and self.live(domain):
            self._release_memory(domain, conn)
        for port in list(self.channels.owned_by(conn.domid, conn_id)):
            entry = self.channels.entry(conn.domid, port)
            if entry.channel is not None and self.kernel_port(conn.domid, port):
                entry.owner = None  # a port the hypervisor made: back to the domain
            else:
                self.channels.close(conn.domid, port)
        conn.foreign.clear()

    def _release_memory(self, domain: Domain, conn: ConnState) -> None:
        """Free the refs and frames ``conn`` took; those a peer still maps are ended
        and freed when it unmaps (as Linux defers gnttab_end_foreign_access)."""
        table = domain.table()
        busy_refs = sorted(ref for ref in conn.refs if table.in_use(ref))
        busy_frames = sorted(conn.frames & self._mapped_frames(domain))
        idle_refs = sorted(conn.refs.difference(busy_refs))
        for ref in idle_refs:
            table.write_entry(ref, 0, 0, 0)
        table.free_refs(idle_refs)
        idle_frames = sorted(conn.frames.difference(busy_frames))
        domain.discard_frames(idle_frames)
        domain.allocator().free(idle_frames)
        if busy_refs or busy_frames:
            self.ending_shares.append(
                ShareRecord(domain, 0, busy_refs, busy_frames, False, None, None)
            )

    def _mapped_frames(self, domain: Domain) -> set[int]:
        return {
            frame
            for conn in self.conns.values()
            for record in conn.maps.values()
            if record.granter is domain
            for frame in record.frames
        }

    def kernel_port(self, domid: int, port: int) -> bool:
        """A port the hypervisor made for the domain (store port, ioreq vp_eports)."""
        domain = self.domains.get(domid)
        if domain is not None and port == domain.store_port:
            return True
        return any(s.target == domid and port in s.vp_ports for s in self.servers.values())

    # -- grants ----------------------------------------------------------------------
    def unmap_grant(self, conn: ConnState, handle: int) -> None:
        record = conn.maps.pop(handle, None)
        if record is None:
            raise HypervisorError(errno.EINVAL, f"no grant mapping {handle}")
        conn.mapped_grants -= len(record.refs)
        if not self.live(record.granter):
            return  # the granter is gone; its pages live on only in the mapper's view
        table = record.granter.table()
        if record.notify_offset is not None:
            frame = record.frames[record.notify_offset // XEN_PAGE_SIZE]
            self._clear_byte(record.granter, frame, record.notify_offset % XEN_PAGE_SIZE)
        for ref in record.refs:
            table.unpin(ref, record.writable)
        if record.notify_port is not None:
            self.channels.notify(conn.domid, record.notify_port)
        self._complete_shares()

    def unshare(self, conn: ConnState, handle: int) -> None:
        share = conn.shares.pop(handle, None)
        if share is None:
            raise HypervisorError(errno.EINVAL, f"no shared pages {handle}")
        if not self.live(share.owner):
            return
        if share.notify_offset is not None:
            frame = share.frames[share.notify_offset // XEN_PAGE_SIZE]
            self._clear_byte(share.owner, frame, share.notify_offset % XEN_PAGE_SIZE)
        if share.notify_port is not None:
            self.channels.notify(share.owner.domid, share.notify_port)
        self.ending_shares.append(share)
        self._complete_shares()

    def _complete_shares(self) -> None:
        """End shares whose grants nobody maps any more (gntalloc defers the same way)."""
        waiting: list[ShareRecord] = []
        for share in self.ending_shares:
            if not self.live(share.owner):
                continue
            table = share.owner.table()
            busy = any(table.in_use(ref) for ref in share.refs)
            if busy or set(share.frames) & self._mapped_frames(share.owner):
                waiting.append(share)
                continue
            for ref in share.refs:
                table.write_entry(ref, 0, 0, 0)
            table.free_refs(share.refs)
            share.owner.discard_frames(share.frames)
            share.owner.allocator().free(share.frames)
        self.ending_shares = waiting

    def _clear_byte(self, domain: Domain, frame: int, offset: int) -> None:
        domain.memory()[frame * XEN_PAGE_SIZE + offset] = 0

    # -- ioreq servers ---------------------------------------------------------------
    def destroy_server(self, key: tuple[int, int]) -> None:
        server = self.servers.pop(key, None)
        if server is None:
            return
        conn = self.conns.get(server.conn_id)
        if conn is not None:
            conn.servers.discard(key)
        for port in [*server.vp_ports, server.buf_port]:
            if port is not None and server.target in self.channels.tables:
                with contextlib.suppress(HypervisorError):
                    self.channels.close(server.target, port)
        server.release()

    # -- domain lifecycle ------------------------------------------------------------
    def _add_domain(self, domain: Domain) -> None:
        domain.build()
        self.domains[domain.domid] = domain
        self.channels.add_domain(domain.domid)

    def _allocate_domid(self) -> int:
        if len(self.domains) >= MAX_DOMAINS:
            raise HypervisorError(errno.ENOSPC, "too many domains")
        while self._next_domid in self.domains:
            self._next_domid = (
                self._next_domid + 1 if self._next_domid < DOMID_FIRST_RESERVED - 1 else 1
            )
        domid = self._next_domid
        self._next_domid = domid + 1 if domid < DOMID_FIRST_RESERVED - 1 else 1
        return domid

    def create_domain(self, domain_args: dict[str, object]) -> Domain:
        """Build a paused domain with its XenStore page and port (what xl's builder does)."""
        domain = Domain(self._allocate_domid(), **domain_args)  # type: ignore[arg-type]
        domain.name = domain.name or f"domain-{domain.domid}"
        self._add_domain(domain)
        assert domain.store_gfn is not None
        # The store page is granted to dom0 at the reserved ref, as libxl seeds it.
        domain.table().write_entry(GNTTAB_RESERVED_XENSTORE, GTF_permit_access, 0, domain.store_gfn)
        domain.store_port = self.channels.alloc_unbound(domain.domid, 0, owner=None)
        domain.irq_efd = self.efd.new()
        if domain.kernel is not None:
            try:
                self.platform.start_process(domain)
            except BaseException:
                self.destroy_domain(domain.domid)
                raise
        return domain

    def unpause(self, domain: Domain) -> None:
        if domain.state is not DomainState.PAUSED:
            return
        domain.state = DomainState.RUNNING
        if domain.start_waiters:
            for conn_id in domain.start_waiters:
                self.outbox.append((conn_id, Reply(value=None)))
            domain.start_waiters.clear()
        elif domain.pid is not None:
            self.platform.signal_process(domain, pause=False)

    def pause(self, domain: Domain) -> None:
        if domain.state is DomainState.RUNNING:
            domain.state = DomainState.PAUSED
            if domain.pid is not None and not domain.start_waiters:
                self.platform.signal_process(domain, pause=True)

    def process_exited(self, domain: Domain) -> None:
        if domain.state is not DomainState.DYING:
            domain.state = DomainState.SHUTDOWN
            self._raise_dom_exc()

    def destroy_domain(self, domid: int) -> None:
        domain = self.domain(domid)
        if domid == 0:
            raise HypervisorError(errno.EINVAL, "domain 0 cannot be destroyed")
        domain.state = DomainState.DYING
        if domain.pid is not None:
            self.platform.kill_process(domain)
        for conn_id in list(self.domain_conns.pop(domid, set())):
            self.close_conn(conn_id)
            self.platform.drop_connection(conn_id)
        for key in [k for k, s in self.servers.items() if domid in (s.target, s.emulator)]:
            self.destroy_server(key)
        self.channels.remove_domain(domid)
        self.ending_shares = [s for s in self.ending_shares if s.owner is not domain]
        domain.release()
        del self.domains[domid]
        self._raise_dom_exc()

    def _raise_dom_exc(self) -> None:
        for domain in self.domains.values():
            if domain.privileged:
                self.channels.raise_virq(domain.domid, VIRQ_DOM_EXC)
