"""Diff-MSIN (arXiv 2508.21460): modality experts, a diffusion-synthesised cross-modal vector and
adaptive fusion, with a knowledge-decoupling loss."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from mmfs.model.config import DENSE_DIM, DataSpec, ModelConfig, dense_features
from mmfs.model.layers import MLP, IdEmbedding, MultiHeadTargetAttention


def cosine_alpha_bar(steps: int) -> torch.Tensor:
    """Cosine noise schedule (Nichol & Dhariwal): alpha_bar_t for t = 0..T."""
    s = 0.008
    t = torch.linspace(0, steps, steps + 1) / steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    return (f / f[0]).clamp(1e-5, 1.0)


@dataclass(frozen=True)
class DiffMSINConfig(ModelConfig):
    """Diff-MSIN's settings beside the shared ones."""

    name: str = "diffmsin"
    heads: int = 2  # target attention over each modality and the synthesised vector
    diffusion_steps: int = 12
    denoise_weight: float = 0.1
    decouple_weight: float = 0.05


class DiffMSIN(nn.Module):
    """Diff-MSIN (arXiv 2508.21460): multi-modal feature experts (MFE), a diffusion module that
    synthesises a cross-modal vector (SRC, cosine schedule, reverse step conditioned by attention
    over the modality representations), feature dynamic adaptive fusion (FDAF), and a
    knowledge-decoupling loss on the cosine between modality representations."""

    NAME = "diffmsin"
    Config = DiffMSINConfig
    SERVICE = "ctr_diffmsin_v1"

    @staticmethod
    def vectors(features: list[str]) -> tuple[str, ...]:
        """One vector per modality its service holds: ``text_emb`` and/or ``image_emb``."""
        return tuple(v for v in ("text_emb", "image_emb") if any(f.endswith(f":{v}") for f in features))

    def __init__(self, spec: DataSpec, config: DiffMSINConfig):
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
        """R modality vectors (..., M_r) -> R representations (..., D): each modality's expert plus the shared expert."""
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
        """Logits (B,) and, in training, the weighted ``denoise`` and ``decouple`` auxiliary losses."""
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
        """Logits (B,); the auxiliary losses are left in ``self.aux_losses`` for the trainer."""
        logits, self.aux_losses = self.forward_with_aux(batch)  # read by the trainer (DDP calls forward)
        return logits
