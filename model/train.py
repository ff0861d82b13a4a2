"""``mmfs train``: train a CTR model on a Feast training set, early-stopped on validation AUC.

    mmfs train --model dmf --training-set out/movielens/training_sets/ctr_dmf_v1 --out out/models/dmf
    mmfs train --config my.yaml --lr=0.002 --model.buckets=20 --max_epochs=3

Config: frozen dataclasses; a YAML file and then ``--key=value`` overrides (dotted keys reach the
model config). The resolved config is printed and saved in the checkpoint. AdamW; early stopping
on validation AUC only (the test split is read once, after selection); deterministic seeding;
CUDA with bf16 autocast when available, else CPU. Writes ``checkpoint.pt`` (state_dict, config,
feature service, encoder identity, vocabulary; load with ``weights_only=True``), ``metrics.json``
and ``curve.png`` into ``--out``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.nn import functional as F
from tqdm import tqdm

from mmfs.model.checkpoint import save_checkpoint
from mmfs.model.data import LoaderConfig, TrainingSetDataset, read_manifest
from mmfs.model.layers import IdEmbedding
from mmfs.model.metrics import all_metrics, auc
from mmfs.model.batch import perturb_for_training, with_vocab_indices
from mmfs.model.config import DataSpec
from mmfs.model.report import plot_curve
from mmfs.model.train_config import TrainConfig, options_help, resolve_config, with_overrides  # noqa: F401 - mmfs train's config
from mmfs.model.models import SERVICES, build_model, model_vectors
from mmfs.model.vocab import IdVocab


# -- data ------------------------------------------------------------------------------------------

def prepare(batch: dict, vocab: IdVocab, device: torch.device) -> dict:
    """A loader batch with its vocabulary indices, on ``device``."""
    return {k: v.to(device, non_blocking=True) for k, v in with_vocab_indices(batch, vocab).items()}


def optimiser_for(model: torch.nn.Module, config: "TrainConfig") -> torch.optim.Optimizer:
    """AdamW; the id embeddings may decay at their own rate (``embedding_weight_decay``)."""
    embedding_decay = config.weight_decay if config.embedding_weight_decay < 0 else config.embedding_weight_decay
    embeddings = [p for m in model.modules() if isinstance(m, IdEmbedding) for p in m.parameters(recurse=False)]
    ids = {id(p) for p in embeddings}
    rest = [p for p in model.parameters() if id(p) not in ids]
    groups = [{"params": rest, "weight_decay": config.weight_decay}]
    if embeddings:
        groups.append({"params": embeddings, "weight_decay": embedding_decay})
    return torch.optim.AdamW(groups, lr=config.lr)


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; any other name as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def datasets(config: TrainConfig, vectors: tuple[str, ...], rank: int = 0, world_size: int = 1) -> dict[str, TrainingSetDataset]:
    """Train rows are sharded across ranks (by row group); every rank evaluates all valid/test rows."""
    out = {}
    for split in ("train", "valid", "test"):
        sharded = split == "train"
        loader = LoaderConfig(split=split, batch_size=config.batch_size, max_len=config.max_len, vectors=vectors,
                              similarity=getattr(config.model, "similarity", "fused"), shuffle=split == "train", seed=config.seed,
                              rank=rank if sharded else 0, world_size=world_size if sharded else 1)
        out[split] = TrainingSetDataset(config.training_set, loader)
    for vector in vectors:  # share one embedding index across splits
        out["valid"].indexes[vector] = out["test"].indexes[vector] = out["train"].indexes[vector]
    return out


def data_spec(vocab: IdVocab, train: TrainingSetDataset, vectors: tuple[str, ...]) -> DataSpec:
    """The model's ``DataSpec``: vocabulary size, mm_emb dim and the other vectors' (name, dim)."""
    dims = {v: train.indexes[v].dim for v in vectors}
    modal = tuple((v, d) for v, d in dims.items() if d > 0 and v != "mm_emb")
    return DataSpec(n_items=len(vocab), mm_dim=dims.get("mm_emb", 0), modal_dims=modal)


def forward(model, batch: dict) -> tuple[torch.Tensor, dict]:
    """Logits and the model's auxiliary losses (Diff-MSIN's), through DDP's wrapper when there is one."""
    logits = model(batch)
    core = getattr(model, "module", model)
    return logits, (getattr(core, "aux_losses", None) or {}) if core.training else {}


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, aux: dict) -> torch.Tensor:
    """Binary cross-entropy of the logits (B,) plus the auxiliary losses."""
    return F.binary_cross_entropy_with_logits(logits.float(), labels) + sum(aux.values(), torch.zeros((), device=logits.device))


