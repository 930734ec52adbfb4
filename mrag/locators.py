"""Where in an asset a chunk is, as people read and write it: ``p. 3``, ``01:05–01:12``.

Time ranges print as ``mm:ss–mm:ss`` (``h:mm:ss`` from an hour on) in the CLI, citations and
the page; :func:`parse_time_range` reads the same forms (or plain seconds) back for filters.
"""

from __future__ import annotations

from mrag.errors import MragError


def format_clock(seconds: float) -> str:
    """``65.4`` → ``01:05``; ``3725`` → ``1:02:05`` (whole seconds, rounded down)."""
    whole = max(0, int(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def format_time_range(start_s: float, end_s: float) -> str:
    """``01:05–01:12``: the range a hit or a citation points at."""
    return f"{format_clock(start_s)}–{format_clock(end_s)}"


def parse_clock(text: str) -> float:
    """``"65"``, ``"65.5"``, ``"1:05"`` or ``"1:02:05"`` → seconds."""
    parts = text.strip().split(":")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        raise MragError(f"time {text!r}: expected seconds, mm:ss or h:mm:ss") from None
    if len(values) > 3 or any(v < 0 for v in values):
        raise MragError(f"time {text!r}: expected seconds, mm:ss or h:mm:ss")
    seconds = 0.0
    for value in values:
        seconds = seconds * 60 + value
    return seconds


def parse_time_range(text: str) -> tuple[float, float]:
    """``"1:00-2:30"`` (or ``–``) → ``(60.0, 150.0)``."""
    start, sep, end = text.replace("–", "-").partition("-")
    if not sep:
        raise MragError(f"time range {text!r}: expected START-END, e.g. 1:00-2:30")
    first, last = parse_clock(start), parse_clock(end)
    if last < first:
        raise MragError(f"time range {text!r}: the end is before the start")
    return first, last
