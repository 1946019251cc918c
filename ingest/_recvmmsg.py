"""Batched datagram receive: Linux ``recvmmsg(2)`` through ctypes, with kernel timestamps.

One system call receives up to ``n`` datagrams straight into slots of a NumPy buffer, each
with its ``SCM_TIMESTAMPNS`` control message; lengths and timestamps are then read with NumPy
(no Python object per datagram). ``BatchReceiver`` is None-safe: :func:`available` says whether
this platform has it, and the capture falls back to ``socket.recvmsg_into`` otherwise.

Layouts (x86-64 / aarch64 Linux, LP64), checked against ctypes at import:
``struct iovec {void *base; size_t len;}`` (16 bytes); ``struct msghdr`` (56 bytes: name 0,
namelen 8, iov 16, iovlen 24, control 32, controllen 40, flags 48); ``struct mmsghdr``
(msghdr + ``unsigned msg_len`` at 56; 64 bytes); ``struct cmsghdr`` (len 0, level 8, type 12,
data 16); ``struct timespec`` (sec 0, nsec 8).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import socket
import sys

import numpy as np

MSG_DONTWAIT = 0x40
SCM_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
CONTROL = 64                                    # control bytes per datagram

MMSGHDR = np.dtype({"names": ["name", "namelen", "iov", "iovlen", "control", "controllen",
                              "flags", "msg_len"],
                    "formats": ["<u8", "<u4", "<u8", "<u8", "<u8", "<u8", "<i4", "<u4"],
                    "offsets": [0, 8, 16, 24, 32, 40, 48, 56], "itemsize": 64})
IOVEC = np.dtype([("base", "<u8"), ("len", "<u8")])


class _msghdr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32),
                ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
                ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t),
                ("flags", ctypes.c_int)]


class _mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _msghdr), ("msg_len", ctypes.c_uint)]


_LIBC = None
if sys.platform.startswith("linux") and ctypes.sizeof(ctypes.c_void_p) == 8:
    try:
        _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _LIBC.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                                   ctypes.c_void_p]
        _LIBC.recvmmsg.restype = ctypes.c_int
        assert ctypes.sizeof(_mmsghdr) == MMSGHDR.itemsize
        assert _mmsghdr.msg_len.offset == MMSGHDR.fields["msg_len"][1]
        assert _msghdr.controllen.offset == MMSGHDR.fields["controllen"][1]
    except (OSError, AttributeError, AssertionError):
        _LIBC = None


def available() -> bool:
    return _LIBC is not None


class BatchReceiver:
    """Receive up to ``n`` datagrams per call into ``buf`` (slot ``i`` at ``i * slot``).

    Not thread-safe: one receiver per thread (its header arrays are reused).
    """

    def __init__(self, buf: np.ndarray, n: int, slot: int):
        if not available():
            raise OSError("recvmmsg is not available on this platform")
        if buf.shape[0] < n * slot:
            raise ValueError(f"The `buf` needs {n * slot} bytes for {n} slots of {slot}, has {buf.shape[0]}.")
        self.buf, self.n, self.slot = buf, n, slot
        self.iov = np.zeros(n, IOVEC)
        self.iov["base"] = buf.ctypes.data + np.arange(n, dtype=np.uint64) * slot
        self.iov["len"] = slot
        self.control = np.zeros((n, CONTROL), np.uint8)
        self.hdr = np.zeros(n, MMSGHDR)
        self.hdr["iov"] = self.iov.ctypes.data + np.arange(n, dtype=np.uint64) * IOVEC.itemsize
        self.hdr["iovlen"] = 1
        self.hdr["control"] = self.control.ctypes.data + np.arange(n, dtype=np.uint64) * CONTROL

    def recv(self, sock: socket.socket, lengths: np.ndarray, ts: np.ndarray) -> int:
        """Receive what is waiting (up to ``n``) without blocking; fills ``lengths`` and
        ``ts`` (UTC ns from the kernel, 0 where missing). Returns the number received."""
        self.hdr["controllen"] = CONTROL          # the kernel writes back what it used
        self.hdr["flags"] = 0
        r = _LIBC.recvmmsg(sock.fileno(), self.hdr.ctypes.data, self.n, MSG_DONTWAIT, None)
        if r < 0:
            e = ctypes.get_errno()
            if e in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return 0
            raise OSError(e, f"recvmmsg: {errno.errorcode.get(e, e)}")
        lengths[:r] = self.hdr["msg_len"][:r]
        c = self.control[:r]
        level = c[:, 8:12].copy().view("<i4").reshape(-1)
        typ = c[:, 12:16].copy().view("<i4").reshape(-1)
        spec = c[:, 16:32].copy().view("<i8").reshape(r, 2)
        got = (self.hdr["controllen"][:r] >= 32) & (level == socket.SOL_SOCKET) & (typ == SCM_TIMESTAMPNS)
        ts[:r] = np.where(got, spec[:, 0] * 1_000_000_000 + spec[:, 1], 0).astype(np.uint64)
        return r
