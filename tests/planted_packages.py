"""A planted package tree laid out like the real Debian packages `hetclip data prepare` reads
(Tux Paint stamps, OpenClipart PNG + SVG metadata, emoji test data + CLDR annotations)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from data_pipelines.prepare import imagetext
from tests.helpers import bomb_png_bytes, image_bytes, write

SVG = """<?xml version="1.0"?>
<svg xmlns="http://www.w3.org/2000/svg" xmlns:cc="http://web.resource.org/cc/"
 xmlns:dc="http://purl.org/dc/elements/1.1/"
 xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><metadata><rdf:RDF><cc:Work rdf:about="">
<dc:title>{title}</dc:title><dc:description>{description}</dc:description>
<dc:subject><rdf:Bag><rdf:li></rdf:li><rdf:li>{kw1}</rdf:li><rdf:li>tool</rdf:li></rdf:Bag>
</dc:subject></cc:Work></rdf:RDF></metadata></svg>"""

EMOJI_TEST = """# group: Animals & Nature
# subgroup: animal-mammal
1F431                                      ; fully-qualified     # \U0001f431 E0.6 cat face
1F408                                      ; fully-qualified     # \U0001f408 E0.7 cat
# subgroup: hand-fingers-open
1F44B                                      ; fully-qualified     # \U0001f44b E0.6 waving hand
1F44B 1F3FB                      ; fully-qualified # \U0001f44b\U0001f3fb E1.0 waving hand: light skin tone
263A                                       ; unqualified         # \u263a E0.6 smiling face
"""
CLDR = """<ldml><annotations>
<annotation cp="\U0001f431">cat | face | pet</annotation>
<annotation cp="\U0001f431" type="tts">cat face</annotation>
<annotation cp="\U0001f44b">hand | wave | waving</annotation>
</annotations></ldml>"""


def fake_render(text: str, font_path: str) -> bytes:
    """Stands in for the colour-font rendering (the font ships in a 10 MB package)."""
    out = io.BytesIO()
    Image.new("RGBA", (20, 18), (ord(text[0]) % 255, 100, 50, 255)).save(out, format="PNG")
    return out.getvalue()


def plant_imagetext_tree(tree: Path) -> Path:
    """Writes 75 stamps (one mirror, one caption-less, one bomb), 30 clip arts and one link to
    a duplicate, 4 emoji."""
    stamps = tree / imagetext.TUXPAINT
    for c in range(18):
        for i in range(4):
            stem = stamps / f"group{c % 3}" / f"kind{c}" / f"stamp{i}"
            rgba = Image.new("RGBA", (30, 20), (0, 0, 0, 0))
            rgba.paste((c * 10, i * 40, 200, 255), (5, 5, 25, 15))
            stem.parent.mkdir(parents=True, exist_ok=True)
            rgba.save(stem.with_suffix(".png"))
            write(stem.with_suffix(".txt"), f"A stamp of kind {c} number {i}.\nfr.utf8=Un timbre\n")
    write(stamps / "group0/kind0/stamp0_mirror.png", image_bytes(seed=9))  # caption of stamp0
    write(stamps / "group0/kind0/orphan.png", image_bytes(seed=8))  # no caption anywhere
    write(stamps / "group1/kind1/huge.png", bomb_png_bytes())
    write(stamps / "group1/kind1/huge.txt", "A decompression bomb.")
    png_root, svg_root = tree / imagetext.OPENCLIPART_PNG, tree / imagetext.OPENCLIPART_SVG
    for i in range(30):
        folder = f"topic{i % 5}"
        write(png_root / folder / f"clip_{i:02d}_01.png", image_bytes(seed=100 + i))
        title = "gramastar" if i < 26 else f"title {i}"  # a title repeated 26 times is noise
        write(
            svg_root / folder / f"clip_{i:02d}_01.svg",
            SVG.format(title=title, description="" if i % 2 else f"desc {i}", kw1=f"kw{i}"),
        )
    # The real packages link duplicate images under other names: one such link.
    (png_root / "topic4" / "clip_linked_01.png").symlink_to("../topic0/clip_00_01.png")
    write(tree / imagetext.EMOJI_TEST, EMOJI_TEST)
    write(tree / imagetext.CLDR_ANNOTATIONS[0], CLDR)
    write(tree / imagetext.EMOJI_FONT, b"not read by fake_render")
    return tree