@torch.no_grad()
@torch.inference_mode()
def evaluate(model, data: TrainingSetDataset, vocab: IdVocab, device: torch.device, max_batches: int = 0) -> dict:
    """AUC, GAUC and logloss of ``model`` on ``data`` (its first ``max_batches`` batches when non-zero)."""
    model.eval()
    users, labels, logits = [], [], []
    for step, batch in enumerate(data):
        if max_batches and step >= max_batches:
            break
        batch = prepare(batch, vocab, device)
        with autocast(device):
            out = model(batch)
        users.append(batch["user_id"].cpu().numpy())
        labels.append(batch["label"].cpu().numpy())
        logits.append(out.float().cpu().numpy())
    return all_metrics(np.concatenate(users), np.concatenate(labels), np.concatenate(logits))


def autocast(device: torch.device):
    """bfloat16 autocast on CUDA; a disabled autocast on CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


# -- training --------------------------------------------------------------------------------------

class Selection:
    """Model selection on validation AUC only, every rule counted in epochs (the recipe every model
    shares): each ``validate`` pass records the curve and keeps the best state; under the plateau
    schedule, ``lr_patience_epochs`` without improvement cut the learning rate by ``lr_decay``
    (down to ``min_lr``); ``patience_epochs`` without improvement end the run."""

    def __init__(self, model, optimiser, valid: TrainingSetDataset, vocab: IdVocab, device: torch.device, config: TrainConfig):
        self.model, self.optimiser, self.valid, self.vocab, self.device, self.config = model, optimiser, valid, vocab, device, config
        self.history: list[dict] = []
        self.best, self.best_state, self.best_at, self.cut_at = -1.0, None, 0.0, 0.0

    def validate(self, at: float, losses: list[float]) -> bool:
        """One validation pass at epoch ``at``; True when patience has run out."""
        valid = evaluate(self.model, self.valid, self.vocab, self.device, self.config.max_eval_batches)
        self.history.append({"epoch": round(at, 3), "train_loss": float(np.mean(losses)) if losses else float("nan"),
                             "lr": self.optimiser.param_groups[0]["lr"], **{f"valid_{k}": v for k, v in valid.items()}})
        if self.config.progress:
            print(f"{self.config.model.name} epoch {at:.2f}: train loss {self.history[-1]['train_loss']:.4f}, valid AUC "
                  f"{valid['auc']:.4f}, GAUC {valid['gauc']:.4f}, logloss {valid['logloss']:.4f}, lr {self.history[-1]['lr']:.2g}",
                  file=sys.stderr)
        self.model.train()
        if valid["auc"] > self.best:
            self.best, self.best_state, self.best_at = valid["auc"], copy.deepcopy(self.model.state_dict()), at
            return False
        tolerance = 1e-6  # epochs: passes land on fractions of an epoch
        if self.config.lr_schedule == "plateau" and at - max(self.best_at, self.cut_at) >= self.config.lr_patience_epochs - tolerance:
            for group in self.optimiser.param_groups:
                group["lr"] = max(group["lr"] * self.config.lr_decay, self.config.min_lr)
            self.cut_at = at
        return at - self.best_at >= self.config.patience_epochs - tolerance


def cosine_rate(config: TrainConfig, epochs_done: float) -> float:
    """The cosine schedule's learning rate after ``epochs_done`` of ``max_epochs``: lr down to min_lr."""
    progress = min(epochs_done / max(config.max_epochs, 1), 1.0)
    return config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + np.cos(np.pi * progress))


