"""The MMCTR challenge's DIN (arXiv 2504.18961): multi-head target attention over [id ; PCA(BERT)+PCA(image)]
items, SENet over the fields, an optional cross network."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmfs.model.config import DENSE_DIM, DataSpec, ModelConfig, dense_features
from mmfs.model.layers import MLP, CrossNetwork, IdEmbedding, MultiHeadTargetAttention, SENet


@dataclass(frozen=True)
class MMCTRConfig(ModelConfig):
    """MMCTR DIN's settings beside the shared ones."""

    name: str = "mmctr_din"
    heads: int = 2  # multi-head target attention
    cross_layers: int = 0  # a CrossNetwork before the DNN (0: none)


class MMCTRDIN(nn.Module):
    """MMCTR challenge DIN (arXiv 2504.18961): items as [id emb ; projected PCA(text)+PCA(image)],
    multi-head target attention, SENet over the fields, optional cross network, DNN."""

    NAME = "mmctr_din"
    Config = MMCTRConfig
    SERVICE = "ctr_mmctr_din_v1"

    @staticmethod
    def vectors(features: list[str]) -> tuple[str, ...]:
        """The fused PCA(text) + PCA(image) vector, ``mm_emb``."""
        return ("mm_emb",)

    def __init__(self, spec: DataSpec, config: MMCTRConfig):
        super().__init__()
        D = config.id_dim
        self.config = config
        self.items = IdEmbedding(spec.n_items, D)
        self.mm = nn.Linear(spec.mm_dim, D)
        self.attention = MultiHeadTargetAttention(2 * D, 2 * D, 2 * D, config.heads)
        self.dense = nn.Linear(DENSE_DIM, 2 * D)
        self.senet = SENet(fields=3)
        self.cross = CrossNetwork(6 * D, config.cross_layers) if config.cross_layers else nn.Identity()
        self.dnn = MLP(6 * D, config.mlp, 1, config.dropout, config.batch_norm)

    def item_vectors(self, idx: torch.Tensor, mm: torch.Tensor) -> torch.Tensor:
        """Item ids (...) and mm vectors (..., M) -> [id emb ; projected mm] (..., 2D)."""
        return torch.cat([self.items(idx), self.mm(mm)], dim=-1)  # (..., 2D)

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits (B,): SENet over [target, interest, dense] fields (B, 3, 2D), optional cross network, DNN."""
        target = self.item_vectors(batch["item_idx"], batch["mm_emb"])  # (B, 2D)
        hist = self.item_vectors(batch["hist_idx"], batch["hist_mm_emb"])  # (B, L, 2D)
        interest = self.attention(target, hist, batch["hist_mask"])  # (B, 2D)
        fields = torch.stack([target, interest, self.dense(dense_features(batch, self.config.user_stats))], dim=1)  # (B, 3, 2D)
        x = self.senet(fields).flatten(1)  # (B, 6D)
        return self.dnn(self.cross(x)).squeeze(-1)
