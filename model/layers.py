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
        """(..., in_dim) -> (..., out_dim); leading dims are flattened for the layers and restored."""
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
        """Query (B, D), keys (B, L, D), mask (B, L) -> interest (B, D), the weighted sum (or mean) of the keys."""
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
        """Query (B, query_dim) over K, V (U, H, L, d) from ``project_keys`` with mask (B, L) -> (B, dim)."""
        B = query.shape[0]
        q = self.q(query).view(B, self.heads, 1, self.head_dim)  # (B, H, 1, d)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)  # (B, H, 1, L)
        weights = masked_softmax(scores, mask[:, None, None, :])  # (B, H, 1, L)
        pooled = (weights @ v).reshape(B, self.heads * self.head_dim)  # (B, H*d)
        return self.out(pooled)  # (B, dim)

    def forward(self, query: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Query (B, query_dim), keys (B, L, key_dim), mask (B, L) -> (B, dim)."""
        return self.attend(query, *self.project_keys(keys), mask)


class SENet(nn.Module):
    """Squeeze-and-excitation over F field embeddings (B, F, D): reweights each field."""

    def __init__(self, fields: int, reduction: int = 2):
        super().__init__()
        hidden = max(1, fields // reduction)
        self.excite = nn.Sequential(nn.Linear(fields, hidden), nn.ReLU(), nn.Linear(hidden, fields), nn.Sigmoid())

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        """(B, F, D) fields -> the same fields, each scaled by its excitation weight."""
        squeeze = fields.mean(dim=-1)  # (B, F)
        return fields * self.excite(squeeze).unsqueeze(-1)  # (B, F, D)


class CrossNetwork(nn.Module):
    """DCN-v2 cross layers: x_{l+1} = x_0 * (W x_l + b) + x_l."""

    def __init__(self, dim: int, layers: int = 2):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """(B, dim) -> (B, dim) after the cross layers."""
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


class DecoupledTargetAttention(nn.Module):
    """DMF's modality-enriched branch: target attention over the history ids whose keys and
    values carry the bucket b_j of s_j: q = W_q e_t, k_j = W_k e_j + E_K[b_j], v_j = W_v e_j + E_V[b_j].

    W_k e_j and W_v e_j do not depend on the target, so ``project_history`` runs once per user and
    ``forward`` only adds the bucket terms per candidate (decoupled target attention). With
    ``early_fusion`` s_j is concatenated to e_j before the projections instead (then they run per
    candidate)."""

    def __init__(self, dim: int, buckets: int, dropout: float = 0.0, early_fusion: bool = False):
        super().__init__()
        self.buckets, self.early_fusion = buckets, early_fusion
        self.q = nn.Linear(dim, dim)
        kv_in = dim + 1 if early_fusion else dim
        self.k = nn.Linear(kv_in, dim)
        self.v = nn.Linear(kv_in, dim)
        self.bucket_k = nn.Embedding(buckets + 1, dim)  # bucket K: similarity unknown
        self.bucket_v = nn.Embedding(buckets + 1, dim)
        nn.init.normal_(self.bucket_k.weight, std=0.05)
        nn.init.normal_(self.bucket_v.weight, std=0.05)
        self.mlp = MLP(dim, (dim,), dim, dropout)

    def project_history(self, hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(U, L, D) history ids -> keys, values (U, L, D): once per user (e_j itself for early fusion)."""
        if self.early_fusion:
            return hist, hist  # the projections need s_j: done per candidate
        return self.k(hist), self.v(hist)

    def forward(self, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, target: torch.Tensor,
                sims: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """Interest (C, D) of C targets (C, D) over U = 1 or U = C users' projected history."""
        C = target.shape[0]
        mask = mask.expand(C, -1)  # (C, L)
        bucket = torch.where(known, similarity_buckets(sims, self.buckets), self.buckets)  # (C, L)
        if self.early_fusion:
            fused = torch.cat([keys.expand(C, -1, -1), (sims * known).unsqueeze(-1)], dim=-1)  # (C, L, D+1)
            keys, values = self.k(fused), self.v(fused)  # (C, L, D): L projections per candidate
        # k_j = K_j + E_K[b_j], v_j = V_j + E_V[b_j], without materialising (C, L, D):
        # q.k_j = q.K_j + (q E_K^T)[b_j];  sum_j w_j v_j = w V + (sum_j w_j onehot(b_j)) E_V.
        q = self.q(target)  # (C, D)
        shared = keys.shape[0] == 1 and C > 1  # one user's K, V for all C candidates
        qk = q @ keys[0].T if shared else torch.einsum("cd,cld->cl", q, keys)  # (C, L)
        qe = (q @ self.bucket_k.weight.T).gather(1, bucket)  # (C, L)
        weights = masked_softmax((qk + qe) / math.sqrt(q.shape[-1]), mask)  # (C, L)
        wv = weights @ values[0] if shared else torch.einsum("cl,cld->cd", weights, values)  # (C, D)
        per_bucket = torch.zeros(C, self.buckets + 1, dtype=weights.dtype, device=weights.device)
        we = per_bucket.scatter_add_(1, bucket, weights) @ self.bucket_v.weight  # (C, D)
        return self.mlp(wv + we)  # (C, D)


class ModalityCentricInterest(nn.Module):
    """DMF's modality-centric branch: the similarity-tier histogram of s_j, plus optionally
    multi-head target attention of the projected target content over the projected history
    content (its keys and values projected once per user by ``project_history``)."""

    def __init__(self, dim: int, tiers: int, heads: int, dropout: float = 0.0, attention: bool = True):
        super().__init__()
        self.tiers = tiers
        self.attention = MultiHeadTargetAttention(dim, dim, dim, heads) if attention else None
        self.mlp = MLP(tiers + (dim if attention else 0), (dim,), dim, dropout)

    def project_history(self, hist_mm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(U, L, D) projected history content -> the attention's K, V (U, H, L, d) x 2, or None."""
        return self.attention.project_keys(hist_mm) if self.attention is not None else None

    def forward(self, target_mm: torch.Tensor, kv, found: torch.Tensor, sims: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """Interest (C, D) of C targets' projected content (C, D); ``found`` (U, L) marks history
        items with content."""
        C = target_mm.shape[0]
        parts = [similarity_tiers(sims, known, self.tiers)]  # (C, N)
        if self.attention is not None:
            k, v = kv  # (U, H, L, d): projected once per user
            parts.append(self.attention.attend(target_mm, k, v, found.expand(C, -1)))  # (C, D)
        return self.mlp(torch.cat(parts, dim=-1))  # (C, D)
