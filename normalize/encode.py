"""ITCH 5.0 encoding: raw per-type tables back to valid wire messages.

The inverse of :func:`normalize.read_itch_raw`, used by the exchange simulator, by the
benchmarks' generated sessions and by round-trip tests. Byte order and layout come from
:data:`normalize.itch_spec.WIRE_DTYPES`; the copy into the output is compiled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numba
import numpy as np

from normalize.itch_spec import RAW_DTYPES, WIRE_DTYPES, raw_to_wire

FRAMINGS = ("binaryfile", "none")


def letter_of(arr: np.ndarray) -> str:
    """The message type letter of a raw or wire ITCH array, from its dtype."""
    for letter in RAW_DTYPES:
        if arr.dtype == RAW_DTYPES[letter] or arr.dtype == WIRE_DTYPES[letter]:
            return letter
    raise TypeError(f"array dtype {arr.dtype} is not an ITCH 5.0 raw or wire layout; use "
                    "normalize.itch_spec.RAW_DTYPES[letter]")


@numba.njit(cache=True, nogil=True)
def _scatter(out, rows, starts, pos, prefix):
    n, length = rows.shape
    for i in range(n):
        o = starts[pos[i]]
        if prefix:
            out[o] = (length >> 8) & 0xFF
            out[o + 1] = length & 0xFF
            o += 2
        for j in range(length):
            out[o + j] = rows[i, j]


def _wire_rows(letter: str, arr: np.ndarray) -> np.ndarray:
    wire = arr if arr.dtype == WIRE_DTYPES[letter] else raw_to_wire(arr, letter)
    wire = np.ascontiguousarray(wire)
    return wire.view(np.uint8).reshape(wire.shape[0], WIRE_DTYPES[letter].itemsize)


def encode_itch(messages: Mapping[str, np.ndarray] | Sequence[np.ndarray], *,
                positions: Mapping[str, np.ndarray] | Sequence[np.ndarray] | str | None = None,
                framing: str = "binaryfile") -> bytes:
    """Write ITCH 5.0 messages.

    Parameters
    ----------
    messages
        Raw tables (``RAW_DTYPES[letter]``, as :func:`normalize.read_itch_raw` returns) or wire
        arrays, as a mapping keyed by type letter or a sequence of arrays (the type is taken from
        each dtype). The ``message_type`` field is set from the layout.
    positions
        Where each message goes in the output. ``None``: arrays in the order given, rows in order.
        ``"timestamp"``: a stable sort of all messages by timestamp (ties keep the order given).
        Or one int array per input array: the 0-based output position of each row, together a
        permutation of ``range(total)``.
    framing
        ``"binaryfile"``: NASDAQ BinaryFILE, each message preceded by its ``u16`` big-endian
        length. ``"none"``: messages back to back (their types give their lengths).
    """
    if framing not in FRAMINGS:
        raise ValueError(f"The `framing` was not a valid value, was {framing!r}. Use any of {FRAMINGS}.")
    if isinstance(messages, Mapping):
        items = [(k, np.asarray(v)) for k, v in messages.items()]
        for k, v in items:
            if k not in RAW_DTYPES:
                raise ValueError(f"{k!r} is not an ITCH 5.0 message type; use any of {''.join(RAW_DTYPES)}")
            if letter_of(v) != k:
                raise TypeError(f"messages[{k!r}] has the layout of {letter_of(v)!r}")
        pos_list = list(positions.values()) if isinstance(positions, Mapping) else positions
    else:
        items = [(letter_of(np.asarray(v)), np.asarray(v)) for v in messages]
        pos_list = positions
    rows = [_wire_rows(k, v) for k, v in items]
    total = sum(r.shape[0] for r in rows)
    prefix = 2 if framing == "binaryfile" else 0

    if pos_list is None:
        pos = []
        s = 0
        for r in rows:
            pos.append(np.arange(s, s + r.shape[0], dtype=np.int64))
            s += r.shape[0]
    elif isinstance(pos_list, str):
        if pos_list != "timestamp":
            raise ValueError(f"The `positions` was not a valid value, was {pos_list!r}. "
                             "Use None, 'timestamp' or one index array per input array.")
        ts = np.concatenate([v["timestamp"].astype(np.uint64) if v.dtype == RAW_DTYPES[k] else
                             (v["timestamp_hi"].astype(np.uint64) << np.uint64(32)) | v["timestamp_lo"]
                             for k, v in items]) if items else np.empty(0, np.uint64)
        order = np.argsort(ts, kind="stable")
        inv = np.empty(total, np.int64)
        inv[order] = np.arange(total, dtype=np.int64)
        pos, s = [], 0
        for r in rows:
            pos.append(inv[s:s + r.shape[0]])
            s += r.shape[0]
    else:
        pos = [np.asarray(p, dtype=np.int64) for p in pos_list]
        if len(pos) != len(rows) or any(p.shape[0] != r.shape[0] for p, r in zip(pos, rows)):
            raise ValueError("`positions` needs one index array per input array, of the same length")
        allp = np.concatenate(pos) if pos else np.empty(0, np.int64)
        if total and (allp.min() < 0 or allp.max() >= total or np.bincount(allp, minlength=total).max() != 1):
            raise ValueError(f"`positions` must be a permutation of range({total})")

    lens = np.zeros(total, np.int64)
    for r, p in zip(rows, pos):
        lens[p] = r.shape[1] + prefix
    starts = np.zeros(total, np.int64)
    if total:
        np.cumsum(lens[:-1], out=starts[1:])
    out = np.empty(int(lens.sum()), np.uint8)
    for r, p in zip(rows, pos):
        if r.shape[0]:
            _scatter(out, r, starts, p, prefix)
    return out.tobytes()
