"""What a human reader of a document actually sees, for the format readers in `_formats`.

A student can put text into a file that the teacher will never see but a model would read:
white or tiny text, hidden (vanish) runs in Word, invisible, off-page or background-coloured
text in a PDF, HTML comments and `display:none` in Markdown and HTML. The functions here split
such text off (it is removed from what the model sees and reported as `injection.Hidden`) and
collect text the model is not shown at all but a student may have written for a machine
(`injection.Aside`: alt text, comments, annotations, metadata), which is scanned for
instructions. Visible text comes out exactly as before, so clean documents grade the same.

Limits (docs/security.md): text inside PDF form XObjects and clipped away by a clipping path,
PDF optional-content layers that are switched off, and Word text hidden by a theme or table
style are not detected as hidden.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

from grader.intake.injection import Aside, Hidden

_MAX_ASIDE = 20_000  # characters of one aside text that are scanned

# --- colours -------------------------------------------------------------------------------

RGB = tuple[float, float, float]
WHITE: RGB = (1.0, 1.0, 1.0)
_NAMED = {"black": (0.0, 0.0, 0.0), "white": WHITE, "yellow": (1.0, 1.0, 0.0),
          "green": (0.0, 1.0, 0.0), "cyan": (0.0, 1.0, 1.0), "magenta": (1.0, 0.0, 1.0),
          "blue": (0.0, 0.0, 1.0), "red": (1.0, 0.0, 0.0), "darkblue": (0.0, 0.0, 0.5),
          "darkcyan": (0.0, 0.5, 0.5), "darkgreen": (0.0, 0.5, 0.0),
          "darkmagenta": (0.5, 0.0, 0.5), "darkred": (0.5, 0.0, 0.0),
          "darkyellow": (0.5, 0.5, 0.0), "darkgray": (0.5, 0.5, 0.5),
          "lightgray": (0.75, 0.75, 0.75), "gray": (0.5, 0.5, 0.5), "silver": (0.75, 0.75, 0.75)}


def hex_rgb(value: str | None) -> RGB | None:
    """`FFFFFF`/`#fff` -> (1, 1, 1); None for `auto` or anything else."""
    if not value:
        return None
    v = value.strip().lstrip("#").lower()
    if v in _NAMED:
        return _NAMED[v]
    if len(v) == 3:
        v = "".join(c * 2 for c in v)
    if len(v) != 6 or any(c not in "0123456789abcdef" for c in v):
        return None
    return (int(v[0:2], 16) / 255, int(v[2:4], 16) / 255, int(v[4:6], 16) / 255)


def alike(a: RGB, b: RGB) -> bool:
    """Too close to read one on the other (within about 10% on every channel)."""
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 0.1


def colour_words(text: RGB, background: RGB) -> str:
    return "white text" if alike(text, WHITE) else "text coloured like its background"


def bounded(text: str) -> str:
    return text[:_MAX_ASIDE]


# --- Word (.docx) --------------------------------------------------------------------------

_W = "{http://schemas.openxmlformats.org/wordprocessingml/2006/main}"
_WP = "{http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing}"
_TINY_HALF_POINTS = 6  # under 3 pt


def _on(el: Any) -> bool:
    return el is not None and el.get(_W + "val", "true").lower() not in ("0", "false", "off")


class DocxVisibility:
    """Effective run formatting (direct, character style, paragraph style, document defaults)
    and backgrounds (run shading or highlight, paragraph and table-cell shading, the page)."""

    def __init__(self, doc: Any):
        root = doc.styles.element
        self.rpr: dict[str, Any] = {}
        self.ppr: dict[str, Any] = {}
        self.based: dict[str, str] = {}
        self.default_para: str | None = None
        for st in root.iterchildren(_W + "style"):
            sid = st.get(_W + "styleId")
            if not sid:
                continue
            self.rpr[sid], self.ppr[sid] = st.find(_W + "rPr"), st.find(_W + "pPr")
            based = st.find(_W + "basedOn")
            if based is not None and based.get(_W + "val"):
                self.based[sid] = based.get(_W + "val")
            if st.get(_W + "type") == "paragraph" and st.get(_W + "default") in ("1", "true"):
                self.default_para = sid
        self.doc_rpr = root.find(f"{_W}docDefaults/{_W}rPrDefault/{_W}rPr")
        background = doc.element.find(_W + "background")
        self.page = hex_rgb(background.get(_W + "color")) if background is not None else None

    def _chain(self, sid: str | None, table: dict[str, Any]) -> Iterator[Any]:
        seen: set[str] = set()
        while sid and sid not in seen:
            seen.add(sid)
            if table.get(sid) is not None:
                yield table[sid]
            sid = self.based.get(sid)

    def _styled(self, r: Any, p: Any) -> list[Any]:
        rpr = r.find(_W + "rPr")
        ppr = p.find(_W + "pPr")
        rstyle = rpr.find(_W + "rStyle") if rpr is not None else None
        pstyle = ppr.find(_W + "pStyle") if ppr is not None else None
        pid = pstyle.get(_W + "val") if pstyle is not None else self.default_para
        chain = [rpr] if rpr is not None else []
        chain += self._chain(rstyle.get(_W + "val") if rstyle is not None else None, self.rpr)
        chain += self._chain(pid, self.rpr)
        if self.doc_rpr is not None:
            chain.append(self.doc_rpr)
        return chain

    def paragraph_fill(self, p: Any) -> RGB | None:
        ppr = p.find(_W + "pPr")
        chain = [ppr] if ppr is not None else []
        pstyle = ppr.find(_W + "pStyle") if ppr is not None else None
        chain += self._chain(pstyle.get(_W + "val") if pstyle is not None else
                             self.default_para, self.ppr)
        for el in chain:
            shd = el.find(_W + "shd")
            if shd is not None:
                return hex_rgb(shd.get(_W + "fill"))
        return None

    def why_hidden(self, r: Any, p: Any, fill: RGB | None) -> str | None:
        """Why a reader would not see run `r` of paragraph `p` (None: visible)."""
        chain = self._styled(r, p)

        def first(tag: str) -> Any:
            return next((el.find(_W + tag) for el in chain if el.find(_W + tag) is not None),
                        None)

        if _on(first("vanish")) or _on(first("specVanish")):
            return "hidden (vanish) text"
        size = first("sz")
        try:
            half_points = int(size.get(_W + "val")) if size is not None else None
        except (TypeError, ValueError):
            half_points = None
        if half_points is not None and half_points < _TINY_HALF_POINTS:
            return f"tiny text ({half_points / 2:g} pt)"
        scale = first("w")
        try:
            if scale is not None and int(scale.get(_W + "val")) < 20:
                return "text squeezed to under 20% width"
        except (TypeError, ValueError):
            pass
        colour = first("color")
        if colour is None:
            return None
        text = hex_rgb(colour.get(_W + "val"))
        if text is None and colour.get(_W + "themeColor") in ("background1", "light1"):
            text = WHITE
        if text is None:
            return None
        back = self._run_background(chain) or fill or self.page or WHITE
        return colour_words(text, back) if alike(text, back) else None

    @staticmethod
    def _run_background(chain: list[Any]) -> RGB | None:
        for el in chain:
            shd = el.find(_W + "shd")
            if shd is not None and hex_rgb(shd.get(_W + "fill")) is not None:
                return hex_rgb(shd.get(_W + "fill"))
            mark = el.find(_W + "highlight")
            if mark is not None and mark.get(_W + "val", "none") != "none":
                return _NAMED.get(mark.get(_W + "val", "").lower())
        return None


def docx_paragraph(vis: DocxVisibility, p: Any, fill: RGB | None, where: str
                   ) -> tuple[str, list[Hidden]]:
    """A paragraph's visible text (as python-docx would give it, less hidden runs) and the
    hidden runs, joined per reason."""
    visible: list[str] = []
    hidden: dict[str, list[str]] = {}
    fill = vis.paragraph_fill(p) or fill
    for child in p.iterchildren(_W + "r", _W + "hyperlink"):
        runs = [child] if child.tag == _W + "r" else list(child.iterchildren(_W + "r"))
        for r in runs:
            text = r.text or ""
            if not text:
                continue
            why = vis.why_hidden(r, p, fill)
            if why is None:
                visible.append(text)
            else:
                hidden.setdefault(why, []).append(text)
    return "".join(visible), [Hidden(where, how, " ".join(parts).strip())
                              for how, parts in hidden.items() if "".join(parts).strip()]


def cell_fill(tc: Any) -> RGB | None:
    tcpr = tc.find(_W + "tcPr")
    shd = tcpr.find(_W + "shd") if tcpr is not None else None
    return hex_rgb(shd.get(_W + "fill")) if shd is not None else None


def docx_asides(doc: Any) -> list[Aside]:
    """Word text the model is not shown: alt text, text boxes, comments, notes, headers and
    footers, document properties."""
    from docx.oxml import parse_xml

    out: list[Aside] = []
    body = doc.element.body
    for pr in body.iter(_WP + "docPr"):
        text = " ".join(v for v in (pr.get("title"), pr.get("descr")) if v)
        if text.strip():
            out.append(Aside("image alt text", bounded(text)))
    for box in body.iter(_W + "txbxContent"):
        text = "".join(t.text or "" for t in box.iter(_W + "t"))
        if text.strip():
            out.append(Aside("text box", bounded(text)))
    for part in doc.part.package.iter_parts():
        name = str(part.partname)
        kind = next((k for k in ("comments", "footnotes", "endnotes", "header", "footer",
                                 "custom") if k in name.rsplit("/", 1)[-1]), None)
        if kind is None or not name.endswith(".xml"):
            continue
        try:
            root = parse_xml(part.blob)
        except Exception:  # a damaged side part must not cost the document
            continue
        text = " ".join(t.text or "" for t in root.iter() if isinstance(t.tag, str)
                        and t.tag.rsplit("}", 1)[-1] in ("t", "lpwstr") and t.text)
        if text.strip():
            out.append(Aside(f"Word {kind}", bounded(text)))
    props = doc.core_properties
    text = " ".join(v for v in (props.title, props.subject, props.keywords, props.comments,
                                props.category) if v)
    if text.strip():
        out.append(Aside("document properties", bounded(text)))
    return out


# --- PDF -------------------------------------------------------------------------------------

_TINY_PT = 3.0
Matrix = list[float]
_IDENTITY: Matrix = [1.0, 0.0, 0.0, 1.0, 0.0, 0.0]
SHOW = (b"Tj", b"TJ", b"'", b'"')
_FILLS = (b"f", b"F", b"f*", b"B", b"B*", b"b", b"b*")


def _mult(a: Matrix, b: Matrix) -> Matrix:
    return [a[0] * b[0] + a[1] * b[2], a[0] * b[1] + a[1] * b[3],
            a[2] * b[0] + a[3] * b[2], a[2] * b[1] + a[3] * b[3],
            a[4] * b[0] + a[5] * b[2] + b[4], a[4] * b[1] + a[5] * b[3] + b[5]]


def _nums(operands: list[Any]) -> list[float]:
    out = []
    for o in operands:
        try:
            out.append(float(o))
        except (TypeError, ValueError):
            continue
    return out


def _fill_rgb(values: list[float]) -> RGB | None:
    if len(values) == 1:
        return (values[0], values[0], values[0])
    if len(values) == 3:
        return (values[0], values[1], values[2])
    if len(values) == 4:
        c, m, y, k = values
        return (1 - min(1.0, c + k), 1 - min(1.0, m + k), 1 - min(1.0, y + k))
    return None


class _State:
    def __init__(self) -> None:
        self.ctm: Matrix = list(_IDENTITY)
        self.fill: RGB | None = (0.0, 0.0, 0.0)
        self.render = 0
        self.size = 0.0
        self.scale = 100.0
        self.leading = 0.0

    def copy(self) -> _State:
        s = _State()
        s.__dict__.update(self.__dict__)
        s.ctm = list(self.ctm)
        return s


Box = tuple[float, float, float, float]


def _bbox(m: Matrix, x: float, y: float, w: float, h: float) -> Box:
    pts = [(px * m[0] + py * m[2] + m[4], px * m[1] + py * m[3] + m[5])
           for px, py in ((x, y), (x + w, y), (x, y + h), (x + w, y + h))]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return min(xs), min(ys), max(xs), max(ys)


def hidden_ops(ops: list[tuple[list[Any], bytes]], page_box: Box,
               images: set[str]) -> dict[int, str]:
    """Index of each text-showing operation a reader would not see, and why: invisible render
    mode (unless over an image: an OCR layer), under 3 pt, outside the page, or coloured like
    what it is drawn on."""
    gs = _State()
    stack: list[_State] = []
    tm: Matrix = list(_IDENTITY)
    tlm: Matrix = list(_IDENTITY)
    path: list[Box] = []
    painted: list[tuple[Box, RGB | None]] = []  # (area, colour; None = an image)
    out: dict[int, str] = {}
    for i, (operands, op) in enumerate(ops):
        n = _nums(operands)
        if op == b"q":
            stack.append(gs.copy())
        elif op == b"Q":
            gs = stack.pop() if stack else _State()
        elif op == b"cm" and len(n) == 6:
            gs.ctm = _mult(n, gs.ctm)
        elif op in (b"g", b"rg", b"k", b"sc", b"scn"):
            gs.fill = _fill_rgb(n)
        elif op == b"cs":
            gs.fill = (0.0, 0.0, 0.0)
        elif op == b"Tr" and n:
            gs.render = int(n[0])
        elif op == b"Tf" and n:
            gs.size = n[-1]
        elif op == b"Tz" and n:
            gs.scale = n[0]
        elif op == b"TL" and n:
            gs.leading = n[0]
        elif op == b"BT":
            tm, tlm = list(_IDENTITY), list(_IDENTITY)
        elif op == b"Tm" and len(n) == 6:
            tm, tlm = list(n), list(n)
        elif op in (b"Td", b"TD") and len(n) == 2:
            if op == b"TD":
                gs.leading = -n[1]
            tlm = _mult([1.0, 0.0, 0.0, 1.0, n[0], n[1]], tlm)
            tm = list(tlm)
        elif op in (b"T*", b"'", b'"'):
            tlm = _mult([1.0, 0.0, 0.0, 1.0, 0.0, -gs.leading], tlm)
            tm = list(tlm)
        elif op == b"re" and len(n) == 4:
            path.append(_bbox(gs.ctm, *n))
        elif op in _FILLS:
            painted += [(box, gs.fill) for box in path]
            path = []
        elif op in (b"n", b"S", b"s"):
            path = []
        elif op == b"Do" and operands and str(operands[0]) in images:
            painted.append((_bbox(gs.ctm, 0, 0, 1, 1), None))
        elif op == b"sh":
            painted.append((page_box, None))
        if op in SHOW:
            why = _why_hidden(gs, _mult(tm, gs.ctm), page_box, painted)
            if why:
                out[i] = why
    return out


def _why_hidden(gs: _State, trm: Matrix, page: Box,
                painted: list[tuple[Box, RGB | None]]) -> str | None:
    x, y = trm[4], trm[5]
    under = next((colour for (x0, y0, x1, y1), colour in reversed(painted)
                  if x0 <= x <= x1 and y0 <= y <= y1), WHITE)
    if gs.render in (3, 7):
        return None if under is None else "invisible text (render mode 3)"
    size = abs(gs.size) * math.hypot(trm[2], trm[3])
    width = abs(gs.size) * gs.scale / 100 * math.hypot(trm[0], trm[1])
    if size < _TINY_PT or width < _TINY_PT / 4:
        return f"tiny text ({size:.1f} pt)"
    x0, y0, x1, y1 = page
    if not (x0 - 2 <= x <= x1 + 2 and y0 - 2 <= y <= y1 + 2):
        return "off-page text"
    if under is None or gs.fill is None:
        return None
    return colour_words(gs.fill, under) if alike(gs.fill, under) else None


def without(ops: list[tuple[list[Any], bytes]], drop: set[int]
            ) -> list[tuple[list[Any], bytes]]:
    """`ops` with the text-showing operations in `drop` removed (line moves kept)."""
    out: list[tuple[list[Any], bytes]] = []
    for i, (operands, op) in enumerate(ops):
        if i not in drop:
            out.append((operands, op))
        elif op == b"'":
            out.append(([], b"T*"))
        elif op == b'"' and len(operands) >= 2:
            out += [([operands[0]], b"Tw"), ([operands[1]], b"Tc"), ([], b"T*")]
    return out


def pdf_images(page: Any) -> set[str]:
    """Names of the page's image XObjects (`Do` of one paints a picture)."""
    try:
        xobjects = page["/Resources"]["/XObject"]
        return {str(k) for k, v in xobjects.items() if v.get_object().get("/Subtype") == "/Image"}
    except (KeyError, TypeError, AttributeError):
        return set()


