"""An anti-replay window over sequence numbers, as in IPsec and CCSDS SDLS: the highest sequence
number seen and a bitmap of the `size` numbers behind it. A number is fresh when it is above the
highest, or within the window and not yet seen; anything else is a replay ("replayed": seen
already) or too old to tell ("too_old": more than `size` behind the highest).

Used by the ISL link sessions (`runtime.link_crypto`, per direction of a session) and by the
control table (`runtime.control`, per operator key and satellite, its state kept in the
satellite's file system so that a reboot does not reopen old numbers). Not thread-safe: the
owner holds its own lock across `verdict` and `accept`.
"""
from __future__ import annotations

from dataclasses import dataclass

REPLAY_WINDOW = 64


@dataclass
class ReplayWindow:
    highest: int = -1
    bits: int = 0  # bit k: sequence number highest - k has been seen
    size: int = REPLAY_WINDOW

    def verdict(self, sequence: int) -> str | None:
        """None when `sequence` is fresh; "replayed" or "too_old" otherwise. Changes nothing."""
        behind = self.highest - sequence
        if behind >= self.size:
            return "too_old"
        if behind >= 0 and self.bits >> behind & 1:
            return "replayed"
        return None

    def accept(self, sequence: int) -> None:
        """Mark a fresh `sequence` seen (the caller checked `verdict`)."""
        behind = self.highest - sequence
        if behind < 0:
            self.bits = (self.bits << -behind | 1) & ((1 << self.size) - 1) if -behind < self.size else 1
            self.highest = sequence
        else:
            self.bits |= 1 << behind
