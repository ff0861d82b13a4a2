"""Image files as the encoders accept them: a URI resolved inside the allowed image roots, refused
before decoding when too large, converted to RGB, and every refusal a reason (quarantined by the
encode job, never raised)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DecodedImage:
    """One image URI after the checks and decoding: the image, or why it cannot be used."""

    image: object | None  # RGB PIL image, or None when it could not be used
    error: str | None  # why the image was rejected (quarantined), or None
    note: str | None  # a conversion that was applied, e.g. "converted from CMYK"


NO_IMAGE_ROOT = "<no image root configured>"  # encode-items without --image-root and no root recorded by ingest
# The raster formats an item image may be in. PIL would otherwise hand an EPS or PDF to Ghostscript
# (an outside interpreter) and probe dozens of other decoders.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")


def _inside(path: Path, roots: tuple[str, ...]) -> bool:
    return any(path == Path(root).resolve() or Path(root).resolve() in path.parents for root in roots)


def decode_image(uri: str, roots: tuple[str, ...] = (), max_pixels: int = 40_000_000, max_bytes: int = 64 * 1024 * 1024) -> DecodedImage:
    """Open a local image (path or file:// URI) as RGB. Failures are returned, never raised.

    With ``roots``, the path (symlinks resolved; a relative path against the first root) must lie
    inside one of them. Files over ``max_bytes`` and images declaring more than ``max_pixels``
    (decompression bombs included) are refused before their pixels are decoded."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    path = uri[len("file://"):] if uri.startswith("file://") else uri
    if "://" in path:
        return DecodedImage(None, f"unsupported image URI scheme: {uri}", None)
    file = Path(path)
    if roots == (NO_IMAGE_ROOT,):
        return DecodedImage(None, f"no image root is configured (encode-items --image-root DIR): {path}", None)
    if roots:
        file = (Path(roots[0]) / file if not file.is_absolute() else file).resolve()
        if not _inside(file, roots):
            return DecodedImage(None, f"image path outside the image root ({', '.join(roots)}): {path}", None)
    try:
        if not file.is_file():
            return DecodedImage(None, f"missing image file: {path}", None)
        size = file.stat().st_size
        if size > max_bytes:
            return DecodedImage(None, f"image file of {size:,} bytes is over the limit of {max_bytes:,}: {path}", None)
        data = file.read_bytes()
    except OSError as exc:
        return DecodedImage(None, f"unreadable image file {path}: {exc.strerror or exc}", None)
    if not data:
        return DecodedImage(None, f"zero-size image file: {path}", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
            if image.width * image.height > max_pixels:
                return DecodedImage(None, f"image of {image.width}x{image.height} pixels is over the limit of {max_pixels:,}: {path}", None)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        return DecodedImage(None, f"decompression bomb refused {path}: {exc}", None)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return DecodedImage(None, f"corrupt image {path}: {exc}", None)
    if image.width == 0 or image.height == 0:
        return DecodedImage(None, f"image has zero width or height: {path}", None)
    mode = image.mode
    if mode == "RGB":
        return DecodedImage(image, None, None)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return DecodedImage(Image.alpha_composite(background, rgba).convert("RGB"), None, f"alpha ({mode}) composited on white")
    return DecodedImage(image.convert("RGB"), None, f"converted from {mode}")


def resize_center_crop(image, size: int):
    from PIL import Image

    width, height = image.size
    scale = size / min(width, height)
    resized = image.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BICUBIC)
    left = (resized.width - size) // 2
    top = (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))
