"""Checks of the search step's HTML page (components/search/html_report.py) as a browser would see it."""

from __future__ import annotations

import base64
import binascii
import html
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image

IMG = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,([^"]*)">')


def page_images(page: str) -> dict[str, Image.Image]:
    """Every embedded PNG, decoded and checked, by its alt text."""
    images = {}
    for alt, data in IMG.findall(page):
        try:
            raw = base64.b64decode(data, validate=True)
        except binascii.Error as e:
            raise AssertionError(f"image {alt!r}: not base64 ({e})") from None
        assert raw.startswith(b"\x89PNG\r\n\x1a\n"), f"image {alt!r} is not a PNG"
        Image.open(io.BytesIO(raw)).verify()  # a truncated or corrupt PNG raises here
        images[alt] = Image.open(io.BytesIO(raw))
        images[alt].load()
    return images


def assert_a_page_of_plots_and_the_table(page: str, top: Sequence[Mapping[str, Any]]) -> None:
    """A self-contained page: at least the reward, best-so-far and architecture plots, each a drawing of
    sensible size with something on it, and one table row per top architecture, in rank order."""
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.findall(r'(?:src|href)="(?!data:)', page), "the page loads something from elsewhere"
    images = page_images(page)
    assert len(images) >= 3, sorted(images)
    for alt, image in images.items():
        assert 300 <= image.width <= 4000 and 150 <= image.height <= 4000, (alt, image.size)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 16)
        assert colours is None or len(colours) > 20, f"{alt} is (nearly) blank"
    rows = re.findall(r"<tr>(.*?)</tr>", page)
    assert len(rows) == 1 + len(top)  # the header, then one per architecture
    for row, entry in zip(rows[1:], top, strict=True):
        assert f'<td class="num">{entry["rank"]}</td><td>{entry["trial_id"]}</td>' in row
        assert f"<td>{html.escape(entry['summary'])}</td>" in row
