"""Shared-memory frame slots.

The server creates and unlinks every segment (`SlotPool`); the worker only
attaches read-only and closes (`ReadOnlySegments`). Attaching bypasses the
multiprocessing resource tracker on purpose: the segment belongs to the server,
and a tracked attach would make the tracker unlink or warn about it when the
worker exits (cpython issue 82300).
"""

from __future__ import annotations

import _posixshmem
import math
import mmap
import os
import secrets
import threading
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from app.runtime.frames import ImageSource, write_pixels


class Slot:
    def __init__(self, size: int, prefix: str) -> None:
        self.name = f"{prefix}-{secrets.token_hex(6)}"
        self.memory = shared_memory.SharedMemory(self.name, create=True, size=size)
        self.size = size

    def write(self, image: np.ndarray | ImageSource) -> None:
        # Straight into the segment: a decoded frame is converted to RGB here, with no copy in between.
        target = np.ndarray(image.shape, dtype=np.uint8, buffer=self.memory.buf)
        write_pixels(image, target)
        del target

    def destroy(self) -> None:
        self.memory.close()
        self.memory.unlink()


# Where POSIX shared memory lives on Linux; Docker gives it 64 MB unless told --shm-size.
SHM_DIR = Path("/dev/shm")
# A slot more than twice the size of every frame it held over this many calls (about
# 5 s of one 30 fps session) is replaced by one that fits: one big frame does not
# keep its memory for good.
SHRINK_AFTER_CALLS = 150


def shm_free_bytes(directory: Path = SHM_DIR) -> int:
    """Free bytes on the shared-memory filesystem: the one place the server reads it."""
    stats = os.statvfs(directory)
    return stats.f_bavail * stats.f_frsize


def shm_shortfall(frames: int, resolution: tuple[int, int]) -> str | None:
    """Why the shared-memory filesystem cannot hold `frames` RGB frames of `resolution`; None when it can.

    Checked at start: a write into a slot past the filesystem's size faults the server
    process (SIGBUS) instead of failing cleanly, so the shortage must be found first.
    """
    width, height = resolution
    needed = frames * width * height * 3
    free = shm_free_bytes(SHM_DIR)
    if free >= needed:
        return None
    mib = 1 << 20
    return (
        f"SharedMemoryTooSmall: {SHM_DIR} has {free // mib} MiB free, {frames} frames of {width}x{height} "
        f"need {-(-needed // mib)} MiB (under Docker start the container with --shm-size={-(-needed // mib) * 2}m, "
        "or lower --max-sessions or --max-resolution)"
    )


class SlotPoolClosed(RuntimeError):
    """A fill that ran after the pool was closed (its worker is stopping)."""


class SlotPool:
    """Slots for the frames of one call; a call takes slots, the next call reuses them.

    `fill` runs in a thread (it copies pixels), `close` may come from another: a lock
    keeps a slot from being unlinked while a copy writes into it.
    """

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._slots: list[Slot] = []
        self._peaks: list[int] = []  # the largest frame each slot held in the current window
        self._calls = 0
        self._closed = False
        self._lock = threading.Lock()
        self.retired: list[str] = []

    def fill(self, images: list[np.ndarray | ImageSource]) -> list[Slot]:
        """Write each image into its own slot, growing, shrinking or replacing slots as needed."""
        with self._lock:
            if self._closed:
                raise SlotPoolClosed("the slot pool is closed")
            self._shrink_oversized()
            for index, image in enumerate(images):
                nbytes = math.prod(image.shape)  # uint8 pixels
                if index == len(self._slots):
                    self._slots.append(Slot(max(nbytes, 1), self._prefix))
                    self._peaks.append(0)
                elif self._slots[index].size < nbytes:
                    self._replace(index, nbytes)
                self._peaks[index] = max(self._peaks[index], nbytes)
                self._slots[index].write(image)
            return self._slots[: len(images)]

    def _shrink_oversized(self) -> None:
        self._calls += 1
        if self._calls < SHRINK_AFTER_CALLS:
            return
        # Slots past the largest batch of the window held nothing in it: they go (fill uses a prefix).
        used = sum(1 for peak in self._peaks if peak > 0)
        for slot in self._slots[used:]:
            self.retired.append(slot.name)
            slot.destroy()
        del self._slots[used:]
        for index, peak in enumerate(self._peaks[:used]):
            if self._slots[index].size > 2 * peak:
                self._replace(index, peak)
        self._calls = 0
        self._peaks = [0] * used

    def _replace(self, index: int, size: int) -> None:
        self.retired.append(self._slots[index].name)
        self._slots[index].destroy()
        self._slots[index] = Slot(size, self._prefix)

    @property
    def sizes(self) -> list[int]:
        return [slot.size for slot in self._slots]

    def take_retired(self) -> list[str]:
        retired, self.retired = self.retired, []
        return retired

    @property
    def names(self) -> list[str]:
        return [slot.name for slot in self._slots]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for slot in self._slots:
                slot.destroy()
            self._slots.clear()
            self._peaks.clear()
            self.retired.clear()


class ReadOnlySegments:
    """The worker's read-only mappings of the server's slots, by name."""

    def __init__(self) -> None:
        self._maps: dict[str, mmap.mmap] = {}

    def view(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        size = int(np.prod(shape))
        mapped = self._maps.get(name)
        if mapped is None or len(mapped) < size:
            self.release(name)
            fd = _posixshmem.shm_open("/" + name, os.O_RDONLY, mode=0)
            try:
                mapped = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
            finally:
                os.close(fd)
            self._maps[name] = mapped
        if len(mapped) < size:
            raise ValueError(f"segment {name} holds {len(mapped)} bytes, frame needs {size}")
        return np.frombuffer(mapped, dtype=np.uint8, count=size).reshape(shape)

    def release(self, name: str) -> None:
        mapped = self._maps.pop(name, None)
        if mapped is not None:
            try:
                mapped.close()
            except BufferError:
                pass  # the plugin still holds a view; the mapping goes when that view does

    def close(self) -> None:
        for name in list(self._maps):
            self.release(name)
