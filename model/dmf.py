"""DMF, Decoupled Multimodal Fusion (arXiv 2510.11066): the target-aware similarity s_j = cos(m_t, m_j)
enriches ID target attention (bucketed) and feeds a modality-centric branch (its histogram); the two
interests are mixed. The branches are the layer library's ``DecoupledTargetAttention`` and
``ModalityCentricInterest``."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mmfs.model.config import DENSE_DIM, DataSpec, ModelConfig, dense_features
from mmfs.model.layers import MLP, DecoupledTargetAttention, IdEmbedding, ModalityCentricInterest


@dataclass
class UserState:
    """DMF's target-independent work for U users (U = 1 when scoring one user's C candidates)."""

    keys: torch.Tensor  # (U, L, D) W_k e_j, or e_j itself for early fusion
    values: torch.Tensor  # (U, L, D) W_v e_j, or e_j itself for early fusion
    hist_mm: torch.Tensor  # (U, L, D) projected m_j
    hist_mm_found: torch.Tensor  # (U, L) bool
    mask: torch.Tensor  # (U, L) bool
    centric_kv: tuple[torch.Tensor, torch.Tensor] | None = None  # (U, H, L, d) x 2: the centric attention's K, V


SIMILARITIES = ("fused", "text", "image", "none")


@dataclass(frozen=True)
class DMFConfig(ModelConfig):
    """DMF's settings beside the shared ones."""

    name: str = "dmf"
    buckets: int = 35  # K: buckets of s_j in the enriched branch
    tiers: int = 10  # N: similarity tiers of the modality-centric histogram
    heads: int = 2  # the centric branch's target attention over the projected m_j
    alpha: float = -1.0  # fixed mix weight in [0, 1]; negative = learned
    enriched_branch: bool = True
    centric_branch: bool = True
    centric_attention: bool = True
    early_fusion: bool = False  # variant: s_j concatenated to e_j before the K/V projections
    target_interest_product: bool = True  # the DNN also sees e_t * interest, as DIN's does
    # Which s_j the model reads: "fused" (cos of mm_emb, the served feature), or, for ablations
    # only (not servable), "text" / "image" (cos of mm_emb's text or image part) or "none" (no s_j).
    similarity: str = "fused"

    def __post_init__(self):
        if self.similarity not in SIMILARITIES:
            raise ValueError(f"model.similarity must be one of {SIMILARITIES}, got {self.similarity!r}")


class DMF(nn.Module):
    """Decoupled Multimodal Fusion (arXiv 2510.11066).

    Modality-enriched branch (``DecoupledTargetAttention``): q = W_q e_t, k_j = W_k e_j + E_K[b_j],
    v_j = W_v e_j + E_V[b_j] with b_j the bucket of s_j. W_k e_j and W_v e_j do not depend on the
    target, so ``encode_user`` computes them once per user and ``score_candidates`` only adds the
    bucket embeddings. Modality-centric branch (``ModalityCentricInterest``): the similarity-tier
    histogram of s_j (plus, optionally, target attention over the projected m_j). The interests
    are mixed by alpha.
    """

    NAME = "dmf"
    Config = DMFConfig
    SERVICE = "ctr_dmf_v1"  # a backfilled encoder's checkpoint names ctr_dmf_v2 in its manifest

    @staticmethod
    def vectors(features: list[str]) -> tuple[str, ...]:
        """The fused multimodal vector ``mm_emb`` (m_t, m_j of s_j = cos(m_t, m_j))."""
        return ("mm_emb",)

    def __init__(self, spec: DataSpec, config: DMFConfig):
        super().__init__()
        if not (config.enriched_branch or config.centric_branch):
            raise ValueError("DMF needs at least one of enriched_branch, centric_branch")
        D = config.id_dim
        self.config = config
        self.items = IdEmbedding(spec.n_items, D)
        self.mm = nn.Linear(spec.mm_dim, D)
        self.enriched = DecoupledTargetAttention(D, config.buckets, config.dropout, config.early_fusion)
        self.centric = ModalityCentricInterest(D, config.tiers, config.heads, config.dropout, config.centric_attention)
        self.alpha_logit = nn.Parameter(torch.zeros(())) if config.alpha < 0 else None
        self.dnn = MLP((4 if config.target_interest_product else 3) * D + DENSE_DIM, config.mlp, 1, config.dropout, config.batch_norm)

    @property
    def alpha(self) -> torch.Tensor:
        """Weight of the enriched branch's interest (the centric one gets 1 - alpha): 1 or 0 when only one
        branch is on, sigmoid of the learned logit, or the fixed ``config.alpha``."""
        if not self.config.centric_branch:
            return torch.ones(())
        if not self.config.enriched_branch:
            return torch.zeros(())
        return torch.sigmoid(self.alpha_logit) if self.alpha_logit is not None else torch.tensor(self.config.alpha)

    def encode_user(self, batch: dict) -> UserState:
        """The target-independent work, once per user: history ids and content projected."""
        hist = self.items(batch["hist_idx"])  # (U, L, D)
        mask = batch["hist_mask"]
        keys, values = self.enriched.project_history(hist)  # (U, L, D)
        hist_mm = self.mm(batch["hist_mm_emb"])  # (U, L, D)
        return UserState(keys, values, hist_mm, batch["hist_mm_emb_found"] & mask, mask, self.centric.project_history(hist_mm))

    def score_candidates(self, user: UserState, candidates: dict) -> torch.Tensor:
        """Logits (C,) for C candidates against U = 1 or U = C user states."""
        target = self.items(candidates["item_idx"])  # (C, D)
        target_mm = self.mm(candidates["mm_emb"])  # (C, D)
        sims = candidates["hist_sim"]  # (C, L)
        known = candidates["hist_sim_mask"] & user.mask  # (C, L)
        if self.config.similarity == "none":  # ablation: no s_j at all
            sims, known = torch.zeros_like(sims), torch.zeros_like(known)
        interests = []
        if self.config.enriched_branch:
            interests.append(self.enriched(user.keys, user.values, user.mask, target, sims, known))  # (C, D)
        if self.config.centric_branch:
            interests.append(self.centric(target_mm, user.centric_kv, user.hist_mm_found, sims, known))  # (C, D)
        alpha = self.alpha.to(target.dtype)
        interest = alpha * interests[0] + (1 - alpha) * interests[1] if len(interests) == 2 else interests[0]  # (C, D)
        parts = [target, target_mm, interest] + ([target * interest] if self.config.target_interest_product else [])
        x = torch.cat(parts + [dense_features(candidates, self.config.user_stats)], dim=-1)  # (C, 4D + 10)
        return self.dnn(x).squeeze(-1)

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits (B,): each row scored against its own user state."""
        return self.score_candidates(self.encode_user(batch), batch)