def pdf_annotations(page: Any, number: int) -> list[Aside]:
    out = []
    annots = page.get("/Annots")
    try:
        items = list(annots.get_object())[:200] if annots is not None else []
    except (TypeError, AttributeError):
        return []
    for a in items:
        try:
            obj = a.get_object()
            kind = str(obj.get("/Subtype", "annotation")).lstrip("/")
            text = " ".join(str(obj[k]) for k in ("/Contents", "/T", "/TU", "/V", "/RC", "/Subj")
                            if k in obj and isinstance(obj[k], str))
        except (AttributeError, TypeError, KeyError):
            continue
        if text.strip():
            out.append(Aside(f"page {number} {kind} annotation", bounded(text)))
    return out


def pdf_properties(reader: Any) -> list[Aside]:
    try:
        meta = reader.metadata or {}
        text = " ".join(str(v) for k, v in meta.items()
                        if k in ("/Title", "/Subject", "/Keywords", "/Author", "/Creator")
                        and isinstance(v, str))
    except Exception:  # damaged metadata: nothing to scan
        return []
    return [Aside("PDF document properties", bounded(text))] if text.strip() else []


# --- HTML and Markdown ---------------------------------------------------------------------

_HIDING_STYLE = re.compile(
    r"display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:\.\d+)?\s*(?:px|pt|em|rem|%)?"
    r"\s*(?:;|$)|opacity\s*:\s*0(?:\.0+)?\s*(?:;|$)|(?<![-\w])color\s*:\s*(?:white|#fff\b|"
    r"#ffffff\b|rgb\(\s*255\s*,\s*255\s*,\s*255\s*\))", re.IGNORECASE)


