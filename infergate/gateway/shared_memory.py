"""System shared-memory regions (Triton's shared-memory extension) and their bytes.

A client on this machine creates a POSIX shared-memory object (`/dev/shm/<key>`),
registers a window of it, [offset, offset + byte_size), under a name, and then sends
tensors that name the region (and an offset and size inside it) instead of carrying
their bytes: an input is read in place (a read-only numpy view of the mapping, no
copy), an output is written there and comes back with an empty raw entry.

What keeps this safe:
- A key is one name under /dev/shm (a leading "/" and nothing but it as separator, no
  "." or ".."), opened with O_NOFOLLOW and only if it is a regular file: a key never
  reaches another file.
- Only a client on this machine (loopback, or a unix socket) may register: a
  region's bytes can come back in outputs, so a remote caller could otherwise read
  any shared-memory object the gateway's user may open. (The servicer checks the
  peer; shared memory is only of use to a local client anyway.)
- Every tensor's offset and size are checked against its region, and the object's
  present size against the mapping, before a byte is read or written: an object a
  client truncated would otherwise crash the process (SIGBUS) on the next read.
  A client that truncates it while a request reads it can still do that; a client
  trusted with shared memory is trusted not to.
- Unregistering (or closing) unmaps a region at once unless a request in flight
  still views it; such a region is unmapped as soon as the last view goes (numpy
  views pin the mapping: mmap refuses to close under them, and the registry retries).
"""

from __future__ import annotations

import logging
import mmap
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from infergate.schema import codec, datatypes
from infergate.schema.errors import AlreadyExists, InvalidInput, NotFound, QueueFull, shown

log = logging.getLogger(__name__)

SHM_ROOT = Path("/dev/shm")
# Regions registered at once: each holds a mapping and a file descriptor.
MAX_REGIONS = 1024


class RegionNotFound(NotFound):
    """No region of that name is registered (NOT_FOUND, as Triton answers)."""


@dataclass(eq=False)
class Region:
    """One registered window of a shared-memory object, mapped into this process."""

    name: str
    key: str
    offset: int  # of the window in the object
    byte_size: int
    _fd: int = field(repr=False)
    _map: mmap.mmap = field(repr=False)
    _start: int = field(repr=False)  # the window's first byte in the mapping

    def view(self, offset: int, byte_size: int, tensor: str) -> memoryview:
        """The tensor's bytes [offset, offset + byte_size) of the window, read-only."""
        self.check(offset, byte_size, tensor)
        start = self._start + offset
        return memoryview(self._map)[start : start + byte_size].toreadonly()

    def write(
        self, offset: int, byte_size: int, tensor: str, datatype: str, data: np.ndarray
    ) -> None:
        """Write an output's raw bytes at offset; InvalidInput when they do not fit."""
        self.check(offset, byte_size, tensor)
        start = self._start + offset
        dtype = datatypes.from_name(datatype).numpy
        if datatype not in ("BYTES", "BF16") and data.dtype == dtype:
            needed = data.nbytes
            self._fits(needed, byte_size, tensor)
            target = np.frombuffer(self._map, dtype=np.uint8, count=needed, offset=start)
            target[...] = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
            del target  # a view pins the mapping
            return
        payload = codec.encode_raw(datatype, data)
        self._fits(len(payload), byte_size, tensor)
        self._map[start : start + len(payload)] = payload

    def _fits(self, needed: int, byte_size: int, tensor: str) -> None:
        if needed > byte_size:
            raise InvalidInput(
                f"shared memory size specified with the request for output {shown(tensor)} "
                f"({byte_size} bytes) should be at least {needed} bytes to hold the results"
            )

    def check(self, offset: int, byte_size: int, tensor: str) -> None:
        """InvalidInput unless [offset, offset + byte_size) lies in the window and
        the object still holds it."""
        where = f"shared memory region {shown(self.name)} ({self.byte_size} bytes)"
        if offset < 0 or offset >= self.byte_size:
            raise InvalidInput(
                f"Invalid offset for shared memory region: {shown(self.name)}: tensor "
                f"{shown(tensor)} asks for offset {offset} in {where}"
            )
        if byte_size < 0 or offset + byte_size > self.byte_size:
            raise InvalidInput(
                f"Invalid offset + byte size for shared memory region: {shown(self.name)}: "
                f"tensor {shown(tensor)} asks for {byte_size} bytes at offset {offset} in {where}"
            )
        try:
            size = os.fstat(self._fd).st_size
        except OSError as exc:
            raise InvalidInput(f"{where} cannot be read: {exc}") from None
        if size < self.offset + self.byte_size:
            raise InvalidInput(
                f"{where}: its object {shown(self.key)} shrank to {size} bytes since it was "
                "registered; unregister and register it again"
            )

    def close(self) -> bool:
        """Unmap and close; False while a request still views the mapping."""
        try:
            self._map.close()
        except BufferError:
            return False
        os.close(self._fd)
        return True


