"""Text from files, made safe to print on a terminal.

A run directory may hold any text (an edited ``hall_of_fame.json``, a path, an
error message quoting a file): printed raw, an escape sequence in it is obeyed by
the terminal (``ESC ] 52`` writes the clipboard, ``ESC [ 2 J`` clears the screen,
``\\r`` overwrites a line), and a Unicode bidirectional override makes the text
read differently from what it is (Boucher and Anderson, "Trojan Source:
Invisible Vulnerabilities", 2021). :func:`safe_text` shows every such character
as a visible escape instead: ``\\x1b``, ``\\x07``, ``\\x9b``, ``\\u202e``.
Everything gp-loss prints that it did not write itself goes through it.
"""
from __future__ import annotations

import unicodedata

# Unicode's bidirectional embeddings, overrides, isolates and marks, and the two line
# separators a terminal or editor may break a line at.
_BIDI_AND_BREAKS = (0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029)


def _escape(code: int) -> str:
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def _table(keep: str) -> dict[int, str]:
    codes = [c for c in range(0x100) if unicodedata.category(chr(c)) == "Cc"]  # C0, DEL and C1
    return {c: _escape(c) for c in (*codes, *_BIDI_AND_BREAKS) if chr(c) not in keep}


_MULTI_LINE = _table(keep="\n\t")
_SINGLE_LINE = _table(keep="")


def safe_text(text: object, *, single_line: bool = False) -> str:
    """``str(text)`` with every control character and bidi control shown as a visible escape.

    Newlines and tabs are kept, for output of several lines; ``single_line`` escapes them
    too (``\\n``, ``\\t``), for a value that must stay on its line (a formula, a name).
    Backslashes are left as they are, so LaTeX and Windows paths read unchanged.
    """
    return str(text).translate(_SINGLE_LINE if single_line else _MULTI_LINE)


def safe_line(text: object) -> str:
    """:func:`safe_text` of ``text`` on one line (newlines and tabs escaped as well)."""
    return safe_text(text, single_line=True)