# White text on a background colour that is not white is visible.
_DARK_BACKGROUND = re.compile(r"background(?:-color)?\s*:\s*(?!\s*(?:white|#fff\b|#ffffff\b|"
                              r"transparent|none|rgb\(\s*255\s*,\s*255\s*,\s*255\s*\)))",
                              re.IGNORECASE)


def hiding_attrs(attrs: list[tuple[str, str | None]]) -> str | None:
    """Why an HTML element's attributes hide it (None: they do not)."""
    for name, value in attrs:
        if name == "hidden":
            return "hidden HTML element"
        if name == "style" and value:
            m = _HIDING_STYLE.search(value)
            if m and not (m.group().lower().lstrip().startswith("color")
                          and _DARK_BACKGROUND.search(value)):
                return f"HTML styled {' '.join(m.group().split()).rstrip(';')}"
    return None


_MD_COMMENT = re.compile(r"<!--(.*?)(?:-->|\Z)", re.DOTALL)
_MD_LINK_COMMENT = re.compile(r"^\[[^\]\n]*\]:\s*(?:#|<>)\s+(?:\((.*)\)|\"(.*)\"|'(.*)')\s*$",
                              re.MULTILINE)
_MD_HIDDEN_TAG = re.compile(r"<(span|div|p|font|section|small)\b([^>]*)>(.*?)</\1\s*>",
                            re.DOTALL | re.IGNORECASE)