class SharedMemoryRegistry:
    """The regions registered with one gateway; close() unmaps them all."""

    def __init__(self, root: Path = SHM_ROOT, max_regions: int = MAX_REGIONS) -> None:
        self._root = root
        self._max_regions = max_regions
        self._regions: dict[str, Region] = {}
        self._retired: list[Region] = []  # unregistered, still viewed by a request

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        self._sweep()
        if not name:
            raise InvalidInput("a shared memory region needs a name")
        if name in self._regions:
            raise AlreadyExists(f"shared memory region {shown(name)} already in manager")
        if len(self._regions) >= self._max_regions:
            raise QueueFull(
                f"{len(self._regions)} shared memory regions are registered, the most this "
                "gateway keeps; unregister some first"
            )
        where = f"failed to register shared memory region {shown(name)}"
        path = self._root / _object_name(key, where)
        try:
            fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise RegionNotFound(
                f"{where}: Unable to open shared memory region: {shown(key)} (no such "
                "shared-memory object on this machine; create it before registering)"
            ) from None
        except OSError as exc:
            raise InvalidInput(
                f"{where}: Unable to open shared memory region: {shown(key)} ({exc.strerror})"
            ) from None
        try:
            region = _map(fd, name, key, offset, byte_size, where)
        except BaseException:
            os.close(fd)
            raise
        self._regions[name] = region
        log.info("registered shared memory region %s: %s [%d, +%d)", name, key, offset, byte_size)

    def get(self, name: str) -> Region:
        region = self._regions.get(name)
        if region is None:
            raise RegionNotFound(f"Unable to find shared memory region: {shown(name)}")
        return region

    def status(self, name: str = "") -> list[Region]:
        """Every region (name empty) or the one named; RegionNotFound if none is."""
        self._sweep()
        if not name:
            return list(self._regions.values())
        region = self._regions.get(name)
        if region is None:
            raise RegionNotFound(f"Unable to find system shared memory region: {shown(name)}")
        return [region]

    def unregister(self, name: str = "") -> None:
        """Forget one region (a name nobody registered is no error, as in Triton) or all."""
        names = [name] if name else list(self._regions)
        for each in names:
            region = self._regions.pop(each, None)
            if region is not None:
                self._retired.append(region)
        self._sweep()

    def close(self) -> None:
        """Unmap every region; one still viewed is left to the garbage collector."""
        self.unregister()
        for region in self._retired:
            log.warning("shared memory region %s is still in use at shutdown", region.name)
        self._retired.clear()

    def __len__(self) -> int:
        return len(self._regions)

    def _sweep(self) -> None:
        self._retired = [region for region in self._retired if not region.close()]


def _object_name(key: str, where: str) -> str:
    """The object's file name under /dev/shm, from a shm_open key ("/name")."""
    name = key[1:] if key.startswith("/") else key
    if not name or "/" in name or name in (".", "..") or "\x00" in name:
        raise InvalidInput(
            f"{where}: key {shown(key)} is not a POSIX shared-memory name (one name, "
            "optionally after a leading '/')"
        )
    return name


def _map(fd: int, name: str, key: str, offset: int, byte_size: int, where: str) -> Region:
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise InvalidInput(f"{where}: {shown(key)} is not a shared-memory object")
    if byte_size <= 0 or offset < 0 or offset + byte_size > info.st_size:
        raise InvalidInput(
            f"{where}: invalid args: [offset {offset}, + byte_size {byte_size}) must be a "
            f"non-empty window of the object's {info.st_size} bytes"
        )
    aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
    mapping = mmap.mmap(fd, offset + byte_size - aligned, offset=aligned)
    return Region(name, key, offset, byte_size, fd, mapping, offset - aligned)
