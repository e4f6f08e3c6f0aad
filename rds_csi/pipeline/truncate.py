"""Length limits in UTF-8 bytes, as the API server counts them (Go `len(string)`).

client-go truncates nothing; the API server rejects an eventTime event whose note exceeds 1024
bytes, and other tools cut by code points or split a character (which comes back as a 3-byte
U+FFFD and breaks the limit again).  Here every cut lands on a code-point boundary, carries a
visible marker, and the result including the marker fits the limit.
"""

from __future__ import annotations

__all__ = [
    "ACTION_LIMIT",
    "MESSAGE_LIMIT",
    "REASON_LIMIT",
    "REPORTING_INSTANCE_LIMIT",
    "truncate_middle_utf8",
    "truncate_utf8",
]

MESSAGE_LIMIT = 1024
REASON_LIMIT = 128
ACTION_LIMIT = 128
REPORTING_INSTANCE_LIMIT = 128

_MAX_UTF8_BYTES_PER_CHAR = 4


def truncate_utf8(text: str, limit: int, *, marker: str = " ...") -> str:
    """`text` if it fits in `limit` UTF-8 bytes, else its head followed by `marker`."""
    if len(text) * _MAX_UTF8_BYTES_PER_CHAR <= limit:
        return text
    data, text = _encode(text)
    if len(data) <= limit:
        return text
    marker_bytes = marker.encode()
    if len(marker_bytes) >= limit:
        marker, marker_bytes = "", b""
    head_end = _back_to_boundary(data, limit - len(marker_bytes))
    return data[:head_end].decode() + marker


def truncate_middle_utf8(text: str, limit: int) -> str:
    """`text` if it fits in `limit` UTF-8 bytes, else head + "...[N bytes truncated]..." + tail.

    Keeping the tail matters for messages that end in a tool's stderr, where the last line
    usually says what went wrong.
    """
    if len(text) * _MAX_UTF8_BYTES_PER_CHAR <= limit:
        return text
    data, text = _encode(text)
    total = len(data)
    if total <= limit:
        return text
    # The marker can only be shorter than this, whatever N turns out to be.
    reserve = len(_middle_marker(total))
    if reserve >= limit:
        return truncate_utf8(text, limit)
    budget = limit - reserve
    head_end = _back_to_boundary(data, budget - budget // 2)
    tail_start = _forward_to_boundary(data, total - budget // 2)
    cut = tail_start - head_end
    return data[:head_end].decode() + _middle_marker(cut) + data[tail_start:].decode()


def _middle_marker(cut_bytes: int) -> str:
    return f"...[{cut_bytes} bytes truncated]..."


def _encode(text: str) -> tuple[bytes, str]:
    """UTF-8 bytes of `text`, replacing lone surrogates (not encodable) with '?'."""
    try:
        return text.encode(), text
    except UnicodeEncodeError:
        data = text.encode("utf-8", "replace")
        return data, data.decode()


def _is_continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


def _back_to_boundary(data: bytes, index: int) -> int:
    """The largest code-point boundary <= index."""
    while 0 < index < len(data) and _is_continuation(data[index]):
        index -= 1
    return index


def _forward_to_boundary(data: bytes, index: int) -> int:
    """The smallest code-point boundary >= index."""
    while index < len(data) and _is_continuation(data[index]):
        index += 1
    return index
