"""The one place that makes student text safe to show: spreadsheet cells, names, the terminal.

Student and model text is data. A cell whose text starts with `=`, `+`, `-`, `@`, tab or CR is
read as a formula by Excel/LibreOffice (`=HYPERLINK(...)`, `=cmd|' /C calc'!A0`), so such text is
prefixed with a single quote and always written as a string cell. Characters that XML 1.0 cannot
hold (and openpyxl refuses) are dropped so one odd submission cannot break a whole workbook.

File and folder names come from students too: `printable` makes one safe to store and show
(no control, bidi-override or unpaired surrogate characters), and `terminal_safe` makes any text
safe to print, so a name cannot send escape sequences to the teacher's terminal.
"""

from __future__ import annotations

import re
import unicodedata

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_ILLEGAL_XML = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def escape_text(text: str) -> str:
    """Quote-prefix text that a spreadsheet would evaluate; also strip XML-illegal characters."""
    text = _ILLEGAL_XML.sub("", text)
    if text.startswith(FORMULA_STARTS):
        return "'" + text
    return text


def escape_cell(value: object) -> object:
    """Escape strings; numbers, booleans and None pass through (they are never formulas)."""
    if isinstance(value, str):
        return escape_text(value)
    return value


def unescape_text(text: str) -> str:
    """Undo `escape_text` for text read back from a workbook we wrote (teacher-edited cells)."""
    if len(text) > 1 and text[0] == "'" and text[1:].startswith(FORMULA_STARTS):
        return text[1:]
    return text


# Control characters (C0, DEL, C1), bidi and other invisible format characters (Cf: U+202E can
# reverse how a name reads), line/paragraph separators and unpaired surrogates (from file names
# that are not valid UTF-8, which SQLite and HTTP cannot carry).
_UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def is_unprintable(ch: str) -> bool:
    return unicodedata.category(ch) in _UNPRINTABLE_CATEGORIES


def printable(text: str, replacement: str = "\ufffd") -> str:
    """NFC-normalised `text` with every unprintable character replaced (a name to store/show)."""
    text = unicodedata.normalize("NFC", text)
    if text.isprintable():
        return text
    return "".join(replacement if is_unprintable(ch) else ch for ch in text)


def terminal_safe(text: str, *, newlines: bool = True) -> str:
    """`text` with every unprintable character shown as an escape (`\\x1b`, `\\u202e`), so printing
    it cannot move the cursor, recolour or retitle the terminal. Newlines are kept unless
    `newlines` is False; tabs are kept."""
    if text.isprintable():
        return text
    keep = "\t\n" if newlines else "\t"
    out = []
    for ch in text:
        if ch in keep or not is_unprintable(ch):
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}")
    return "".join(out)
