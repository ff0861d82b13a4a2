"""The layer library the CTR models are built from.

Notation: B batch (or C candidates), L history length, D id-embedding dim, M modality dim,
H attention heads, K similarity buckets, N histogram tiers.
"""
from __future__ import annotations

import math

import torch
from torch import nn

PAD = 0  # index 0 of every id vocabulary is padding
OOV = 1  # index 1: an id not seen in training


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` ignoring masked-out positions; all-masked rows give zeros, not NaN."""
    scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=dim)
    return torch.nan_to_num(weights, nan=0.0) * mask


class MLP(nn.Module):
    """Linear -> [BatchNorm] -> activation -> [Dropout] per hidden layer, then an optional output layer."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int | None = None, dropout: float = 0.0,
                 batch_norm: bool = False, activation: type[nn.Module] = nn.ReLU):
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for width in hidden:
            layers.append(nn.Linear(dim, width))
            if batch_norm:
                layers.append(nn.BatchNorm1d(width))
            layers.append(activation())
            if dropout:
                layers.append(nn.Dropout(dropout))
            dim = width
        if out_dim is not None:
            layers.append(nn.Linear(dim, out_dim))
            dim = out_dim
        self.net = nn.Sequential(*layers)
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = self.net(x.reshape(-1, shape[-1]))  # BatchNorm1d wants (N, F)
        return y.reshape(*shape[:-1], self.out_dim)


class IdEmbedding(nn.Embedding):
    """Id embedding with index 0 as padding (a zero vector, no gradient)."""

    def __init__(self, num: int, dim: int):
        super().__init__(num, dim, padding_idx=PAD)
        nn.init.normal_(self.weight, std=0.05)
        with torch.no_grad():
            self.weight[PAD].zero_()


class DinAttention(nn.Module):
    """DIN's activation unit: weight_j = MLP([q, k_j, q - k_j, q * k_j]), masked, no softmax.

    ``pooling="mean"`` (default) divides the weighted sum by the number of real history positions,
    so the interest vector keeps its scale whatever the history length; ``"sum"`` is the DIN
    paper's unnormalised sum, whose norm grows with the length (a user with a long history lands
    where training rarely saw one: docs/models.md).
    """

    def __init__(self, dim: int, hidden: tuple[int, ...] = (36,), pooling: str = "mean"):  # the DIN paper: 36 units
        super().__init__()
        if pooling not in ("mean", "sum"):
            raise ValueError(f"pooling must be mean or sum, got {pooling!r}")
        self.unit = MLP(4 * dim, hidden, 1, activation=nn.Sigmoid)
        self.pooling = pooling

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = keys.shape  # batch, history, dim
        q = query.unsqueeze(1).expand(B, L, D)  # (B, L, D)
        weights = self.unit(torch.cat([q, keys, q - keys, q * keys], dim=-1)).squeeze(-1)  # (B, L)
        weights = weights * mask
        if self.pooling == "mean":
            weights = weights / mask.sum(dim=1, keepdim=True).clamp(min=1).to(weights.dtype)
        return torch.einsum("bl,bld->bd", weights, keys)  # (B, D)


class MultiHeadTargetAttention(nn.Module):
    """The target queries the history with H heads; masked softmax; values projected back to ``dim``."""

    def __init__(self, query_dim: int, key_dim: int, dim: int, heads: int = 2):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must divide by heads {heads}")
        self.heads, self.head_dim = heads, dim // heads
        self.q = nn.Linear(query_dim, dim)
        self.k = nn.Linear(key_dim, dim)
        self.v = nn.Linear(key_dim, dim)
        self.out = nn.Linear(dim, dim)

    def project_keys(self, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The query-independent half: (U, L, key_dim) -> K, V (U, H, L, d). U = 1 broadcasts over B queries."""
        U, L, _ = keys.shape
        k = self.k(keys).view(U, L, self.heads, self.head_dim).transpose(1, 2)  # (U, H, L, d)
        v = self.v(keys).view(U, L, self.heads, self.head_dim).transpose(1, 2)  # (U, H, L, d)
        return k, v

    def attend(self, query: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B = query.shape[0]
        q = self.q(query).view(B, self.heads, 1, self.head_dim)  # (B, H, 1, d)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, 1, L)
        weights = masked_softmax(scores, mask[:, None, None, :])  # (B, H, 1, L)
        pooled = (weights @ v).reshape(B, self.heads * self.head_dim)  # (B, H*d)
        return self.out(pooled)  # (B, dim)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.attend(query, *self.project_keys(keys), mask)


class SENet(nn.Module):
    """Squeeze-and-excitation over F field embeddings (B, F, D): reweights each field."""

    def __init__(self, fields: int, reduction: int = 2):
        super().__init__()
        hidden = max(1, fields // reduction)
        self.excite = nn.Sequential(nn.Linear(fields, hidden), nn.ReLU(), nn.Linear(hidden, fields), nn.Sigmoid())

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        squeeze = fields.mean(dim=-1)  # (B, F)
        return fields * self.excite(squeeze).unsqueeze(-1)  # (B, F, D)


class CrossNetwork(nn.Module):
    """DCN-v2 cross layers: x_{l+1} = x_0 * (W x_l + b) + x_l."""

    def __init__(self, dim: int, layers: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


def similarity_buckets(sims: torch.Tensor, buckets: int) -> torch.Tensor:
    """Bucket index of s in [-1, 1]: floor((clip(s) + 1) / 2 * K), in [0, K-1]."""
    index = torch.floor((sims.clamp(-1.0, 1.0) + 1.0) / 2.0 * buckets).long()
    return index.clamp_(0, buckets - 1)


def similarity_tiers(sims: torch.Tensor, mask: torch.Tensor, tiers: int) -> torch.Tensor:
    """Histogram of s_j over N equal tiers of [-1, 1], counting unmasked positions only, normalised.

    (B, L) -> (B, N); a row with no known similarity is all zeros.
    """
    index = similarity_buckets(sims, tiers)  # (B, L)
    counts = torch.zeros(sims.shape[0], tiers, device=sims.device, dtype=sims.dtype)
    counts.scatter_add_(1, index, mask.to(sims.dtype))
    return counts / mask.sum(dim=1, keepdim=True).clamp(min=1).to(sims.dtype)
