"""What every model is built from: the data's shape (``DataSpec``), the frozen model config
(``ModelConfig``) and the dense block of running stats all four models read.

Notation: B batch, C candidates, L history length, D id-embedding dim, M multimodal dim,
K similarity buckets, N similarity tiers. Every model maps a batch to logits (B,); the loss
lives in ``mmfs.model.train``. Batches carry ``item_idx`` (B,) and ``hist_idx`` (B, L), vocabulary
indices added by ``mmfs.model.vocab`` (0 = padding, 1 = unseen id), plus the loader's tensors.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

DENSE_DIM = 10  # item then user stats: log1p(impressions), log1p(clicks), ctr, logit(ctr), stats-known flag


@dataclass(frozen=True)
class DataSpec:
    """What the data gives the model: vocabulary size and vector dims per modality."""

    n_items: int
    mm_dim: int = 0
    modal_dims: tuple[tuple[str, int], ...] = ()  # Diff-MSIN: (vector name, dim) per modality


@dataclass(frozen=True)
class ModelConfig:
    """What every model family reads: the family ``name`` and the shared architecture and
    regularisation. Each family extends it with its own settings in its own file (``DINConfig`` in
    ``mmfs.model.din``, ...); ``mmfs.model.models.model_config`` builds a family's config by name,
    and a setting the family does not have is an error, never silently ignored."""

    name: str = "dmf"  # dmf | din | mmctr_din | diffmsin
    id_dim: int = 32
    mlp: tuple[int, ...] = (200, 80)
    dropout: float = 0.1
    batch_norm: bool = False
    user_stats: bool = True  # false: the user_stats block is zeroed (an ablation; docs/models.md)


def dense_features(batch: dict, user_stats: bool = True) -> torch.Tensor:
    """The item's and the user's running stats with their known flags: (B, 10); the user half is
    zeros when ``user_stats`` is false."""
    user = torch.cat([batch["user_dense"], batch["user_dense_mask"].to(batch["dense"].dtype).unsqueeze(-1)], dim=-1)  # (B, 5)
    return torch.cat([batch["dense"], batch["dense_mask"].to(batch["dense"].dtype).unsqueeze(-1),
                      user if user_stats else torch.zeros_like(user)], dim=-1)
