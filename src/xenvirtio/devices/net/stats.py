"""Counters of one virtio-net device (what ``ip -s link`` would show for a NIC)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class NetStats:
    tx_frames: int = 0
    tx_bytes: int = 0
    rx_frames: int = 0
    rx_bytes: int = 0
    tx_dropped: Counter[str] = field(default_factory=Counter)  # by `TxDrop` name
    rx_dropped: Counter[str] = field(default_factory=Counter)  # filtered, oversized, ...
    rx_stalls: int = 0  # times receive stopped for lack of buffers
    ctrl_ok: int = 0
    ctrl_err: int = 0
    interrupts: int = 0

    def snapshot(self) -> dict[str, object]:
        return {
            "tx_frames": self.tx_frames,
            "tx_bytes": self.tx_bytes,
            "rx_frames": self.rx_frames,
            "rx_bytes": self.rx_bytes,
            "tx_dropped": dict(self.tx_dropped),
            "rx_dropped": dict(self.rx_dropped),
            "rx_stalls": self.rx_stalls,
            "ctrl_ok": self.ctrl_ok,
            "ctrl_err": self.ctrl_err,
            "interrupts": self.interrupts,
        }
