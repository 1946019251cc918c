"""Hypothesis strategies for ITCH 5.0 messages, kept in one place (the pyarrow habit).

Every strategy builds rows of the raw-table layout :data:`normalize.itch_spec.RAW_DTYPES`
``[letter]`` (what :func:`normalize.read_itch_raw` returns and :func:`normalize.encode_itch`
takes), with field values that are valid on the wire:

* timestamps are below ``2**48`` (the 6-byte field);
* alpha fields are printable ASCII (``0x20``–``0x7e``), every byte of them, so NumPy's
  ``S`` dtypes never strip a trailing NUL;
* ``Price(4)`` fields take the whole ``u32`` range; ``Price(8)`` fields (MWCB levels) mostly
  stay within what the normalized 1e-9 ``int64`` scale can hold (``(2**63 - 1) // 10``) and
  sometimes take any ``u64`` (the decoder makes those ``UNDEF_PRICE``);
* order references avoid ``0`` and ``2**64 - 1``: the order map reserves them as its empty and
  deleted keys (ITCH never sends either). They are drawn from a small pool half the time, so
  mixed lists execute, cancel, delete and replace live orders, not only unknown ones.

``message(letter)`` is one row (a ``numpy.void`` of ``RAW_DTYPES[letter]``);
``messages()`` is a list of rows of mixed types in output order; :func:`group` turns such a
list into the per-type tables and positions that ``encode_itch`` takes.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from normalize import records as R
from normalize.itch_spec import MESSAGES, RAW_DTYPES, TYPE_LETTERS, fields

TS_MAX = (1 << 48) - 1
DAY_NS = 86_400 * 1_000_000_000
P8_MAX = (2**63 - 1) // R.PRICE8_TO_NANO
ORDER_REF_FIELDS = ("order_reference_number", "original_order_reference_number",
                    "new_order_reference_number")
SHARE_FIELDS = ("shares", "executed_shares", "cancelled_shares")
PRINTABLE = st.integers(0x20, 0x7E)


def alpha(n: int) -> st.SearchStrategy[bytes]:
    """``n`` printable ASCII bytes (ITCH alpha fields are left-justified, space-padded)."""
    return st.lists(PRINTABLE, min_size=n, max_size=n).map(bytes)


def order_refs() -> st.SearchStrategy[int]:
    """Valid order reference numbers, often from a small pool so orders meet again."""
    return st.one_of(st.integers(1, 6), st.integers(1, 2**64 - 2))


def share_counts(bits: int) -> st.SearchStrategy[int]:
    """Share counts: small ones (so executions run orders down) or any ``bits``-bit value."""
    return st.one_of(st.integers(0, 300), st.integers(0, 2**bits - 1))


def timestamps(max_ns: int = TS_MAX) -> st.SearchStrategy[int]:
    return st.integers(0, max_ns)


_KIND = {
    "c": lambda: alpha(1),
    "u2": lambda: st.integers(0, 2**16 - 1),
    "u4": lambda: st.integers(0, 2**32 - 1),
    "u8": lambda: st.integers(0, 2**64 - 1),
    "p4": lambda: st.integers(0, 2**32 - 1),
    "p8": lambda: st.one_of(st.integers(0, P8_MAX), st.integers(0, 2**64 - 1)),
}


def _field(name: str, kind: str, ts_max: int) -> st.SearchStrategy:
    if kind == "ts":
        return timestamps(ts_max)
    if name in ORDER_REF_FIELDS:
        return order_refs()
    if name in SHARE_FIELDS:
        return share_counts(64 if kind == "u8" else 32)
    if kind.startswith("a"):
        return alpha(int(kind[1:]))
    return _KIND[kind]()


@st.composite
def message(draw, letter: str, ts_max: int = TS_MAX) -> np.void:
    """One ITCH message of type ``letter`` as a raw-table row (``RAW_DTYPES[letter]``)."""
    row = np.zeros(1, RAW_DTYPES[letter])
    for name, kind in fields(letter):
        if name == "message_type":
            row[name] = letter.encode()
        else:
            row[name] = draw(_field(name, kind, ts_max))
    return row[0]


#: One strategy per message type, keyed by type letter.
MESSAGE_STRATEGIES: dict[str, st.SearchStrategy[np.void]] = {k: message(k) for k in MESSAGES}


def messages(letters: str = TYPE_LETTERS, *, min_size: int = 0, max_size: int = 40,
             ts_max: int = TS_MAX) -> st.SearchStrategy[list[np.void]]:
    """A list of messages of the given types, mixed, in output order."""
    return st.lists(st.sampled_from(list(letters)).flatmap(lambda k: message(k, ts_max)),
                    min_size=min_size, max_size=max_size)


def letter_of_row(row: np.void) -> str:
    return row["message_type"].decode()


def group(rows: list[np.void]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per-type raw tables and each row's 0-based output position, for ``encode_itch``."""
    by: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by.setdefault(letter_of_row(r), []).append(i)
    tables = {k: np.array([rows[i] for i in idx], dtype=RAW_DTYPES[k]) for k, idx in by.items()}
    positions = {k: np.array(idx, dtype=np.int64) for k, idx in by.items()}
    return tables, positions
