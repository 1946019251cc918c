"""Big-endian field readers and writers over ``uint8`` buffers, for compiled (numba) code.

LLVM folds each shift-or chain into one load plus a byte swap. Callers check bounds first:
numba does not.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

_u64 = np.uint64


@numba.njit(inline="always")
def be16(b, p):
    return (np.uint32(b[p]) << 8) | np.uint32(b[p + 1])


@numba.njit(inline="always")
def be32(b, p):
    return ((np.uint32(b[p]) << 24) | (np.uint32(b[p + 1]) << 16)
            | (np.uint32(b[p + 2]) << 8) | np.uint32(b[p + 3]))


@numba.njit(inline="always")
def be48(b, p):
    return ((_u64(b[p]) << _u64(40)) | (_u64(b[p + 1]) << _u64(32)) | (_u64(b[p + 2]) << _u64(24))
            | (_u64(b[p + 3]) << _u64(16)) | (_u64(b[p + 4]) << _u64(8)) | _u64(b[p + 5]))


@numba.njit(inline="always")
def be64(b, p):
    return ((_u64(b[p]) << _u64(56)) | (_u64(b[p + 1]) << _u64(48)) | (_u64(b[p + 2]) << _u64(40))
            | (_u64(b[p + 3]) << _u64(32)) | (_u64(b[p + 4]) << _u64(24))
            | (_u64(b[p + 5]) << _u64(16)) | (_u64(b[p + 6]) << _u64(8)) | _u64(b[p + 7]))


@numba.njit(inline="always")
def le16(b, p):
    return np.uint32(b[p]) | (np.uint32(b[p + 1]) << 8)


@numba.njit(inline="always")
def le32(b, p):
    return (np.uint32(b[p]) | (np.uint32(b[p + 1]) << 8) | (np.uint32(b[p + 2]) << 16)
            | (np.uint32(b[p + 3]) << 24))


@numba.njit(inline="always")
def put_be16(b, p, v):
    b[p] = (v >> 8) & 0xFF
    b[p + 1] = v & 0xFF


@numba.njit(inline="always")
def put_be64(b, p, v):
    for k in range(8):
        b[p + k] = (v >> _u64(56 - 8 * k)) & _u64(0xFF)


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint the CPU to load ``arr[idx]`` into cache (``llvm.prefetch``; no effect on results).

    Lets a loop over events request the hash-table slots it will touch a few iterations ahead,
    so cache misses overlap instead of stalling one by one. ``idx`` must be in bounds.
    """
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        ary = context.make_array(arr)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, arr, ary, [args[1]], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen
