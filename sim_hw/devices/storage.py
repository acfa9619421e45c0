"""Storage: capacity, bandwidth, and single-event upsets that flip stored bits over time.

The model holds the blocks that were written (in memory) and flips their bits as radiation
would: each written block is exposed from its write time, at `upset_rate_per_bit_day` per bit,
multiplied by `saa_factor` while the satellite crosses the South Atlantic Anomaly (the exposure
function comes from `sim_hw.faults.SaaExposure`). Upsets of a block are a Poisson process drawn
from a stream seeded by (seed, block, write generation), so what a read returns depends only on
the seed and the times, never on how often the block was read. Flips persist until the block is
rewritten. A block's protection tag (kept beside its data, as NVMe protection information) is
stored bits too: upsets and injected flips hit the data and the tag alike (bit numbers past the
data's are the tag's). Detecting them (the driver's sealed tag per block) is the driver's job;
the model returns the raw bits. Explicitly scheduled flips (`FaultSchedule` events of kind
"bit_flip") are applied as well.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from orbitos.sim_hw.devices.cost import DeviceCost, DeviceModelError, check_count
from orbitos.sim_hw.spec_loading import bounded

ExposureDays = Callable[[float, float], float]


def plain_exposure_days(t0: float, t1: float) -> float:
    return max(0.0, t1 - t0) / 86_400.0


@dataclass(frozen=True)
class StorageSpec:
    capacity_bytes: int = bounded(gt=0)
    read_bytes_per_s: float = bounded(gt=0.0)
    write_bytes_per_s: float = bounded(gt=0.0)
    idle_power_w: float = bounded(ge=0.0)
    active_power_w: float = bounded(ge=0.0)
    block_bytes: int = bounded(4096, ge=512, le=1 << 24)
    access_latency_s: float = bounded(100e-6, ge=0.0)
    upset_rate_per_bit_day: float = bounded(4e-7, ge=0.0, doc="commercial SRAM in LEO: ~4e-7")
    saa_factor: float = bounded(10.0, ge=1.0, doc="rate multiplier inside the SAA")

    @property
    def blocks(self) -> int:
        return self.capacity_bytes // self.block_bytes


class _StoredBlock:
    __slots__ = ("data", "tag", "written_at", "generation", "rng", "next_exposure", "mean_gap_days",
                 "flips", "scheduled_done")

    def __init__(self, data: bytes, tag: bytes, written_at: float, generation: int,
                 rng: np.random.Generator, mean_gap_days: float) -> None:
        self.data = bytearray(data)
        self.tag = bytearray(tag)
        self.written_at = written_at
        self.generation = generation
        self.rng = rng
        self.mean_gap_days = mean_gap_days
        self.next_exposure = rng.exponential(mean_gap_days) if np.isfinite(mean_gap_days) else np.inf
        self.flips = 0
        self.scheduled_done = 0


class StorageModel:
    def __init__(self, spec: StorageSpec, seed: int = 0, exposure_days: ExposureDays | None = None,
                 scheduled_flips: Iterable[tuple[float, int, int]] = ()) -> None:
        """scheduled_flips: (time, block, bit) triples to apply besides the random upsets."""
        self.spec = spec
        self.seed = seed
        self.exposure_days = exposure_days or plain_exposure_days
        self._blocks: dict[int, _StoredBlock] = {}
        self._generations: dict[int, int] = {}
        self._scheduled: dict[int, list[tuple[float, int]]] = {}
        for t, block, bit in sorted(scheduled_flips):
            self._scheduled.setdefault(int(block), []).append((float(t), int(bit)))
        self.total_flips = 0

    def _index(self, index: int) -> int:
        check_count("block", index)
        if index >= self.spec.blocks:
            raise DeviceModelError(f"block {index} is past the end of the device "
                                   f"({self.spec.blocks} blocks of {self.spec.block_bytes} B)")
        return index

    def read_cost(self, nbytes: int) -> DeviceCost:
        check_count("nbytes", nbytes)
        return DeviceCost(self.spec.access_latency_s + nbytes / self.spec.read_bytes_per_s,
                          self.spec.active_power_w)

    def write_cost(self, nbytes: int) -> DeviceCost:
        check_count("nbytes", nbytes)
        return DeviceCost(self.spec.access_latency_s + nbytes / self.spec.write_bytes_per_s,
                          self.spec.active_power_w)

    def price(self, op: str, args: dict[str, Any]) -> DeviceCost | None:
        """What an operation costs: whole-block reads and writes; other operations are free."""
        if op == "read_block":
            return self.read_cost(self.spec.block_bytes)
        if op == "write_block":
            return self.write_cost(self.spec.block_bytes)
        return None

    def write_block(self, index: int, data: bytes, t: float, tag: bytes = b"") -> DeviceCost:
        """Store exactly one block at time t, with an optional protection tag kept beside it
        (as NVMe end-to-end protection information; the driver puts its CRC32C there).

        Raises DeviceModelError for a bad index or size.
        """
        self._index(index)
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) != self.spec.block_bytes:
            raise DeviceModelError(f"a block write takes exactly {self.spec.block_bytes} bytes, got "
                                   f"{len(data) if hasattr(data, '__len__') else type(data).__name__}")
        generation = self._generations.get(index, 0) + 1
        self._generations[index] = generation
        rng = np.random.default_rng([self.seed, index, generation])
        rate = self.spec.upset_rate_per_bit_day * (len(data) + len(tag)) * 8
        stored = _StoredBlock(bytes(data), bytes(tag), float(t), generation, rng,
                              1.0 / rate if rate > 0 else np.inf)
        # Scheduled flips before this write hit the old contents, not these.
        stored.scheduled_done = sum(1 for when, _ in self._scheduled.get(index, ()) if when <= t)
        self._blocks[index] = stored
        return self.write_cost(self.spec.block_bytes)

    def read_block(self, index: int, t: float) -> tuple[bytes, DeviceCost]:
        """The block's bits as they are at t (upsets included); zeros if never written.

        Raises DeviceModelError for a bad index.
        """
        self._index(index)
        cost = self.read_cost(self.spec.block_bytes)
        stored = self._blocks.get(index)
        if stored is None:
            return bytes(self.spec.block_bytes), cost
        self._apply_upsets(index, stored, t)
        return bytes(stored.data), cost

    def tag(self, index: int) -> bytes:
        """The protection tag written with a block (empty if never written)."""
        stored = self._blocks.get(self._index(index))
        return b"" if stored is None else bytes(stored.tag)

    def inject_flip(self, index: int, bit: int) -> None:
        """Flip one stored bit now (a test's or a fault script's upset); bits from
        block_bytes * 8 on are the protection tag's.

        Raises DeviceModelError for a bad index, a bit past the record, or a block never written.
        """
        self._index(index)
        check_count("bit", bit)
        stored = self._blocks.get(index)
        if stored is None:
            raise DeviceModelError(f"block {index} holds no data to flip")
        if bit >= (len(stored.data) + len(stored.tag)) * 8:
            raise DeviceModelError(f"bit {bit} is past the end of a {self.spec.block_bytes}-byte block "
                                   f"and its {len(stored.tag)}-byte tag")
        self._flip(stored, bit)

    def flips_in_block(self, index: int) -> int:
        stored = self._blocks.get(index)
        return 0 if stored is None else stored.flips

    def _flip(self, stored: _StoredBlock, bit: int) -> None:
        byte = bit // 8
        if byte < len(stored.data):
            stored.data[byte] ^= 1 << (bit % 8)
        else:
            stored.tag[byte - len(stored.data)] ^= 1 << (bit % 8)
        stored.flips += 1
        self.total_flips += 1

    def _apply_upsets(self, index: int, stored: _StoredBlock, t: float) -> None:
        exposure = self.exposure_days(stored.written_at, t)
        bits = (len(stored.data) + len(stored.tag)) * 8
        while stored.next_exposure <= exposure:
            self._flip(stored, int(stored.rng.integers(bits)))
            stored.next_exposure += stored.rng.exponential(stored.mean_gap_days)
        scheduled = self._scheduled.get(index, ())
        while stored.scheduled_done < len(scheduled) and scheduled[stored.scheduled_done][0] <= t:
            self._flip(stored, scheduled[stored.scheduled_done][1] % bits)
            stored.scheduled_done += 1
