"""Typed errors shared by every stage.

Each error inherits the matching built-in type as well as :class:`TickpipeError`, so callers can
catch ``ValueError`` or ``TickpipeError`` (the pyarrow habit: ``ArrowInvalid(ValueError, ...)``).
Messages name the file, the byte offset and the message index or sequence number involved.
"""

from __future__ import annotations

import warnings


class TickpipeError(Exception):
    """Base class of every error tickpipe raises on purpose."""


class DecodeError(ValueError, TickpipeError):
    """Bytes that are not valid for the format being decoded.

    Attributes
    ----------
    path : str | None
        The file (or ``"<buffer>"``) being decoded.
    offset : int | None
        Byte offset of the faulty unit from the start of the file or buffer.
    index : int | None
        0-based index of the faulty message (or packet / capture record) in the input.
    sequence : int | None
        MoldUDP64 sequence number of the faulty message, when the input carries one.
    partial : object
        What had been decoded before the fault (for :func:`normalize.read_itch`, the dict of
        tables); nothing accepted before the fault is lost.
    """

    def __init__(self, reason: str, *, path: str | None = None, offset: int | None = None,
                 index: int | None = None, sequence: int | None = None, partial=None):
        self.reason = reason
        self.path = path
        self.offset = offset
        self.index = index
        self.sequence = sequence
        self.partial = partial
        where = []
        if path is not None:
            where.append(f"file {path!r}")
        if offset is not None:
            where.append(f"byte offset {offset}")
        if index is not None:
            where.append(f"message index {index}")
        if sequence is not None:
            where.append(f"sequence {sequence}")
        super().__init__(f"{reason} ({', '.join(where)})" if where else reason)


class TruncatedError(DecodeError):
    """The input ends in the middle of a unit (message, packet, capture record)."""


class DecodeWarning(UserWarning):
    """Raised as a warning when ``errors="skip"`` skipped input or the input was truncated."""


def warn(message: str) -> None:
    warnings.warn(message, DecodeWarning, stacklevel=3)
