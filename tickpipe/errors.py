"""Typed errors shared by every stage.

Each error inherits the matching built-in type as well as :class:`TickpipeError`, so callers can
catch ``ValueError`` or ``TickpipeError`` (the pyarrow habit: ``ArrowInvalid(ValueError, ...)``).
Messages name the file, the byte offset and the message index or sequence number involved.
"""

from __future__ import annotations

import warnings


class TickpipeError(Exception):
    """Base class of every error tickpipe raises on purpose."""


def located(reason: str, *where: tuple[str, object]) -> str:
    """``reason (file 'x', byte offset 12, ...)`` from the ``(label, value)`` pairs given; a
    ``None`` value is left out. Every typed error formats its location this way."""
    parts = [f"{label} {value!r}" if label == "file" else f"{label} {value}"
             for label, value in where if value is not None]
    return f"{reason} ({', '.join(parts)})" if parts else reason


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
        super().__init__(located(reason, ("file", path), ("byte offset", offset),
                                 ("message index", index), ("sequence", sequence)))


class TruncatedError(DecodeError):
    """The input ends in the middle of a unit (message, packet, capture record)."""


class DecodeWarning(UserWarning):
    """Raised as a warning when ``errors="skip"`` skipped input or the input was truncated."""


def warn(message: str) -> None:
    warnings.warn(message, DecodeWarning, stacklevel=3)