_ATTR = re.compile(r"([\w-]+)(?:\s*=\s*(\"[^\"]*\"|'[^']*'|[^\s>]+))?")


def markdown_visible(text: str, where: str) -> tuple[str, list[Hidden]]:
    """Markdown without what its rendering hides: HTML comments, `[//]: # (...)` comment links
    and HTML elements hidden by their style."""
    if "<" not in text and "]:" not in text:
        return text, []
    hidden: list[Hidden] = []

    def comment(m: re.Match[str]) -> str:
        if m.group(1).strip():
            hidden.append(Hidden(where, "HTML comment", m.group(1).strip(), deliberate=False))
        return ""

    def link(m: re.Match[str]) -> str:
        body = next(g for g in m.groups() if g is not None)
        hidden.append(Hidden(where, "Markdown comment link", body.strip(), deliberate=False))
        return ""

    def element(m: re.Match[str]) -> str:
        attrs = [(a.group(1).lower(), (a.group(2) or "").strip("\"'"))
                 for a in _ATTR.finditer(m.group(2))]
        why = hiding_attrs(attrs)
        if why is None:
            return m.group()
        hidden.append(Hidden(where, why, m.group(3).strip()))
        return ""

    out = _MD_COMMENT.sub(comment, text)
    out = _MD_LINK_COMMENT.sub(link, out)
    out = _MD_HIDDEN_TAG.sub(element, out)
    return out, hidden