def train_step(trained, optimiser, batch: dict, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on a prepared batch: (loss, logits)."""
    with autocast(device):
        logits, aux = forward(trained, batch)
    loss = loss_fn(logits, batch["label"], aux)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    optimiser.step()
    return loss, logits


def train(config: TrainConfig) -> dict:
    """Train, select on validation AUC, test once. Runs data-parallel (DDP) when a torch process
    group is initialised (``run_distributed``); rank 0 then writes the outputs."""
    import torch.distributed as dist
    from torch.distributed.algorithms.join import Join
    from torch.nn.parallel import DistributedDataParallel

    distributed = dist.is_available() and dist.is_initialized()
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    seed_everything(config.seed)
    device = pick_device(config.device)
    manifest = read_manifest(config.training_set)
    vectors = model_vectors(config.model.name, manifest)
    data = datasets(config, vectors, rank, world)
    vocab = IdVocab.from_training_set(config.training_set, min_count=config.vocab_min_count)
    spec = data_spec(vocab, data["train"], vectors)
    model = build_model(spec, config.model).to(device)  # same seed: same initial weights on every rank
    trained = DistributedDataParallel(model) if distributed else model
    optimiser = optimiser_for(model, config)
    noise = torch.Generator().manual_seed(config.seed + 104729 * rank)
    config = dataclasses.replace(config, progress=config.progress and rank == 0)
    selection = Selection(model, optimiser, data["valid"], vocab, device, config)
    train_rows, train_seconds = 0, 0.0
    for epoch in range(config.max_epochs):
        model.train()
        data["train"].set_epoch(epoch)
        steps = len(data["train"]) if not config.max_steps_per_epoch else min(len(data["train"]), config.max_steps_per_epoch)
        passes = max(1, min(config.evals_per_epoch, steps))
        checkpoints = {round(steps * (k + 1) / passes) for k in range(passes - 1)}  # steps after which to validate mid-epoch
        bar = tqdm(total=steps, desc=f"{config.model.name} epoch {epoch + 1}", disable=not config.progress, leave=False)
        recent_labels, recent_logits, losses, stop = [], [], [], False
        started = time.perf_counter()
        # Join: ranks may hold different numbers of batches (row-group sharding); DDP copes.
        # Mid-epoch validation needs every rank at the same step: only single-process runs do it.
        with Join([trained]) if distributed else contextlib.nullcontext():
            for step, batch in enumerate(data["train"]):
                if config.max_steps_per_epoch and step >= config.max_steps_per_epoch:
                    break
                batch = perturb_for_training(prepare(batch, vocab, device), config.hist_dropout, config.oov_dropout, noise)
                if config.lr_schedule == "cosine":
                    for group in optimiser.param_groups:
                        group["lr"] = cosine_rate(config, epoch + step / steps)
                loss, logits = train_step(trained, optimiser, batch, device)
                train_rows += len(batch["label"])
                losses.append(loss.item())
                recent_labels = (recent_labels + [batch["label"].cpu().numpy()])[-20:]
                recent_logits = (recent_logits + [logits.detach().float().cpu().numpy()])[-20:]
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}", auc=f"{auc(np.concatenate(recent_labels), np.concatenate(recent_logits)):.4f}")
                if not distributed and step + 1 in checkpoints:
                    train_seconds += time.perf_counter() - started
                    stop, losses = selection.validate(epoch + (step + 1) / steps, losses), []
                    started = time.perf_counter()
                    if stop:
                        break
        bar.close()
        if stop:
            break
        train_seconds += time.perf_counter() - started
        if selection.validate(epoch + 1.0, losses):
            break
    model.load_state_dict(selection.best_state)
    best_pass = max(selection.history, key=lambda h: h["valid_auc"])
    metrics = {
        "model": config.model.name, "params": sum(p.numel() for p in model.parameters()), "device": str(device),
        "best_epoch": best_pass["epoch"],
        "valid": evaluate(model, data["valid"], vocab, device, config.max_eval_batches),
        "test": evaluate(model, data["test"], vocab, device, config.max_eval_batches),
        "train_samples_per_s": train_rows / train_seconds if train_seconds else float("nan"), "history": selection.history,
        "world_size": world,
    }
    if rank == 0:
        save(config, model, vocab, spec, manifest, metrics)
    return metrics


def _distributed_worker(config_json: str) -> dict:
    """Runs in each TorchDistributor process (torchrun sets RANK, WORLD_SIZE, MASTER_ADDR)."""
    import torch.distributed as dist

    from mmfs.model.train import TrainConfig, train, with_overrides  # noqa: F811 - fresh process

    dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    try:
        config = with_overrides(TrainConfig(), json.loads(config_json))
        return train(config)
    finally:
        dist.destroy_process_group()


def run_distributed(config: TrainConfig, num_processes: int) -> dict:
    """Data-parallel training through Spark's TorchDistributor (local mode on one machine; on a
    cluster, ``local_mode=False`` spreads the processes over executors)."""
    from pyspark.ml.torch.distributor import TorchDistributor

    distributor = TorchDistributor(num_processes=num_processes, local_mode=True, use_gpu=torch.cuda.is_available())
    return distributor.run(_distributed_worker, json.dumps(asdict(config)))


def save(config: TrainConfig, model, vocab: IdVocab, spec: DataSpec, manifest: dict, metrics: dict) -> None:
    """Write ``checkpoint.pt`` (``mmfs.model.checkpoint.save_checkpoint``), ``metrics.json`` and ``curve.png`` under ``config.output_dir``."""
    out = config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out / "checkpoint.pt", model, asdict(config), vocab, spec, manifest)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_curve(metrics["history"], out / "curve.png", config.model.name)


def main(argv: list[str] | None = None) -> int:
    """``mmfs train``: resolve the config, train (in-process or distributed) and print the metrics; 2 on a bad config."""
    parser = argparse.ArgumentParser(prog="mmfs train", description=__doc__, epilog=options_help(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="din | mmctr_din | dmf | diffmsin (= --model.name=...)")
    parser.add_argument("--training-set", default=None)
    parser.add_argument("--out", default=None, help="output folder (default: out/models/<model>)")
    parser.add_argument("--config", default=None, help="YAML file of TrainConfig fields")
    parser.add_argument("--distributed", type=int, default=0, metavar="N",
                        help="train data-parallel in N processes through pyspark's TorchDistributor")
    args, overrides = parser.parse_known_args(argv)
    if args.model:
        overrides = [f"--model.name={args.model}"] + overrides
    if args.training_set:
        overrides.append(f"--training_set={args.training_set}")
    if args.out:
        overrides.append(f"--out={args.out}")
    try:
        config = resolve_config(args.config, overrides)
        if not Path(config.training_set, "manifest.json").is_file():
            raise ValueError(f"{config.training_set} is not a training set (no manifest.json): build one with mmfs training-set")
    except (ValueError, yaml.YAMLError, OSError) as exc:
        parser.exit(2, f"mmfs train: error: {exc}\n")
    print(yaml.safe_dump(json.loads(json.dumps(asdict(config))), sort_keys=False), file=sys.stderr)
    if SERVICES.get(config.model.name) and read_manifest(config.training_set)["feature_service"] != SERVICES[config.model.name]:
        print(f"note: {config.model.name} trains on {read_manifest(config.training_set)['feature_service']} "
              f"(its own service is {SERVICES[config.model.name]})", file=sys.stderr)
    if args.distributed:
        from mmfs.pipelines.spark.session import build_spark

        build_spark("mmfs-train")  # TorchDistributor runs under the active SparkSession
        metrics = run_distributed(config, args.distributed)
    else:
        metrics = train(config)
    print(json.dumps({k: metrics[k] for k in ("model", "params", "best_epoch", "valid", "test", "train_samples_per_s")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
