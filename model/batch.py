"""The model's input tensors, named and built once: the training loader (``mmfs.model.data``) fills
them from training-set rows, the online scorer (``mmfs.serving.scorer``) from online rows, with the
same functions, so a model sees the same tensors offline and online.

Keys (B rows, L history positions, D vector dim):

- ``item_id`` (B,), ``hist_item_ids`` / ``hist_mask`` (B, L); ``item_idx`` / ``hist_idx``, their
  vocabulary indices (``with_vocab_indices``);
- per vector ``v`` (``vector_fields``): ``v`` (B, D), ``v_found`` (B,), ``hist_v`` (B, L, D),
  ``hist_v_found`` (B, L);
- ``hist_sim`` / ``hist_sim_mask`` (B, L): s_j = cos(m_t, m_j) where known (``similarity_fields``);
- ``dense`` / ``dense_mask`` and ``user_dense`` / ``user_dense_mask``: the item's and the user's
  running stats (``stats_fields``).

``perturb_for_training`` is the train-time noise on these tensors (history dropout, OOV swaps).
"""
from __future__ import annotations

import numpy as np
import torch

from mmfs.model.layers import OOV

ITEM_STATS_COLUMNS = ("impressions", "clicks", "ctr")
USER_STATS_COLUMNS = ("user_impressions", "user_clicks", "user_ctr")
STATS_PREFIX = {ITEM_STATS_COLUMNS: "", USER_STATS_COLUMNS: "user_"}


def dense_block(impressions: np.ndarray, clicks: np.ndarray, ctr: np.ndarray, known: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Running stats (an item's or a user's) -> a dense block: (B, 4) log1p(impressions),
    log1p(clicks), ctr and logit(ctr) (zeros where unknown) and the (B,) known mask. The smoothed
    ctr lies in (0, 1), so its logit is finite."""
    known = np.asarray(known, dtype=bool)
    rate = np.clip(np.asarray(ctr, dtype=np.float32), 1e-6, 1 - 1e-6)
    columns = [np.log1p(np.asarray(impressions, dtype=np.float32)), np.log1p(np.asarray(clicks, dtype=np.float32)),
               np.asarray(ctr, dtype=np.float32), np.log(rate / (1 - rate))]
    return np.where(known[:, None], np.stack(columns, axis=1), np.float32(0)).astype(np.float32), known  # (B, 4), (B,)


def stats_fields(columns: tuple[str, str, str], impressions, clicks, ctr, known) -> dict[str, np.ndarray]:
    """``dense`` / ``dense_mask`` (item stats) or ``user_dense`` / ``user_dense_mask`` (user stats)."""
    prefix = STATS_PREFIX[columns]
    dense, mask = dense_block(impressions, clicks, ctr, known)
    return {f"{prefix}dense": dense, f"{prefix}dense_mask": mask}


def vector_fields(vector: str, target: np.ndarray, found: np.ndarray, hist: np.ndarray, hist_found: np.ndarray) -> dict[str, np.ndarray]:
    """One vector's four tensors: targets (B, D) and (B,), history (B, L, D) and (B, L)."""
    return {vector: target, f"{vector}_found": found, f"hist_{vector}": hist, f"hist_{vector}_found": hist_found}


def similarity_fields(sims: np.ndarray, known: np.ndarray) -> dict[str, np.ndarray]:
    """s_j (B, L), zero where unknown, and where it is known."""
    return {"hist_sim": np.where(known, np.nan_to_num(sims), np.float32(0)).astype(np.float32), "hist_sim_mask": known}


def to_tensors(arrays: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """numpy arrays -> tensors sharing their memory (contiguous, writable)."""
    return {k: torch.from_numpy(np.require(v, requirements=["C", "W"])) for k, v in arrays.items()}


def with_vocab_indices(batch: dict[str, torch.Tensor], vocab) -> dict[str, torch.Tensor]:
    """Adds ``item_idx`` and ``hist_idx``: the ids' rows in the model's vocabulary (0 padding, 1 unseen)."""
    batch = dict(batch)
    batch["item_idx"] = vocab.index(batch["item_id"])
    batch["hist_idx"] = vocab.index(batch["hist_item_ids"], batch["hist_mask"])
    return batch


def history_masks(batch: dict) -> list[str]:
    """The batch's per-position history masks besides ``hist_mask`` (each implies it)."""
    return [k for k in batch if k.startswith("hist_") and (k.endswith("_found") or k == "hist_sim_mask")]


def perturb_for_training(batch: dict, hist_dropout: float, oov_dropout: float, generator: torch.Generator) -> dict:
    """Train-time noise that makes a model rely less on one user's exact history and one item's id:
    drop history positions (masked out everywhere, as padding) and swap ids for the OOV row, which
    is then trained like the ids the model will meet for the first time at test time."""
    if not (hist_dropout or oov_dropout):
        return batch
    batch = dict(batch)
    mask = batch["hist_mask"]
    if hist_dropout:
        keep = torch.rand(mask.shape, generator=generator) >= hist_dropout  # (B, L)
        mask = mask & keep.to(mask.device)
        batch["hist_mask"] = mask
        batch["hist_idx"] = batch["hist_idx"] * mask
        for key in history_masks(batch):
            batch[key] = batch[key] & mask
    if oov_dropout:
        swap = (torch.rand(batch["item_idx"].shape, generator=generator) < oov_dropout).to(mask.device)
        batch["item_idx"] = torch.where(swap & (batch["item_idx"] > OOV), OOV, batch["item_idx"])
        swap = (torch.rand(mask.shape, generator=generator) < oov_dropout).to(mask.device) & mask
        batch["hist_idx"] = torch.where(swap & (batch["hist_idx"] > OOV), OOV, batch["hist_idx"])
    return batch
