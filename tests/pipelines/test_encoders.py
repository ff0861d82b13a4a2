import numpy as np
import pytest

from mmfs.pipelines.encoders import (
    EncoderConfig,
    EncoderLoadError,
    load_image_encoder,
    load_text_encoder,
)
from mmfs.pipelines.images import decode_image
from tests.support.images import image_roots, make_image_files


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("images")


@pytest.fixture(scope="module")
def images(folder):
    return make_image_files(folder)


def test_hostile_images_are_refused_before_decoding(images, folder):
    roots = image_roots(folder)
    assert decode_image(images["bomb"], roots).error.startswith("decompression bomb refused")
    assert decode_image(images["huge"], roots).error.startswith("image of 8000x6000 pixels is over the limit")
    assert decode_image(images["huge"], roots, max_pixels=50_000_000).error.startswith("corrupt image")  # decoded: no pixel data
    assert decode_image(images["unreadable"]).error.startswith("unreadable image file /proc/self/mem")
    for name in ("unreadable", "outside"):
        assert decode_image(images[name], roots).error.startswith("image path outside the image root"), name
    link = folder / "link.png"
    link.symlink_to("/etc/passwd")  # a path inside the root that leads out of it
    assert decode_image(str(link), roots).error.startswith("image path outside the image root")
    assert decode_image("chelsea.png", (str(images["rgb"]).rsplit("/", 1)[0],)).error is None  # relative to the first root
    assert decode_image(images["rgb"], roots).error is None


def test_decode_handles_every_kind_of_bad_or_unusual_image(images):
    ok = decode_image(images["rgb"])
    assert ok.image.mode == "RGB" and ok.error is None and ok.note is None
    for name, note in (("gray", "converted from L"), ("cmyk", "converted from CMYK"), ("rgba", "alpha (RGBA) composited on white")):
        decoded = decode_image(images[name])
        assert decoded.error is None and decoded.image.mode == "RGB", name
        assert decoded.note == note
    assert decode_image(images["corrupt"]).error.startswith("corrupt image")
    assert decode_image(images["empty"]).error.startswith("zero-size image file")
    assert decode_image(images["missing"]).error.startswith("missing image file")
    assert decode_image("https://example.com/a.png").error.startswith("unsupported image URI scheme")
    assert decode_image("file://" + images["rgb"]).error is None


def test_packaged_text_encoder_gives_meaningful_unit_vectors():
    encoder = load_text_encoder(EncoderConfig())
    vectors = encoder.encode(["a cat sleeping on a sofa", "a kitten napping on the couch", "quarterly bond market report"])
    assert vectors.shape == (3, 384) and encoder.dim == 384
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.3
    assert len(encoder.weights_sha256) == 64


def test_packaged_image_encoder_gives_meaningful_unit_vectors(images):
    encoder = load_image_encoder(EncoderConfig())
    cat = decode_image(images["rgb"]).image
    cat_crop = cat.crop((20, 20, cat.width - 20, cat.height - 20))
    cup = decode_image(images["coffee"]).image
    vectors = encoder.encode(np.stack([encoder.preprocess(im) for im in (cat, cat_crop, cup)]))
    assert vectors.shape == (3, 1280)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.1


def test_missing_weights_fail_loudly_instead_of_random_vectors(tmp_path):
    with pytest.raises(EncoderLoadError, match="cannot load text encoder"):
        load_text_encoder(EncoderConfig(text_model=str(tmp_path / "no-model")))
    with pytest.raises(EncoderLoadError, match="needs --clip-weights"):
        load_image_encoder(EncoderConfig(image_model="clip:ViT-B-32"))
    with pytest.raises(EncoderLoadError, match="cannot load CLIP"):
        load_image_encoder(EncoderConfig(image_model="clip:ViT-B-32", clip_weights=str(tmp_path / "missing.bin")))
    with pytest.raises(EncoderLoadError, match="unknown image encoder"):
        load_image_encoder(EncoderConfig(image_model="resnet9000"))


def test_clip_random_weights_only_behind_the_test_flag_and_named_as_such(images):
    encoder = load_image_encoder(EncoderConfig(image_model="clip:RN50", allow_random_weights=True))
    assert "RANDOM-WEIGHTS-TEST-ONLY" in encoder.name
    vectors = encoder.encode(np.stack([encoder.preprocess(decode_image(images["rgb"]).image)]))
    assert vectors.shape == (1, encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_an_eps_never_reaches_ghostscript(tmp_path, monkeypatch):
    """A PostScript file named like a picture is refused by its format, before PIL's EPS plugin
    (which runs Ghostscript) is tried."""
    from PIL import Image

    Image.init()
    factory, accept = Image.OPEN["EPS"]
    called = []
    monkeypatch.setitem(Image.OPEN, "EPS", (factory, lambda prefix: called.append(prefix) or accept(prefix)))
    eps = tmp_path / "poster.png"
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    decoded = decode_image(str(eps), (str(tmp_path),))
    assert decoded.image is None and decoded.error.startswith("corrupt image") and not called
