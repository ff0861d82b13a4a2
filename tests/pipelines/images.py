"""Real test images from the scikit-image wheel, plus broken variants made from them."""
from pathlib import Path

import skimage
from PIL import Image

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"


def make_image_files(folder: Path) -> dict[str, str]:
    """name -> path of a real RGB photo, a grayscale, an RGBA, a CMYK, a corrupt, an empty file and a missing one."""
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
    return {
        "rgb": str(chelsea),
        "coffee": str(SKIMAGE_DATA / "coffee.png"),
        "gray": str(SKIMAGE_DATA / "camera.png"),
        "rgba": str(rgba),
        "cmyk": str(cmyk),
        "corrupt": str(corrupt),
        "empty": str(empty),
        "missing": str(folder / "no_such_file.png"),
    }
