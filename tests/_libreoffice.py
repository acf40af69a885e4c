"""LibreOffice headless for tests: convert a file, or sort a workbook's Summary sheet with a Basic
macro (Python-UNO is not installed with Debian's LibreOffice; Basic always is)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from xml.sax.saxutils import escape

from _synthetic import require_tool

# Opens the file hidden, sorts rows 2.. of Summary by the column whose header is `sHeader`
# (descending) through the sheet's own API, which honours sheet protection the way the Sort
# dialog does, and saves as .xlsx. Protection refuses the sort silently (the order stays).
_SORT_MACRO = """Sub SortSummary(sIn As String, sOut As String, sHeader As String)
  Dim aArgs(0) As New com.sun.star.beans.PropertyValue
  aArgs(0).Name = "Hidden"
  aArgs(0).Value = True
  oDoc = StarDesktop.loadComponentFromURL(ConvertToURL(sIn), "_blank", 0, aArgs())
  oSheet = oDoc.Sheets.getByName("Summary")
  oCur = oSheet.createCursor()
  oCur.gotoEndOfUsedArea(False)
  nLastRow = oCur.RangeAddress.EndRow
  nLastCol = oCur.RangeAddress.EndColumn
  nKey = -1
  For i = 0 To nLastCol
    If oSheet.getCellByPosition(i, 0).String = sHeader Then nKey = i
  Next i
  oRange = oSheet.getCellRangeByPosition(0, 1, nLastCol, nLastRow)
  Dim aField(0) As New com.sun.star.table.TableSortField
  aField(0).Field = nKey
  aField(0).IsAscending = False
  Dim aDesc(1) As New com.sun.star.beans.PropertyValue
  aDesc(0).Name = "SortFields"
  aDesc(0).Value = aField()
  aDesc(1).Name = "ContainsHeader"
  aDesc(1).Value = False
  oRange.sort(aDesc())
  Dim aSave(0) As New com.sun.star.beans.PropertyValue
  aSave(0).Name = "FilterName"
  aSave(0).Value = "Calc MS Excel 2007 XML"
  oDoc.storeToURL(ConvertToURL(sOut), aSave())
  oDoc.close(True)
End Sub
"""


def _soffice() -> str:
    return require_tool("soffice", "libreoffice-calc")


def convert(src: Path, out_dir: Path, profile: Path, fmt: str = "xlsx") -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [_soffice(), "--headless", "--norestore", f"-env:UserInstallation={profile.as_uri()}",
         "--convert-to", fmt, "--outdir", str(out_dir), str(src)],
        capture_output=True, text=True, timeout=240, check=False)
    converted = out_dir / (src.stem + "." + fmt.split(":")[0])
    assert proc.returncode == 0 and converted.exists(), proc.stdout + proc.stderr
    return converted


def sort_summary(src: Path, dst: Path, header: str, profile: Path) -> None:
    """Sort `src`'s Summary sheet by `header` (descending) in LibreOffice; save as `dst`."""
    soffice = _soffice()
    uri = f"-env:UserInstallation={profile.as_uri()}"
    module = profile / "user" / "basic" / "Standard" / "Module1.xba"
    if not module.exists():  # let LibreOffice create the profile, then put the macro in it
        subprocess.run([soffice, "--headless", "--norestore", uri, "--terminate_after_init"],
                       capture_output=True, timeout=240, check=False)
    assert module.exists(), "LibreOffice did not create its user profile"
    module.write_text(
        '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE script:module PUBLIC '
        '"-//OpenOffice.org//DTD OfficeDocument 1.0//EN" "module.dtd">\n<script:module '
        'xmlns:script="http://openoffice.org/2000/script" script:name="Module1" '
        f'script:language="StarBasic">{escape(_SORT_MACRO)}</script:module>\n',
        encoding="utf-8")
    macro = f'macro:///Standard.Module1.SortSummary("{src}","{dst}","{header}")'
    proc = subprocess.run([soffice, "--headless", "--norestore", uri, macro],
                          capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0 and dst.exists(), proc.stdout + proc.stderr
