"""FuxiCTR's own models as installed peers, trained on mmfs's exported rows (``make bench-models``).

FuxiCTR 2.3.10 (the ``bench`` extra) ships ``model_zoo/LongCTR``: its DIN, DCNv2 and
``LongCTRDataLoader`` are used unmodified. Its ``run_expid.py`` pins fuxictr 2.3.2, so this is
the small runner it would otherwise be: the feature map and data come from
``mmfs.model.export_fuxictr`` (checked row for row against the training set), the model trains with
FuxiCTR's own ``fit`` (Adam, early stopping on validation AUC with its patience, its default
learning-rate cut on plateau, gradient clipping), and valid/test predictions are scored with
mmfs's metrics (``mmfs.model.metrics``), test read once after selection.

    python -m benchmarks.fuxictr_peer --training-set out/movielens/training_sets/ctr_dmf_v1 --model DIN --seed 0
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmfs.model.export_fuxictr import SPLITS, Export
from mmfs.model.metrics import all_metrics


@dataclass(frozen=True)
class PeerConfig:
    """One FuxiCTR model: its class in model_zoo.LongCTR, the feature map, and its own knobs."""

    model: str = "DIN"  # DIN | DCNv2
    with_vector: bool = False  # the mm_emb item feature (FuxiCTR's "embedding" feature type)
    embedding_dim: int = 32  # as mmfs's id_dim
    params: dict = field(default_factory=dict)  # model-specific FuxiCTR arguments


PEERS = {
    "FuxiCTR DIN": PeerConfig("DIN", params={"dnn_hidden_units": [512, 128, 64], "attention_hidden_units": [64]}),
    "FuxiCTR DIN + mm_emb": PeerConfig("DIN", with_vector=True, params={"dnn_hidden_units": [512, 128, 64], "attention_hidden_units": [64]}),
    "FuxiCTR DCNv2 + mm_emb": PeerConfig("DCNv2", with_vector=True, params={
        "model_structure": "parallel", "num_cross_layers": 3, "parallel_dnn_hidden_units": [512, 128, 64]}),
}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def train_peer(exported: Export, peer: PeerConfig, seed: int, max_epochs: int, patience: int, batch_size: int, lr: float,
               users: dict[str, np.ndarray]) -> dict:
    """Train one FuxiCTR model; metrics on valid and test with mmfs's AUC, GAUC and logloss."""
    import torch
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.torch_utils import seed_everything
    from model_zoo.LongCTR import DCNv2, DIN  # noqa: F401 - looked up by name
    from model_zoo.LongCTR.longctr_dataloader import LongCTRDataLoader

    logging.getLogger().setLevel(logging.WARNING)
    models = {"DIN": DIN, "DCNv2": DCNv2}
    seed_everything(seed)
    root = exported.root
    map_file = root / ("feature_map_mm_emb.json" if peer.with_vector else "feature_map.json")
    with tempfile.TemporaryDirectory(prefix="fuxictr-") as model_root:
        params = {"model_root": model_root, "metrics": ["AUC", "logloss"], "optimizer": "adam", "loss": "binary_crossentropy",
                  "task": "binary_classification", "verbose": 0, "gpu": 0 if torch.cuda.is_available() else -1,
                  "embedding_dim": peer.embedding_dim, "learning_rate": lr, "early_stop_patience": patience,
                  "monitor": "AUC", "monitor_mode": "max", "seed": seed, **peer.params}
        (Path(model_root) / root.name).mkdir()  # FuxiCTR saves its best checkpoint there
        feature_map = FeatureMap(root.name, str(root))
        feature_map.load(str(map_file), params)
        model = models[peer.model](feature_map, model_id=f"{peer.model}_{seed}", **params)
        loaders = {split: LongCTRDataLoader(feature_map, str(root / f"{split}.parquet"), str(root / "user_info.parquet"),
                                            str(root / "item_info.parquet"), batch_size=batch_size, shuffle=split == "train",
                                            num_workers=0, max_len=50) for split in SPLITS}
        started = time.perf_counter()
        model.fit(loaders["train"], epochs=max_epochs, validation_data=loaders["valid"])
        seconds = time.perf_counter() - started
        epochs_run = model._epoch_index + 1  # noqa: SLF001 - FuxiCTR keeps no public counter
        best_epoch = epochs_run - model._stopping_steps  # noqa: SLF001 - the last epoch that improved
        out = {"params": sum(p.numel() for p in model.parameters()), "best_epoch": best_epoch,
               "train_samples_per_s": exported.rows["train"] * epochs_run / seconds}
        for split in ("valid", "test"):  # the best checkpoint, loaded back by fit(); test read once
            probabilities = model.predict(loaders[split])
            labels = np.asarray(loaders[split].dataset.darray[:, loaders[split].dataset.column_index["label"]], np.float64)
            out[split] = all_metrics(users[split], labels, _logit(probabilities))
    return out


def main(argv: list[str] | None = None) -> int:
    from mmfs.model.export_fuxictr import check_export, export

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--training-set", required=True)
    parser.add_argument("--out", default=None, help="export folder (default: a temporary one)")
    parser.add_argument("--peer", default="FuxiCTR DIN", choices=sorted(PEERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=6)
    args = parser.parse_args(argv)
    out = Path(args.out or tempfile.mkdtemp(prefix="fuxictr-export-"))
    exported = export(args.training_set, out)
    print(json.dumps({"checked_rows": check_export(args.training_set, exported)}))
    import pyarrow.parquet as pq

    users = {s: pq.read_table(out / f"{s}.parquet", columns=["user_id"]).column(0).to_numpy() for s in SPLITS}
    print(json.dumps(train_peer(exported, PEERS[args.peer], args.seed, args.epochs, 2, 1024, 1e-3, users), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
