"""CTR models over the Feast training-set batches (``model.data``): DIN, MMCTR DIN, Diff-MSIN, DMF.

Notation: B batch, C candidates, L history length, D id-embedding dim, M multimodal dim,
K similarity buckets, N similarity tiers. Every model maps a batch to logits (B,); the loss
lives in ``model.train``. Batches carry ``item_idx`` (B,) and ``hist_idx`` (B, L), vocabulary
indices added by ``model.vocab`` (0 = padding, 1 = unseen id), plus the loader's tensors.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from model.layers import (MLP, CrossNetwork, DinAttention, IdEmbedding, MultiHeadTargetAttention, SENet, masked_softmax,
                          similarity_buckets, similarity_tiers)

DENSE_DIM = 10  # item then user stats: log1p(impressions), log1p(clicks), ctr, logit(ctr), stats-known flag


@dataclass(frozen=True)
class DataSpec:
    """What the data gives the model: vocabulary size and vector dims per modality."""

    n_items: int
    mm_dim: int = 0
    modal_dims: tuple[tuple[str, int], ...] = ()  # Diff-MSIN: (vector name, dim) per modality


@dataclass(frozen=True)
class ModelConfig:
    name: str = "dmf"  # dmf | din | mmctr_din | diffmsin
    id_dim: int = 32
    mlp: tuple[int, ...] = (200, 80)
    dropout: float = 0.1
    batch_norm: bool = False
    user_stats: bool = True  # false: the user_stats block is zeroed (an ablation; docs/models.md)
    # DIN
    din_pooling: str = "mean"  # mean | sum (the DIN paper's; grows with history length)
    # DMF
    buckets: int = 35
    tiers: int = 10
    alpha: float = -1.0  # fixed mix weight in [0, 1]; negative = learned
    enriched_branch: bool = True
    centric_branch: bool = True
    centric_attention: bool = True
    early_fusion: bool = False  # DMF variant: s_j concatenated to e_j before the K/V projections
    target_interest_product: bool = True  # DMF: the DNN also sees e_t * interest, as DIN's does
    # MMCTR DIN
    heads: int = 2
    cross_layers: int = 0
    # Diff-MSIN
    diffusion_steps: int = 12
    denoise_weight: float = 0.1
    decouple_weight: float = 0.05


def dense_features(batch: dict, user_stats: bool = True) -> torch.Tensor:
    """The item's and the user's running stats with their known flags: (B, 10); the user half is
    zeros when ``user_stats`` is false."""
    user = torch.cat([batch["user_dense"], batch["user_dense_mask"].to(batch["dense"].dtype).unsqueeze(-1)], dim=-1)  # (B, 5)
    return torch.cat([batch["dense"], batch["dense_mask"].to(batch["dense"].dtype).unsqueeze(-1),
                      user if user_stats else torch.zeros_like(user)], dim=-1)


# -- DIN ------------------------------------------------------------------------------------------

class DIN(nn.Module):
    """Deep Interest Network: activation-unit attention of the target id over the history ids."""

    def __init__(self, spec: DataSpec, config: ModelConfig):
        super().__init__()
        D = config.id_dim
        self.config = config
        self.items = IdEmbedding(spec.n_items, D)
        self.attention = DinAttention(D, pooling=config.din_pooling)
        self.dnn = MLP(3 * D + DENSE_DIM, config.mlp, 1, config.dropout, config.batch_norm)

    def forward(self, batch: dict) -> torch.Tensor:
        target = self.items(batch["item_idx"])  # (B, D)
        hist = self.items(batch["hist_idx"])  # (B, L, D)
        interest = self.attention(target, hist, batch["hist_mask"])  # (B, D)
        return self.dnn(torch.cat([target, interest, target * interest, dense_features(batch, self.config.user_stats)], -1)).squeeze(-1)


# -- MMCTR DIN ------------------------------------------------------------------------------------

class MMCTRDIN(nn.Module):
    """MMCTR challenge DIN (arXiv 2504.18961): items as [id emb ; projected PCA(text)+PCA(image)],
    multi-head target attention, SENet over the fields, optional cross network, DNN."""

    def __init__(self, spec: DataSpec, config: ModelConfig):
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
        return torch.cat([self.items(idx), self.mm(mm)], dim=-1)  # (..., 2D)

    def forward(self, batch: dict) -> torch.Tensor:
        target = self.item_vectors(batch["item_idx"], batch["mm_emb"])  # (B, 2D)
        hist = self.item_vectors(batch["hist_idx"], batch["hist_mm_emb"])  # (B, L, 2D)
        interest = self.attention(target, hist, batch["hist_mask"])  # (B, 2D)
        fields = torch.stack([target, interest, self.dense(dense_features(batch, self.config.user_stats))], dim=1)  # (B, 3, 2D)
        x = self.senet(fields).flatten(1)  # (B, 6D)
        return self.dnn(self.cross(x)).squeeze(-1)


# -- DMF ------------------------------------------------------------------------------------------

@dataclass
class UserState:
    """DMF's target-independent work for U users (U = 1 when scoring one user's C candidates)."""

    keys: torch.Tensor  # (U, L, D) W_k e_j, or e_j itself for early fusion
    values: torch.Tensor  # (U, L, D) W_v e_j, or e_j itself for early fusion
    hist_mm: torch.Tensor  # (U, L, D) projected m_j
    hist_mm_found: torch.Tensor  # (U, L) bool
    mask: torch.Tensor  # (U, L) bool
    centric_kv: tuple[torch.Tensor, torch.Tensor] | None = None  # (U, H, L, d) x 2: the centric attention's K, V


class DMF(nn.Module):
    """Decoupled Multimodal Fusion (arXiv 2510.11066).

    Modality-enriched branch (Decoupled Target Attention): q = W_q e_t, k_j = W_k e_j + E_K[b_j],
    v_j = W_v e_j + E_V[b_j] with b_j the bucket of s_j. W_k e_j and W_v e_j do not depend on the
    target, so ``encode_user`` computes them once per user and ``score_candidates`` only adds the
    bucket embeddings. Modality-centric branch: the similarity-tier histogram of s_j (plus,
    optionally, target attention over the projected m_j). The interests are mixed by alpha.
    """

    def __init__(self, spec: DataSpec, config: ModelConfig):
        super().__init__()
        if not (config.enriched_branch or config.centric_branch):
            raise ValueError("DMF needs at least one of enriched_branch, centric_branch")
        D, K = config.id_dim, config.buckets
        self.config = config
        self.items = IdEmbedding(spec.n_items, D)
        self.mm = nn.Linear(spec.mm_dim, D)
        self.q = nn.Linear(D, D)
        kv_in = D + 1 if config.early_fusion else D
        self.k = nn.Linear(kv_in, D)
        self.v = nn.Linear(kv_in, D)
        self.bucket_k = nn.Embedding(K + 1, D)  # bucket K: similarity unknown
        self.bucket_v = nn.Embedding(K + 1, D)
        nn.init.normal_(self.bucket_k.weight, std=0.05)
        nn.init.normal_(self.bucket_v.weight, std=0.05)
        self.enriched_mlp = MLP(D, (D,), D, config.dropout)
        centric_in = config.tiers + (D if config.centric_attention else 0)
        self.centric_attention = MultiHeadTargetAttention(D, D, D, config.heads) if config.centric_attention else None
        self.centric_mlp = MLP(centric_in, (D,), D, config.dropout)
        self.alpha_logit = nn.Parameter(torch.zeros(())) if config.alpha < 0 else None
        self.dnn = MLP((4 if config.target_interest_product else 3) * D + DENSE_DIM, config.mlp, 1, config.dropout, config.batch_norm)

    @property
    def alpha(self) -> torch.Tensor:
        if not self.config.centric_branch:
            return torch.ones(())
        if not self.config.enriched_branch:
            return torch.zeros(())
        return torch.sigmoid(self.alpha_logit) if self.alpha_logit is not None else torch.tensor(self.config.alpha)

    def encode_user(self, batch: dict) -> UserState:
        hist = self.items(batch["hist_idx"])  # (U, L, D)
        mask = batch["hist_mask"]
        if self.config.early_fusion:
            keys, values = hist, hist  # projections need s_j: done per candidate
        else:
            keys, values = self.k(hist), self.v(hist)  # (U, L, D): once per user
        hist_mm = self.mm(batch["hist_mm_emb"])  # (U, L, D)
        centric_kv = self.centric_attention.project_keys(hist_mm) if self.centric_attention is not None else None
        return UserState(keys, values, hist_mm, batch["hist_mm_emb_found"] & mask, mask, centric_kv)

    def score_candidates(self, user: UserState, candidates: dict) -> torch.Tensor:
        """Logits (C,) for C candidates against U = 1 or U = C user states."""
        target = self.items(candidates["item_idx"])  # (C, D)
        target_mm = self.mm(candidates["mm_emb"])  # (C, D)
        sims = candidates["hist_sim"]  # (C, L)
        known = candidates["hist_sim_mask"] & user.mask  # (C, L)
        interests = []
        if self.config.enriched_branch:
            interests.append(self.enriched_interest(user, target, sims, known))  # (C, D)
        if self.config.centric_branch:
            interests.append(self.centric_interest(user, target_mm, sims, known))  # (C, D)
        alpha = self.alpha.to(target.dtype)
        interest = alpha * interests[0] + (1 - alpha) * interests[1] if len(interests) == 2 else interests[0]  # (C, D)
        parts = [target, target_mm, interest] + ([target * interest] if self.config.target_interest_product else [])
        x = torch.cat(parts + [dense_features(candidates, self.config.user_stats)], dim=-1)  # (C, 4D + 10)
        return self.dnn(x).squeeze(-1)

    def enriched_interest(self, user: UserState, target: torch.Tensor, sims: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """The modality-enriched branch (decoupled target attention): (C, D)."""
        C = target.shape[0]
        mask = user.mask.expand(C, -1)  # (C, L)
        bucket = torch.where(known, similarity_buckets(sims, self.config.buckets), self.config.buckets)  # (C, L)
        if self.config.early_fusion:
            fused = torch.cat([user.keys.expand(C, -1, -1), (sims * known).unsqueeze(-1)], dim=-1)  # (C, L, D+1)
            keys, values = self.k(fused), self.v(fused)  # (C, L, D): L projections per candidate
        else:
            keys, values = user.keys, user.values  # (U, L, D), broadcast over C
        # k_j = K_j + E_K[b_j], v_j = V_j + E_V[b_j], without materialising (C, L, D):
        # q.k_j = q.K_j + (q E_K^T)[b_j];  sum_j w_j v_j = w V + (sum_j w_j onehot(b_j)) E_V.
        q = self.q(target)  # (C, D)
        shared = keys.shape[0] == 1 and C > 1  # one user's K, V for all C candidates
        qk = q @ keys[0].T if shared else torch.einsum("cd,cld->cl", q, keys)  # (C, L)
        qe = (q @ self.bucket_k.weight.T).gather(1, bucket)  # (C, L)
        weights = masked_softmax((qk + qe) / math.sqrt(q.shape[-1]), mask)  # (C, L)
        wv = weights @ values[0] if shared else torch.einsum("cl,cld->cd", weights, values)  # (C, D)
        per_bucket = torch.zeros(C, self.config.buckets + 1, dtype=weights.dtype, device=weights.device)
        we = per_bucket.scatter_add_(1, bucket, weights) @ self.bucket_v.weight  # (C, D)
        return self.enriched_mlp(wv + we)  # (C, D)

    def centric_interest(self, user: UserState, target_mm: torch.Tensor, sims: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
        """The modality-centric branch: the similarity-tier histogram, plus optionally target
        attention over the projected history content: (C, D)."""
        C = target_mm.shape[0]
        parts = [similarity_tiers(sims, known, self.config.tiers)]  # (C, N)
        if self.centric_attention is not None:
            k, v = user.centric_kv  # (U, H, L, d): projected once per user
            parts.append(self.centric_attention.attend(target_mm, k, v, user.hist_mm_found.expand(C, -1)))  # (C, D)
        return self.centric_mlp(torch.cat(parts, dim=-1))  # (C, D)

    def forward(self, batch: dict) -> torch.Tensor:
        return self.score_candidates(self.encode_user(batch), batch)


# -- Diff-MSIN --------------------------------------------------------------------------------------

def cosine_alpha_bar(steps: int) -> torch.Tensor:
    """Cosine noise schedule (Nichol & Dhariwal): alpha_bar_t for t = 0..T."""
    s = 0.008
    t = torch.linspace(0, steps, steps + 1) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (f / f[0]).clamp(1e-5, 1.0)


class DiffMSIN(nn.Module):
    """Diff-MSIN (arXiv 2508.21460): multi-modal feature experts (MFE), a diffusion module that
    synthesises a cross-modal vector (SRC, cosine schedule, reverse step conditioned by attention
    over the modality representations), feature dynamic adaptive fusion (FDAF), and a
    knowledge-decoupling loss on the cosine between modality representations."""

    def __init__(self, spec: DataSpec, config: ModelConfig):
        super().__init__()
        if not spec.modal_dims:
            raise ValueError("Diff-MSIN needs at least one modality vector")
        D = config.id_dim
        self.config = config
        self.names = [name for name, _ in spec.modal_dims]
        self.items = IdEmbedding(spec.n_items, D)
        total = sum(dim for _, dim in spec.modal_dims)
        self.experts = nn.ModuleList(MLP(dim, (D,), D) for _, dim in spec.modal_dims)  # MFE: one per modality
        self.shared = MLP(total, (D,), D)  # MFE: shared expert
        self.attention = nn.ModuleList(MultiHeadTargetAttention(D, D, D, config.heads) for _ in range(len(self.names) + 1))
        self.register_buffer("alpha_bar", cosine_alpha_bar(config.diffusion_steps), persistent=False)
        self.time = nn.Embedding(config.diffusion_steps + 1, D)
        self.cond = nn.MultiheadAttention(D, 1, batch_first=True)  # x_t attends over the modality reps
        self.denoiser = MLP(3 * D, (2 * D,), D)
        self.fusion_gate = nn.Linear((len(self.names) + 2) * D, len(self.names) + 2)  # FDAF
        self.dnn = MLP(2 * D + DENSE_DIM, config.mlp, 1, config.dropout, config.batch_norm)

    def modality_reps(self, vectors: list[torch.Tensor]) -> list[torch.Tensor]:
        shared = self.shared(torch.cat(vectors, dim=-1))
        return [expert(v) + shared for expert, v in zip(self.experts, vectors)]

    def history_reps(self, batch: dict) -> list[torch.Tensor]:
        """``modality_reps`` of every history position, R x (B, L, D). The experts are per-item
        functions, so when the loader names each position's vector versions
        (``hist_<vec>_version``) they run once per distinct version in the batch and are gathered
        back: the same values, for a few thousand items instead of B * L positions."""
        vectors = [batch[f"hist_{n}"] for n in self.names]  # R x (B, L, M_r)
        keys = [batch.get(f"hist_{n}_version") for n in self.names]
        if any(k is None for k in keys):
            return self.modality_reps(vectors)
        B, L = keys[0].shape  # batch, history
        key = torch.zeros(B * L, dtype=torch.long, device=keys[0].device)  # one integer per version tuple
        for k in keys:  # mixed radix: versions run from -1 (none) to max
            k = k.reshape(B * L) + 1
            key = key * (int(k.max()) + 1) + k
        unique, inverse = torch.unique(key, return_inverse=True)  # (U,), (B*L,)
        positions = torch.arange(B * L, device=key.device)
        first = torch.full((unique.shape[0],), B * L, device=key.device).scatter_reduce_(0, inverse, positions, reduce="amin")  # (U,)
        reps = self.modality_reps([v.reshape(B * L, -1)[first] for v in vectors])  # R x (U, D)
        return [r[inverse].reshape(B, L, -1) for r in reps]

    def condition_keys(self, reps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-modal attention's K, V over the modality reps (B, R, D): they do not change
        along the reverse process, so they are projected once, not once per step."""
        D = reps.shape[-1]
        w, b = self.cond.in_proj_weight, self.cond.in_proj_bias  # (3D, D), (3D,): q, k, v stacked
        return F.linear(reps, w[D:2 * D], b[D:2 * D]), F.linear(reps, w[2 * D:], b[2 * D:])  # (B, R, D) x 2

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """eps(x_t, t | reps): x_t attends over the modality reps (one head, nn.MultiheadAttention's
        weights), then the denoiser. ``kv`` from ``condition_keys``."""
        k, v = kv
        D = x_t.shape[-1]
        q = F.linear(x_t, self.cond.in_proj_weight[:D], self.cond.in_proj_bias[:D])  # (B, D)
        weights = torch.softmax(torch.einsum("bd,brd->br", q, k) / math.sqrt(D), dim=-1)  # (B, R)
        cond = self.cond.out_proj(torch.einsum("br,brd->bd", weights, v))  # (B, D)
        return self.denoiser(torch.cat([x_t, self.time(t), cond], dim=-1))  # (B, D)

    def synthesise(self, reps: torch.Tensor) -> torch.Tensor:
        """Deterministic (DDIM, eta = 0) reverse process from x_T = 0, conditioned on ``reps`` (B, R, D)."""
        kv = self.condition_keys(reps)
        x = torch.zeros_like(reps[:, 0])  # (B, D)
        for step in range(self.config.diffusion_steps, 0, -1):
            t = torch.full((x.shape[0],), step, device=x.device, dtype=torch.long)
            eps = self.predict_noise(x, t, kv)
            a_t, a_prev = self.alpha_bar[step], self.alpha_bar[step - 1]
            x0 = (x - torch.sqrt(1 - a_t) * eps) / torch.sqrt(a_t)
            x = torch.sqrt(a_prev) * x0 + torch.sqrt(1 - a_prev) * eps
        return x

    def forward_with_aux(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        target_id = self.items(batch["item_idx"])  # (B, D)
        hist_id = self.items(batch["hist_idx"])  # (B, L, D)
        mask = batch["hist_mask"]
        target = self.modality_reps([batch[n] for n in self.names])  # R x (B, D)
        hist = self.history_reps(batch)  # R x (B, L, D)
        interests = [self.attention[0](target_id, hist_id, mask)]
        for i, name in enumerate(self.names):
            interests.append(self.attention[i + 1](target[i], hist[i], mask & batch[f"hist_{name}_found"]))  # (B, D)
        reps = torch.stack(target, dim=1)  # (B, R, D)
        synthetic = self.synthesise(reps)  # (B, D)
        parts = interests + [synthetic]  # (R + 2) x (B, D)
        gate = torch.softmax(self.fusion_gate(torch.cat(parts, dim=-1)), dim=-1)  # (B, R + 2)
        fused = torch.einsum("bp,bpd->bd", gate, torch.stack(parts, dim=1))  # (B, D)
        logits = self.dnn(torch.cat([target_id, fused, dense_features(batch, self.config.user_stats)], dim=-1)).squeeze(-1)
        aux = {}
        if self.training:
            x0 = reps.mean(dim=1).detach()  # the cross-modal vector the diffusion learns to synthesise
            t = torch.randint(1, self.config.diffusion_steps + 1, (x0.shape[0],), device=x0.device)
            noise = torch.randn_like(x0)
            a = self.alpha_bar[t].unsqueeze(-1)
            x_t = torch.sqrt(a) * x0 + torch.sqrt(1 - a) * noise
            aux["denoise"] = self.config.denoise_weight * F.mse_loss(self.predict_noise(x_t, t, self.condition_keys(reps)), noise)
            if len(target) > 1:
                pairs = [(a_, b_) for i, a_ in enumerate(target) for b_ in target[i + 1:]]
                aux["decouple"] = self.config.decouple_weight * torch.stack(
                    [F.cosine_similarity(a_, b_, dim=-1).abs().mean() for a_, b_ in pairs]).mean()
            else:  # one modality: decouple it from the id embedding
                aux["decouple"] = self.config.decouple_weight * F.cosine_similarity(target[0], target_id, dim=-1).abs().mean()
        return logits, aux

    def forward(self, batch: dict) -> torch.Tensor:
        logits, self.aux_losses = self.forward_with_aux(batch)  # read by the trainer (DDP calls forward)
        return logits


MODELS = {"din": DIN, "mmctr_din": MMCTRDIN, "dmf": DMF, "diffmsin": DiffMSIN}
SERVICES = {"din": "ctr_din_v1", "mmctr_din": "ctr_mmctr_din_v1", "dmf": "ctr_dmf_v1", "diffmsin": "ctr_diffmsin_v1"}


def build_model(spec: DataSpec, config: ModelConfig) -> nn.Module:
    if config.name not in MODELS:
        raise ValueError(f"unknown model {config.name!r}; one of {sorted(MODELS)}")
    return MODELS[config.name](spec, config)
