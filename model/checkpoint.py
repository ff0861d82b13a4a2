"""Checkpoints as the scorer and the benchmarks read them: no trainer, no Spark.

``save_checkpoint`` writes a trained model and ``load_checkpoint`` rebuilds it (tensors and strings
only, so ``torch.load(..., weights_only=True)`` refuses anything else).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from dataclasses import asdict

from mmfs.model.config import DataSpec
from mmfs.model.models import build_model, model_config, settings
from mmfs.model.vocab import IdVocab


def load_checkpoint(path: str | Path, map_location: str = "cpu") -> tuple[torch.nn.Module, dict]:
    """(model in eval mode, checkpoint metadata). Only tensors and strings: ``weights_only=True``."""
    checkpoint = torch.load(Path(path), map_location=map_location, weights_only=True)
    config = json.loads(checkpoint["config"])
    saved = {k: tuple(v) if isinstance(v, list) else v for k, v in config["model"].items()}
    saved.setdefault("pooling", saved.get("din_pooling", "mean"))  # DIN's setting before per-model configs
    # Checkpoints written before per-model configs carry every family's settings: keep this one's.
    model_config_ = model_config(saved["name"], **{k: v for k, v in saved.items() if k in settings(saved["name"]) and k != "name"})
    spec_raw = json.loads(checkpoint["data_spec"])
    spec = DataSpec(spec_raw["n_items"], spec_raw["mm_dim"], tuple(tuple(x) for x in spec_raw["modal_dims"]))
    model = build_model(spec, model_config_)
    model.load_state_dict(checkpoint["state_dict"])
    model.eval()
    meta = {"config": config, "feature_service": checkpoint["feature_service"],
            "encoder_identity": json.loads(checkpoint["encoder_identity"]), "vocab": IdVocab(checkpoint["vocab"].numpy()),
            "features": json.loads(checkpoint["features"]) if "features" in checkpoint else None, "data_spec": spec}
    return model, meta


def save_checkpoint(path: str | Path, model: torch.nn.Module, config: dict, vocab: IdVocab, spec: DataSpec, manifest: dict) -> None:
    """Write what ``load_checkpoint`` reads: the weights, the resolved training config, the data
    spec, the feature service, its features and encoder identity, and the vocabulary."""
    torch.save({
        "state_dict": model.state_dict(),
        "config": json.dumps(config),
        "data_spec": json.dumps(asdict(spec)),
        "feature_service": manifest["feature_service"],
        "encoder_identity": json.dumps(manifest.get("encoder_identity") or {}),
        "features": json.dumps(manifest["features"]),
        "vocab": torch.from_numpy(vocab.ids),
    }, Path(path))
