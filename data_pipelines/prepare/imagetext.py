"""The embedded default image-text set: Tux Paint stamps, OpenClipart and emoji with captions.

Three sources with their own identity and category labels (see shared notes/data_sources.md):
  tuxpaint    photo cut-outs; caption = first line of <stamp>.txt; category = stamp folder (GPL-2)
  openclipart clip art; captions from the SVG's RDF title/description/keywords, file name and
              folder; titles that repeat across many files ("gramastar") are noise and dropped;
              category = folder (public domain)
  emoji       Noto Color Emoji rendered with Pillow; captions = Unicode name and CLDR keywords;
              category = Unicode sub-group (font: OFL-1.1, data: Unicode licence)
Splits: about 15% of each source's categories are held out entirely (split `heldout`, for
zero-shot classification on classes never seen in training); the remaining examples go to
train / validation / test (80 / 10 / 10) by a hash of a grouping key (emoji skin-tone variants
share one, so near-duplicates never straddle splits). Images are composited on white, shrunk to
`max_side` and stored as JPEG. A sentencepiece tokenizer is trained on the train captions.
"""

from __future__ import annotations

import collections
import io
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

from data_pipelines.images import normalised_jpeg
from data_pipelines.prepare.debs import fetch_debs, unpack_deb
from data_pipelines.prepare.writing import load_images, split_by_hash, unit_hash, write_prepared
from data_pipelines.records import SkipCounter, SkipRecord
from data_pipelines.sources.common import read_file
from data_pipelines.tokenizers import train_sentencepiece

NAME = "imagetext"
PACKAGES = {
    "tuxpaint-stamps-default": "GPL-2.0 (fetched at preparation time, never redistributed)",
    "openclipart-png": "public domain",
    "openclipart-svg": "public domain",
    "fonts-noto-color-emoji": "OFL-1.1 / Apache-2.0",
    "unicode-cldr-core": "Unicode-DFS-2016",
    "unicode-data": "Unicode-DFS-2016",
}
TUXPAINT = "usr/share/tuxpaint/stamps"
OPENCLIPART_PNG = "usr/share/openclipart/png"
OPENCLIPART_SVG = "usr/share/openclipart/svg"
EMOJI_FONT = "usr/share/fonts/truetype/noto/NotoColorEmoji.ttf"
EMOJI_TEST = "usr/share/unicode/emoji/emoji-test.txt"
CLDR_ANNOTATIONS = (
    "usr/share/unicode/cldr/common/annotations/en.xml",
    "usr/share/unicode/cldr/common/annotationsDerived/en.xml",
)
HELDOUT_CATEGORY_FRACTION = 0.15
SPLIT_FRACTIONS = (("train", 0.8), ("validation", 0.1), ("test", 0.1))
GENERIC_TITLE_MIN_REPEATS = 25
# The packages link identical images under several names; one copy is kept (no split leakage).
REASON_DUPLICATE = "duplicate_image"
_SKIN_TONE = re.compile("[\U0001f3fb-\U0001f3ff]")
_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_DC = "{http://purl.org/dc/elements/1.1/}"


def wanted_member(name: str) -> bool:
    """Which files of the packages the builder reads (skips Tux Paint's sounds, for one)."""
    if name.startswith(TUXPAINT):
        return name.endswith((".png", ".txt"))
    if name.startswith(("usr/share/openclipart/", "usr/share/fonts/")):
        return True
    return name == EMOJI_TEST or name in CLDR_ANNOTATIONS or name.startswith("usr/share/doc/")


# --- collecting items (metadata only; images are loaded later, in parallel) ------------------


def collect_tuxpaint(root: Path, skips: SkipCounter) -> list[dict[str, Any]]:
    stamps = root / TUXPAINT
    items = []
    for png in sorted(stamps.rglob("*.png")):
        # "x_mirror.png" is the mirrored twin of "x.png" and shares its caption and split group.
        base = png.with_name(png.stem.removesuffix("_mirror") + ".png")
        caption_file = base.with_suffix(".txt")
        where = str(png.relative_to(stamps))
        if png.is_symlink():
            skips.add(REASON_DUPLICATE, f"tuxpaint:{where}")
            continue
        if not caption_file.exists():
            skips.add("empty_caption", f"tuxpaint:{where}")
            continue
        lines = caption_file.read_text(encoding="utf-8", errors="replace").splitlines()
        caption = lines[0].strip() if lines else ""
        if not caption:
            skips.add("empty_caption", f"tuxpaint:{where}")
            continue
        category = str(png.parent.relative_to(stamps))
        items.append(
            {
                "id": f"tuxpaint/{where}",
                "source": "tuxpaint",
                "category": category,
                "texts": [caption],
                "group": f"tuxpaint/{base.relative_to(stamps)}",
                "load": ("file", str(png)),
            }
        )
    return items


