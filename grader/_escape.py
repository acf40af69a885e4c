"""The one place that neutralises spreadsheet formula injection (xlsx and csv cells).

Student and model text is data. A cell whose text starts with `=`, `+`, `-`, `@`, tab or CR is
read as a formula by Excel/LibreOffice (`=HYPERLINK(...)`, `=cmd|' /C calc'!A0`), so such text is
prefixed with a single quote and always written as a string cell. Characters that XML 1.0 cannot
hold (and openpyxl refuses) are dropped so one odd submission cannot break a whole workbook.
"""

from __future__ import annotations

import re

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
