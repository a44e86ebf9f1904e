"""The one small HTML toolkit both reports use: escaped tables, embedded PNGs, the page shell.

A page is a single self-contained file: images are embedded as base64 PNG data URIs, the style
sheet is inline, and nothing refers to the network. Crops are shown pixel-exact (integer zoom,
``image-rendering: pixelated``), never smoothed by the browser.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from ..atomic import atomic_path

_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #1d1d1f;
       background: #fff; max-width: 1500px; }
h1 { font-size: 22px; margin: 0 0 6px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 18px 0 6px; }
table { border-collapse: collapse; margin: 6px 0 12px; }
th, td { border: 1px solid #d0d0d0; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #0a7d24; font-weight: 600; } .fail { color: #b00020; font-weight: 600; }
.skip { color: #8a6d00; } .note { color: #555; }
.panels { display: flex; flex-wrap: wrap; gap: 10px; align-items: flex-start; }
.panels + .panels { margin-top: 8px; }
figure { margin: 0; width: min-content; } figcaption { font-size: 12px; }
img.px { image-rendering: pixelated; image-rendering: crisp-edges; border: 1px solid #bbb; }
img.plot { max-width: 100%; height: auto; }
"""


class Raw(str):
    """HTML that is already safe (made by this module): inserted as is, never escaped again."""


def esc(value: object) -> str:
    """``value`` as escaped text (a :class:`Raw` stays as it is)."""
    return value if isinstance(value, Raw) else html.escape(str(value))


def tag(name: str, content: object = "", **attrs: object) -> Raw:
    """``<name attrs>content</name>``; ``cls`` becomes ``class``; attributes that are None are left out."""
    text = "".join(f' {"class" if k == "cls" else k}="{esc(v)}"' for k, v in attrs.items() if v is not None)
    return Raw(f"<{name}{text}>{esc(content)}</{name}>")


def join(parts: Iterable[object]) -> Raw:
    """Escaped parts, concatenated."""
    return Raw("".join(esc(p) for p in parts))


def cell(value: object, numeric: bool = False, cls: str | None = None) -> Raw:
    """One ``<td>``; ``numeric`` right-aligns it."""
    return tag("td", value, cls=" ".join(c for c in ("num" if numeric else None, cls) if c) or None)


def table(header: Sequence[object] | None, rows: Iterable[Sequence[object]], table_id: str | None = None) -> Raw:
    """A table (``header`` None: none); a row item that is not already a ``<td>`` (see
    :func:`cell`) becomes one."""
    head = [] if header is None else [tag("thead", tag("tr", join(tag("th", h) for h in header)))]
    body = [tag("tr", join(c if isinstance(c, Raw) and c.startswith("<td") else cell(c) for c in row))
            for row in rows]
    return tag("table", join([*head, tag("tbody", join(body))]), id=table_id)


def fmt(value: float | int | None, spec: str) -> str:
    """``format(value, spec)``, or an en dash for a missing value."""
    return "\u2013" if value is None else format(value, spec)


def png_data_uri(img: np.ndarray | bytes) -> str:
    """A uint8 HxW or HxWx3 array (or PNG bytes) as a ``data:image/png;base64`` URI."""
    if not isinstance(img, bytes):
        buf = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(img)).save(buf, format="PNG", compress_level=1)
        img = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(img).decode("ascii")


def pixel_image(img: np.ndarray, alt: str, zoom: int) -> Raw:
    """An ``<img>`` of a uint8 array shown ``zoom`` times its size, pixel-exact."""
    h, w = img.shape[:2]
    return Raw(f'<img class="px" src="{png_data_uri(img)}" width="{w * zoom}" height="{h * zoom}" '
               f'alt="{esc(alt)}">')


def figure(content: object, caption: object) -> Raw:
    return tag("figure", join([content, tag("figcaption", caption)]))


def plot_image(fig: object, alt: str, dpi: int = 96) -> Raw:
    """A matplotlib ``Figure`` (Agg, no pyplot state) as an embedded PNG ``<img>``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)  # type: ignore[attr-defined]
    return Raw(f'<img class="plot" src="{png_data_uri(buf.getvalue())}" alt="{esc(alt)}">')


def page(title: str, body: Iterable[object]) -> str:
    """The whole document: inline style, no scripts, no external references."""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{esc(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
            + "\n".join(esc(part) for part in body) + "\n</body></html>\n")


def write_page(path: str | Path, document: str) -> None:
    """Write ``document`` to ``path`` atomically (a reader sees the old page or the whole new one)."""
    with atomic_path(path) as tmp:
        tmp.write_text(document, encoding="utf-8")