# --- notebooks -----------------------------------------------------------------------------


def json_strings(value: object, limit: int = _MAX_ASIDE) -> str:
    """Every string inside a JSON value (keys too), up to `limit` characters."""
    out: list[str] = []
    size = 0
    stack = [value]
    while stack and size < limit:
        v = stack.pop()
        if isinstance(v, str):
            out.append(v)
            size += len(v)
        elif isinstance(v, dict):
            for k, item in v.items():
                out.append(str(k))
                stack.append(item)
        elif isinstance(v, list):
            stack.extend(reversed(v))
    return " ".join(out)[:limit]


def notebook_asides(nb: dict[str, Any], cells: list[Any]) -> list[Aside]:
    """Notebook and cell metadata (never shown to the model), minus the kernel description."""
    out = []
    meta = nb.get("metadata")
    if isinstance(meta, dict):
        rest = {k: v for k, v in meta.items() if k not in ("kernelspec", "language_info")}
        text = json_strings(rest)
        if text.strip():
            out.append(Aside("notebook metadata", text))
    for i, cell in enumerate(cells, start=1):
        cmeta = cell.get("metadata") if isinstance(cell, dict) else None
        if isinstance(cmeta, dict) and cmeta:
            text = json_strings(cmeta)
            if text.strip():
                out.append(Aside(f"cell {i} metadata", text))
    return out
