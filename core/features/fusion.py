"""The fused multimodal embedding (the MMCTR "V4" strategy), written once: L2-normalised PCA(text)
and PCA(image) parts concatenated, then L2-normalised. numpy only: the PCA is fitted in Spark
(``mmfs.pipelines.spark.encoding.fit_pca``), applied here."""
from __future__ import annotations

import hashlib
import io

import numpy as np


def fuse(text_emb: np.ndarray, image_emb: np.ndarray | None, has_image: np.ndarray, pca: dict) -> np.ndarray:
    """(N, Dt), (N, Di) -> (N, mm_dim): unit-norm PCA parts concatenated, then unit-normalised.

    An item without an image gets zeros in the image part, so its mm_emb is its text part.
    """
    def part(x: np.ndarray, name: str) -> np.ndarray:
        projected = (x.astype(np.float64) - pca[f"{name}_mean"]) @ pca[f"{name}_components"]  # (N, k)
        return projected / np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)

    parts = [part(text_emb, "text")]
    if "image_components" in pca:
        image_part = np.zeros((len(text_emb), pca["image_components"].shape[1]))
        if has_image.any():
            image_part[has_image] = part(image_emb[has_image], "image")
        parts.append(image_part)
    fused = np.concatenate(parts, axis=1)
    return (fused / np.maximum(np.linalg.norm(fused, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def part_slices(pca: dict) -> dict[str, slice]:
    """Where ``fuse`` puts each modality in mm_emb: {"text": slice, "image": slice (when fitted)}."""
    text = pca["text_components"].shape[1]
    parts = {"text": slice(0, text)}
    if "image_components" in pca:
        parts["image"] = slice(text, text + pca["image_components"].shape[1])
    return parts


def pca_artifact(pca: dict) -> tuple[bytes, str]:
    """The PCA as .npz bytes, and a checksum of its arrays (stable across re-saves)."""
    digest = hashlib.sha256()
    for key in sorted(pca):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(pca[key]).tobytes())
    buffer = io.BytesIO()
    np.savez(buffer, **pca)
    return buffer.getvalue(), digest.hexdigest()
