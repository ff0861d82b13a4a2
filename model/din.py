"""DIN (Zhou et al., KDD 2018): activation-unit target attention of the target id over the history ids."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmfs.model.config import DENSE_DIM, DataSpec, ModelConfig, dense_features
from mmfs.model.layers import MLP, DinAttention, IdEmbedding


@dataclass(frozen=True)
class DINConfig(ModelConfig):
    """DIN's settings beside the shared ones."""

    name: str = "din"
    pooling: str = "mean"  # mean | sum (the DIN paper's; grows with history length)


class DIN(nn.Module):
    """Deep Interest Network: activation-unit attention of the target id over the history ids."""

    NAME = "din"
    Config = DINConfig
    SERVICE = "ctr_din_v1"  # the feature service it trains and serves on (feature_repo/features.py)

    @staticmethod
    def vectors(features: list[str]) -> tuple[str, ...]:
        """The embedding vectors it reads from its service's ``features`` (``view:feature``): none."""
        return ()

    def __init__(self, spec: DataSpec, config: DINConfig):
        super().__init__()
        D = config.id_dim
        self.config = config
        self.items = IdEmbedding(spec.n_items, D)
        self.attention = DinAttention(D, pooling=config.pooling)
        self.dnn = MLP(3 * D + DENSE_DIM, config.mlp, 1, config.dropout, config.batch_norm)

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits (B,) from [e_t, interest, e_t * interest, dense features]."""
        target = self.items(batch["item_idx"])  # (B, D)
        hist = self.items(batch["hist_idx"])  # (B, L, D)
        interest = self.attention(target, hist, batch["hist_mask"])  # (B, D)
        return self.dnn(torch.cat([target, interest, target * interest, dense_features(batch, self.config.user_stats)], -1)).squeeze(-1)
