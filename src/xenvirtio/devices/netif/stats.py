"""Counters of one vif (all queues), read by tests and benchmarks."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class VifStats:
    tx_packets: int = 0  # frontend -> TAP
    tx_bytes: int = 0
    tx_gso: int = 0
    rx_packets: int = 0  # TAP -> frontend
    rx_bytes: int = 0
    rx_gso: int = 0
    tx_dropped: Counter[str] = field(default_factory=Counter)
    rx_dropped: Counter[str] = field(default_factory=Counter)

    @property
    def tx_average(self) -> float:
        """Average transmitted frame size (above the MTU when GSO frames pass)."""
        return self.tx_bytes / self.tx_packets if self.tx_packets else 0.0
