"""Real test images from the scikit-image wheel, plus broken variants made from them."""
import struct
import zlib
from pathlib import Path

import skimage
from PIL import Image

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"


def header_only_png(width: int, height: int) -> bytes:
    """A tiny PNG that declares ``width`` x ``height`` pixels (a decompression bomb when large)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def make_image_files(folder: Path) -> dict[str, str]:
    """name -> path of a real RGB photo, a grayscale, an RGBA, a CMYK, a corrupt, an empty file, a
    missing one, and hostile ones: a decompression bomb, an image over the pixel limit, an
    unreadable path and a file outside the image roots (``image_roots(folder)``)."""
    folder.mkdir(parents=True, exist_ok=True)
    chelsea = SKIMAGE_DATA / "chelsea.png"
    cmyk = folder / "coffee_cmyk.jpg"
    Image.open(SKIMAGE_DATA / "coffee.png").convert("CMYK").save(cmyk)
    rgba = folder / "chelsea_rgba.png"
    with Image.open(chelsea) as im:
        im.convert("RGBA").save(rgba)
    corrupt = folder / "corrupt.png"
    corrupt.write_bytes(chelsea.read_bytes()[:400])
    empty = folder / "empty.png"
    empty.write_bytes(b"")
    bomb = folder / "bomb.png"
    bomb.write_bytes(header_only_png(30000, 30000))  # 900 megapixels declared in 65 bytes
    huge = folder / "huge.png"
    huge.write_bytes(header_only_png(8000, 6000))  # 48 MP: under PIL's own bomb check, over our limit
    return {
        "rgb": str(chelsea),
        "coffee": str(SKIMAGE_DATA / "coffee.png"),
        "gray": str(SKIMAGE_DATA / "camera.png"),
        "rgba": str(rgba),
        "cmyk": str(cmyk),
        "corrupt": str(corrupt),
        "empty": str(empty),
        "missing": str(folder / "no_such_file.png"),
        "bomb": str(bomb),
        "huge": str(huge),
        "unreadable": "/proc/self/mem",
        "outside": "/etc/passwd",
    }


def image_roots(folder: Path | None) -> tuple[str, ...]:
    """The roots the test images lie in: the test's folder and scikit-image's data."""
    return (str(folder), str(SKIMAGE_DATA)) if folder else (str(SKIMAGE_DATA),)
