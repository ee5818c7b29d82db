"""Per-domain limits, with the defaults of Xen 4.17's C xenstored (tools/xenstore/xenstored_core.c).

Dom0 (and any privileged connection) is exempt, as C xenstored exempts it through
``domain_is_unprivileged()``: the quota checks only apply to unprivileged domains. The
path limit applies to everyone, as in C xenstored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from xenvirtio.spec.xs_wire import XENSTORE_REL_PATH_MAX


@dataclass
class Quota:
    """Limits for one daemon; each field names the C xenstored option it mirrors."""

    entries_per_domain: int = 1000  # -E / quota_nb_entry_per_domain; error ENOSPC
    node_size: int = 2048  # -S / quota_max_entry_size (value + children + perms); ENOSPC
    watches_per_domain: int = 128  # -W / quota_nb_watch_per_domain; E2BIG
    transactions_per_conn: int = 10  # -t / quota_max_transaction; ENOSPC
    outstanding_per_conn: int = 20  # -q / quota_req_outstanding (enforced by the I/O layer)
    perms_per_node: int = 5  # -A / quota_nb_perms_per_node; ENOSPC
    transaction_nodes: int = 1024  # quota_trans_nodes: nodes one transaction may touch; ENOSPC
    path_max: int = XENSTORE_REL_PATH_MAX  # -M / quota_max_path_len (below /local/domain/N/)

    # Names and descriptions as C xenstored's ``xenstore-control quota`` lists them.
    NAMES: ClassVar[dict[str, tuple[str, str]]] = {
        "nodes": ("entries_per_domain", "Nodes per domain"),
        "watches": ("watches_per_domain", "Watches per domain"),
        "transactions": ("transactions_per_conn", "Transactions per domain"),
        "outstanding": ("outstanding_per_conn", "Outstanding requests per domain"),
        "transaction-nodes": ("transaction_nodes", "Max. number of accessed nodes per transaction"),
        "node-size": ("node_size", "Max. size of a node"),
        "path-max": ("path_max", "Max. length of a node path"),
        "permissions": ("perms_per_node", "Max. number of permissions per node"),
    }

    def show(self) -> str:
        """The ``XS_CONTROL quota`` answer."""
        lines = ["Quota settings:"]
        for name, (attr, descr) in self.NAMES.items():
            lines.append(f"{name:<17}: {getattr(self, attr):8d} {descr}")
        return "\n".join(lines) + "\n"

    def set(self, name: str, value: int) -> None:
        """``XS_CONTROL quota set <name> <value>``; unknown names and values < 1: ValueError."""
        if name not in self.NAMES or value < 1:
            raise ValueError(f"cannot set quota {name!r} to {value}")
        if name == "path-max":
            value = min(value, XENSTORE_REL_PATH_MAX)
        setattr(self, self.NAMES[name][0], value)
