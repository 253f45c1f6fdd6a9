"""Checks and normalisation of encoded images before they enter a pipeline (Pillow, no TF).

Guards against the bad inputs that real image collections contain: files that are not images,
truncated files, and decompression bombs (a small file that decodes to billions of pixels; one
OpenClipart PNG is 29,700 px wide). A bad image raises `SkipRecord` with one of the reasons below,
so callers count it instead of crashing or dropping it silently.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, UnidentifiedImageError

from data_pipelines.records import SkipRecord

# Pixels (width x height) above which an image is refused without decoding it. 64 MP covers
# any normal photo; Pillow's own guard is similar but only warns below twice its limit.
DEFAULT_MAX_PIXELS = 64_000_000
# Formats that tf.io.decode_image reads; anything else Pillow can open is re-encoded as PNG.
TF_DECODABLE_FORMATS = frozenset({"JPEG", "PNG", "GIF", "BMP", "WEBP"})

REASON_EMPTY = "empty_file"
REASON_NOT_IMAGE = "not_an_image"
REASON_TRUNCATED = "truncated_image"
REASON_TOO_LARGE = "too_large_image"


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise SkipRecord(REASON_EMPTY)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise SkipRecord(REASON_TOO_LARGE, str(e)) from None
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise SkipRecord(REASON_NOT_IMAGE, str(e)) from None
    width, height = image.size
    if width * height > max_pixels or width <= 0 or height <= 0:
        raise SkipRecord(REASON_TOO_LARGE, f"{width}x{height} px > {max_pixels} px")
    return image


def _load(image: Image.Image) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise SkipRecord(REASON_TRUNCATED, str(e)) from None


def checked_image_bytes(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, full_decode: bool = True
) -> bytes:
    """Returns bytes that tf.io.decode_image can read, or raises SkipRecord.

    With `full_decode` the image is decoded once to catch truncation (the only reliable check);
    without it only the header is read. Formats TF cannot decode are re-encoded as PNG.
    """
    image = _open(data, max_pixels)
    if full_decode or image.format not in TF_DECODABLE_FORMATS:
        _load(image)
    if image.format in TF_DECODABLE_FORMATS:
        return data
    out = io.BytesIO()
    image.convert("RGBA" if "A" in image.getbands() else "RGB").save(out, format="PNG")
    return out.getvalue()


def normalised_jpeg(
    data: bytes,
    *,
    max_side: int,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: tuple[int, int, int] = (255, 255, 255),
    quality: int = 90,
) -> tuple[bytes, tuple[int, int]]:
    """Decodes, composites transparency onto `background`, shrinks to `max_side` and re-encodes.

    Transparent cut-outs (Tux Paint stamps, clip art) would otherwise show whatever colour sits
    under their alpha channel once TF drops it. Returns (jpeg bytes, (width, height)).
    """
    image = _open(data, max_pixels)
    if image.format == "JPEG":
        image.draft("RGB", (max_side, max_side))  # decode at a reduced scale when it can
    _load(image)
    if image.mode in ("P", "LA", "L") and "transparency" in image.info:
        image = image.convert("RGBA")
    if "A" in image.getbands():
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*background, 255))
        image = Image.alpha_composite(canvas, rgba)
    image = image.convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue(), image.size
