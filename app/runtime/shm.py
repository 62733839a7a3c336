"""Shared-memory frame slots.

The server creates and unlinks every segment (`SlotPool`); the worker only
attaches read-only and closes (`ReadOnlySegments`). Attaching bypasses the
multiprocessing resource tracker on purpose: the segment belongs to the server,
and a tracked attach would make the tracker unlink or warn about it when the
worker exits (cpython issue 82300).
"""

from __future__ import annotations

import _posixshmem
import mmap
import os
import secrets
from multiprocessing import shared_memory

import numpy as np


class Slot:
    def __init__(self, size: int, prefix: str) -> None:
        self.name = f"{prefix}-{secrets.token_hex(6)}"
        self.memory = shared_memory.SharedMemory(self.name, create=True, size=size)
        self.size = size

    def write(self, image: np.ndarray) -> None:
        target = np.ndarray(image.shape, dtype=np.uint8, buffer=self.memory.buf)
        np.copyto(target, image, casting="no")
        del target

    def destroy(self) -> None:
        self.memory.close()
        self.memory.unlink()


class SlotPool:
    """Slots for the frames of one call; a call takes slots, the next call reuses them."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._slots: list[Slot] = []
        self.retired: list[str] = []

    def fill(self, images: list[np.ndarray]) -> list[Slot]:
        """Copy each image into its own slot, growing or replacing slots as needed."""
        for index, image in enumerate(images):
            if index == len(self._slots):
                self._slots.append(Slot(max(image.nbytes, 1), self._prefix))
            elif self._slots[index].size < image.nbytes:
                self.retired.append(self._slots[index].name)
                self._slots[index].destroy()
                self._slots[index] = Slot(image.nbytes, self._prefix)
            self._slots[index].write(image)
        return self._slots[: len(images)]

    def take_retired(self) -> list[str]:
        retired, self.retired = self.retired, []
        return retired

    @property
    def names(self) -> list[str]:
        return [slot.name for slot in self._slots]

    def close(self) -> None:
        for slot in self._slots:
            slot.destroy()
        self._slots.clear()
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