def _svg_metadata(svg: Path) -> dict[str, Any]:
    """title, description and keywords from an OpenClipart SVG's RDF block."""
    try:
        tree = ET.parse(svg)
    except (ET.ParseError, OSError):
        return {}
    work = next(tree.iter("{http://web.resource.org/cc/}Work"), None)
    if work is None:
        return {}
    title = work.find(f"{_DC}title")
    description = work.find(f"{_DC}description")
    keywords = [li.text.strip() for li in work.iter(f"{_RDF}li") if li.text and li.text.strip()]
    return {
        "title": (title.text or "").strip() if title is not None else "",
        "description": (description.text or "").strip() if description is not None else "",
        "keywords": list(dict.fromkeys(keywords)),
    }


def _stem_words(stem: str) -> str:
    """'chemistry_flask_matthew__02' -> 'chemistry flask matthew'."""
    words = re.sub(r"[_\-]+", " ", stem)
    return re.sub(r"(\s*\d+)+$", "", words).strip()


def collect_openclipart(root: Path, skips: SkipCounter) -> list[dict[str, Any]]:
    png_root, svg_root = root / OPENCLIPART_PNG, root / OPENCLIPART_SVG
    pngs = sorted(png_root.rglob("*.png"))
    metadata = {}
    for png in pngs:
        relative = png.relative_to(png_root)
        metadata[png] = _svg_metadata((svg_root / relative).with_suffix(".svg"))
    title_counts = collections.Counter(m.get("title", "").lower() for m in metadata.values())
    items = []
    for png in pngs:
        meta, relative = metadata[png], png.relative_to(png_root)
        if png.is_symlink():
            skips.add(REASON_DUPLICATE, f"openclipart:{relative}")
            continue
        category = str(relative.parent)
        texts = []
        title = meta.get("title", "")
        if title and title_counts[title.lower()] < GENERIC_TITLE_MIN_REPEATS:
            texts.append(title)
        if meta.get("description"):
            texts.append(meta["description"][:300])
        if meta.get("keywords"):
            texts.append(", ".join(meta["keywords"][:12]))
        stem = _stem_words(png.stem)
        if stem:
            texts.append(f"{stem}, {category.replace('/', ' ')}")
        if not texts:
            skips.add("empty_caption", f"openclipart:{relative}")
            continue
        items.append(
            {
                "id": f"openclipart/{relative}",
                "source": "openclipart",
                "category": category,
                "texts": texts,
                "group": f"openclipart/{relative}",
                "load": ("file", str(png)),
            }
        )
    return items


def _cldr_keywords(root: Path) -> dict[str, list[str]]:
    keywords: dict[str, list[str]] = {}
    for relative in CLDR_ANNOTATIONS:
        path = root / relative
        if not path.exists():
            continue
        for node in ET.parse(path).iter("annotation"):
            if node.get("type") != "tts" and node.text:
                keywords.setdefault(node.get("cp", ""), [k.strip() for k in node.text.split("|")])
    return keywords


def collect_emoji(root: Path, skips: SkipCounter) -> list[dict[str, Any]]:
    font = root / EMOJI_FONT
    keywords = _cldr_keywords(root)
    items, subgroup = [], ""
    for line in (root / EMOJI_TEST).read_text(encoding="utf-8").splitlines():
        if line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
            continue
        if "; fully-qualified" not in line or "#" not in line:
            continue
        codes = line.split(";")[0].split()
        text = "".join(chr(int(c, 16)) for c in codes)
        comment = line.split("#", 1)[1].strip()
        name = comment.split(" ", 2)[2] if comment.count(" ") >= 2 else ""
        if not name:
            skips.add("empty_caption", f"emoji:{'-'.join(codes)}")
            continue
        texts = [name]
        base = _SKIN_TONE.sub("", text).replace("\ufe0f", "")
        words = keywords.get(text) or keywords.get(base) or []
        if words:
            texts.append(" | ".join(words))
        items.append(
            {
                "id": f"emoji/{'-'.join(codes)}",
                "source": "emoji",
                "category": subgroup,
                "texts": texts,
                "group": f"emoji/{name.split(':')[0]}",
                "load": ("emoji", text, str(font)),
            }
        )
    return items


# --- loading images (runs in worker processes) -----------------------------------------------


def render_emoji(text: str, font_path: str) -> bytes:
    """PNG bytes of `text` drawn with the colour font (which only renders at size 109)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(font_path, 109)
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGBA", (1, 1))).textbbox(
        (0, 0), text, font=font, embedded_color=True
    )
    if right - left <= 0 or bottom - top <= 0 or right - left > 4 * (bottom - top):
        # Nothing drawn, or a sequence the layout engine could not join into one glyph.
        raise SkipRecord("unrenderable_emoji", text)
    canvas = Image.new("RGBA", (right - left + 8, bottom - top + 8), (255, 255, 255, 0))
    ImageDraw.Draw(canvas).text((4 - left, 4 - top), text, font=font, embedded_color=True)
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()


class ImageLoader:
    """Picklable loader: ("file", path) or ("emoji", text, font) -> normalised JPEG bytes.

    `renderer(text, font_path) -> image bytes` draws emoji (a top-level function, so that worker
    processes can unpickle it)."""

    def __init__(self, max_side: int, renderer: Callable[[str, str], bytes] = render_emoji):
        self.max_side = max_side
        self.renderer = renderer

    def __call__(self, load: tuple) -> bytes:
        data = read_file(load[1]) if load[0] == "file" else self.renderer(load[1], load[2])
        return normalised_jpeg(data, max_side=self.max_side)[0]


# --- assembling the data set -----------------------------------------------------------------


def heldout_categories(items: list[dict[str, Any]], min_examples: int = 4) -> set[tuple[str, str]]:
    """(source, category) pairs held out of training: a hashed ~15% of the categories that have
    at least `min_examples` examples (smaller ones would make noisy zero-shot classes)."""
    sizes = collections.Counter((it["source"], it["category"]) for it in items)
    return {
        key
        for key, n in sizes.items()
        if n >= min_examples and unit_hash(f"heldout/{key[0]}/{key[1]}") < HELDOUT_CATEGORY_FRACTION
    }


def assign_splits(items: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    held = heldout_categories(items)
    splits: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in SPLIT_FRACTIONS}
    splits["heldout"] = []
    for item in items:
        if (item["source"], item["category"]) in held:
            splits["heldout"].append(item)
        else:
            splits[split_by_hash(item["group"], SPLIT_FRACTIONS)].append(item)
    return splits


def collect_all(tree: Path, skips: SkipCounter) -> list[dict[str, Any]]:
    items = []
    for collect in (collect_tuxpaint, collect_openclipart, collect_emoji):
        items.extend(collect(tree, skips))
    return items


def unpack_packages(cache: Path) -> Path:
    """Fetches the packages (once) and unpacks the files the builder reads into cache/tree."""
    tree = cache / "tree"
    marker = tree / ".unpacked-imagetext-v2"
    if marker.exists():
        return tree
    for _package, deb in fetch_debs(list(PACKAGES), cache).items():
        unpack_deb(deb, tree, wanted_member)
    marker.write_text("ok\n")
    return tree


def prepare(
    out_dir: Path,
    *,
    cache: Path,
    tree: Path | None = None,
    max_side: int = 160,
    vocab_size: int = 4000,
    limit_per_source: int | None = None,
    renderer: Callable[[str, str], bytes] = render_emoji,
) -> Path:
    """Builds the data set into `out_dir` from the packages (or an unpacked `tree`)."""
    tree = tree or unpack_packages(cache)
    skips = SkipCounter()
    items = collect_all(tree, skips)
    if limit_per_source:
        per_source: collections.Counter[str] = collections.Counter()
        kept = []
        for item in sorted(items, key=lambda it: unit_hash(it["id"])):
            if per_source[item["source"]] < limit_per_source:
                per_source[item["source"]] += 1
                kept.append(item)
        items = sorted(kept, key=lambda it: it["id"])
    if not items:
        raise FileNotFoundError(f"No captioned images found under {tree}.")
    examples = load_images(items, ImageLoader(max_side, renderer), skips, label="prepare imagetext")
    splits = assign_splits(examples)
    for split in splits.values():
        for example in split:
            example.pop("group", None)
    captions = [t for ex in splits["train"] for t in ex["texts"]]
    tokenizer = train_sentencepiece(
        captions, cache / "imagetext_tokenizer", vocab_size=vocab_size, lowercase=True
    )
    categories = {
        split: sorted({f"{ex['source']}/{ex['category']}" for ex in exs})
        for split, exs in splits.items()
    }
    manifest = {
        "name": NAME,
        "description": "Captioned images from Tux Paint stamps, OpenClipart and Noto emoji.",
        "packages": PACKAGES,
        "image": {"format": "JPEG", "max_side": max_side, "background": "white"},
        "tokenizer": "tokenizer.model",
        "categories": categories,
    }
    return write_prepared(
        out_dir, splits, manifest, skips, extra_files={"tokenizer.model": tokenizer}
    )
