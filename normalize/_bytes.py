"""Big-endian field readers and writers over ``uint8`` buffers, for compiled (numba) code.

Each reader is one unaligned load plus a byte swap (``llvm.bswap``), emitted directly: an
expression such as ``b[p] << 8 | b[p + 1]`` would not fold into that, because numba wraps
every signed index with a negative-index check. Callers check bounds first: these do not.
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

_u64 = np.uint64


def _byte_ptr(context, builder, arr_t, arr, idx):
    ary = context.make_array(arr_t)(context, builder, arr)
    return cgutils.get_item_pointer(context, builder, arr_t, ary, [idx], wraparound=False)


def _make_load_be(bits: int, result):
    @intrinsic
    def load(typingctx, arr, idx):
        if not (isinstance(arr, types.Array) and arr.dtype == types.uint8
                and isinstance(idx, types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            ptr = _byte_ptr(context, builder, arr, args[0], args[1])
            ity = ir.IntType(bits)
            val = builder.load(builder.bitcast(ptr, ity.as_pointer()), align=1)
            swap = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ity, [ity]),
                                                  f"llvm.bswap.i{bits}")
            val = builder.call(swap, [val])
            out = context.get_value_type(result)
            return builder.zext(val, out) if out.width > bits else val

        return result(arr, idx), codegen

    return load


@intrinsic
def u8(typingctx, arr, idx):
    """The byte ``arr[idx]`` with no negative-index check (``idx`` must be in bounds)."""
    if not (isinstance(arr, types.Array) and arr.dtype == types.uint8
            and isinstance(idx, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        return builder.load(_byte_ptr(context, builder, arr, args[0], args[1]))

    return types.uint8(arr, idx), codegen


_load_be16 = _make_load_be(16, types.uint32)
_load_be32 = _make_load_be(32, types.uint32)
_load_be64 = _make_load_be(64, types.uint64)


@numba.njit(inline="always")
def be16(b, p):
    """Big-endian ``u16`` at ``b[p:p+2]`` (as ``uint32``)."""
    return _load_be16(b, p)


@numba.njit(inline="always")
def be32(b, p):
    """Big-endian ``u32`` at ``b[p:p+4]``."""
    return _load_be32(b, p)


@numba.njit(inline="always")
def be48(b, p):
    """Big-endian 6-byte unsigned integer at ``b[p:p+6]`` (the ITCH timestamp)."""
    return (_u64(_load_be16(b, p)) << _u64(32)) | _u64(_load_be32(b, p + 2))


@numba.njit(inline="always")
def be64(b, p):
    """Big-endian ``u64`` at ``b[p:p+8]``."""
    return _load_be64(b, p)


@numba.njit(inline="always")
def le16(b, p):
    return np.uint32(b[p]) | (np.uint32(b[p + 1]) << 8)


@numba.njit(inline="always")
def le32(b, p):
    return (np.uint32(b[p]) | (np.uint32(b[p + 1]) << 8) | (np.uint32(b[p + 2]) << 16)
            | (np.uint32(b[p + 3]) << 24))


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint the CPU to load ``arr[idx]`` into cache (``llvm.prefetch``; no effect on results).

    Lets a loop over events request the hash-table slots it will touch a few iterations ahead,
    so cache misses overlap instead of stalling one by one. ``idx`` must be in bounds; on a
    C-contiguous array of several dimensions it counts elements of the flattened array.
    """
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None
    if arr.ndim != 1 and arr.layout != "C":
        return None
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        if arr.ndim == 1:
            ptr = _byte_ptr(context, builder, arr, args[0], args[1])
        else:
            ary = context.make_array(arr)(context, builder, args[0])
            ptr = builder.gep(ary.data, [args[1]])
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen
