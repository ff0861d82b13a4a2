"""Model tests on seeded tiny shapes: outputs, masks, DMF's decoupled identity, overfitting one batch."""
import dataclasses

import pytest
import torch
from torch.nn import functional as F

from mmfs.model.config import DataSpec
from mmfs.model.models import model_config

from mmfs.model.models import build_model
from mmfs.model.train import forward, loss_fn

B, L, M, N_ITEMS = 6, 5, 8, 20
SPEC = DataSpec(n_items=N_ITEMS, mm_dim=M, modal_dims=(("text_emb", 6), ("image_emb", 4)))
CONFIGS = {
    "din": model_config("din", id_dim=4, mlp=(8,)),
    "mmctr_din": model_config("mmctr_din", id_dim=4, mlp=(8,), cross_layers=1),
    "dmf": model_config("dmf", id_dim=4, mlp=(8,), buckets=7, tiers=4),
    "dmf_early": model_config("dmf", id_dim=4, mlp=(8,), buckets=7, tiers=4, early_fusion=True),
    "dmf_no_centric": model_config("dmf", id_dim=4, mlp=(8,), centric_branch=False),
    "dmf_no_enriched": model_config("dmf", id_dim=4, mlp=(8,), enriched_branch=False),
    "diffmsin": model_config("diffmsin", id_dim=4, mlp=(8,), diffusion_steps=3),
}


def make_batch(seed=0, b=B):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([0, 1, 2, 3, 4, 5] * (b // 6 + 1))[:b]
    mask = torch.arange(L)[None, :] < lengths[:, None]  # (B, L)
    batch = {
        "user_id": torch.arange(b), "label": (torch.arange(b) % 2).float(),
        "item_idx": torch.randint(2, N_ITEMS, (b,), generator=g),
        "hist_idx": torch.randint(2, N_ITEMS, (b, L), generator=g) * mask,
        "hist_mask": mask,
        "hist_sim": (torch.rand(b, L, generator=g) * 2 - 1) * mask,
        "hist_sim_mask": mask.clone(),
        "dense": torch.rand(b, 4, generator=g), "dense_mask": torch.ones(b, dtype=torch.bool),
        "user_dense": torch.rand(b, 4, generator=g), "user_dense_mask": torch.arange(b) % 3 > 0,
    }
    for name, dim in (("mm_emb", M), ("text_emb", 6), ("image_emb", 4)):
        batch[name] = torch.randn(b, dim, generator=g)
        batch[f"{name}_found"] = torch.ones(b, dtype=torch.bool)
        batch[f"hist_{name}"] = torch.randn(b, L, dim, generator=g) * mask[..., None]
        batch[f"hist_{name}_found"] = mask.clone()
    return batch


def model(name, seed=0):
    torch.manual_seed(seed)
    return build_model(SPEC, CONFIGS[name]).eval()


@pytest.mark.parametrize("name", CONFIGS)
def test_logits_have_one_value_per_row(name):
    logits = model(name)(make_batch())
    assert logits.shape == (B,) and torch.isfinite(logits).all()


@pytest.mark.parametrize("name", CONFIGS)
def test_padding_does_not_change_the_output(name):
    m = model(name)
    batch = make_batch()
    noisy = {k: v.clone() for k, v in batch.items()}
    pad = ~batch["hist_mask"]
    g = torch.Generator().manual_seed(9)
    noisy["hist_idx"] = torch.where(pad, torch.randint(2, N_ITEMS, (B, L), generator=g), batch["hist_idx"])
    noisy["hist_sim"] = torch.where(pad, torch.rand(B, L, generator=g), batch["hist_sim"])
    for name_ in ("mm_emb", "text_emb", "image_emb"):
        noisy[f"hist_{name_}"] = torch.where(pad[..., None], torch.randn(batch[f"hist_{name_}"].shape, generator=g), batch[f"hist_{name_}"])
    with torch.no_grad():
        assert torch.allclose(m(batch), m(noisy), atol=1e-6)
        # and the history does matter where it is real
        real = {k: v.clone() for k, v in batch.items()}
        real["hist_idx"] = torch.where(batch["hist_mask"], (batch["hist_idx"] + 3) % N_ITEMS + 2, 0) * batch["hist_mask"]
        real["hist_sim"] = -batch["hist_sim"]
        for name_ in ("mm_emb", "text_emb", "image_emb"):
            real[f"hist_{name_}"] = -batch[f"hist_{name_}"]
        assert not torch.allclose(m(batch)[1:], m(real)[1:], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["dmf", "dmf_early", "dmf_no_centric", "dmf_no_enriched"])
def test_dmf_decoupled_scoring_equals_forward(name):
    m = model(name)
    with torch.no_grad():  # bucket embeddings of a trained model's size, so that every term shows
        m.enriched.bucket_k.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(5))
        m.enriched.bucket_v.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(6))
    batch = make_batch(b=6)
    user = {k: batch[k][4:5] for k in ("hist_idx", "hist_mask", "hist_mm_emb", "hist_mm_emb_found")}  # one user, L=4 real
    C = 6
    candidates = {k: batch[k] for k in ("item_idx", "mm_emb", "dense", "dense_mask", "user_dense", "user_dense_mask")}
    candidates["hist_sim"] = torch.rand(C, L) * 2 - 1
    candidates["hist_sim_mask"] = user["hist_mask"].expand(C, -1).clone()
    with torch.no_grad():
        state = m.encode_user(user)  # (1, L, D): once for all candidates
        decoupled = m.score_candidates(state, candidates)  # (C,)
        rows = {**candidates, **{k: v.expand(C, *v.shape[1:]) for k, v in user.items()}}
        assert torch.allclose(decoupled, m(rows), rtol=0, atol=1e-5)
    assert state.keys.shape[0] == 1


@pytest.mark.parametrize("pooling, grows", [("mean", False), ("sum", True)])
def test_din_interest_does_not_grow_with_a_repeated_history(pooling, grows):
    """A history of one item repeated 1..L times is the same taste: DIN's default (mean) pooling
    scores it the same whatever the length; the paper's sum pooling lets it grow with L."""
    torch.manual_seed(0)
    m = build_model(SPEC, dataclasses.replace(CONFIGS["din"], pooling=pooling)).eval()
    batch = make_batch(b=L)
    lengths = torch.arange(1, L + 1)
    batch["hist_mask"] = torch.arange(L)[None, :] < lengths[:, None]  # row r: r + 1 copies
    batch["hist_idx"] = torch.where(batch["hist_mask"], 7, 0)
    for key in ("item_idx", "dense", "dense_mask", "user_dense", "user_dense_mask"):
        batch[key] = batch[key][:1].expand(L, *batch[key].shape[1:])
    with torch.no_grad():
        interest = m.attention(m.items(batch["item_idx"]), m.items(batch["hist_idx"]), batch["hist_mask"])  # (L, D)
        logits = m(batch)
    assert torch.allclose(interest, interest[:1].expand_as(interest), atol=1e-6) != grows
    assert torch.allclose(logits, logits[:1].expand_as(logits), atol=1e-6) != grows


def test_dmf_buckets_shift_attention():
    m = model("dmf")
    batch = make_batch()
    flipped = dict(batch, hist_sim=-batch["hist_sim"])
    with torch.no_grad():
        assert not torch.allclose(m(batch)[2:], m(flipped)[2:])


def test_dmf_without_similarity_ignores_s_j():
    """The ablation "DMF without s_j": the similarities no longer reach the logits (they do by default, above)."""
    torch.manual_seed(0)
    m = build_model(SPEC, dataclasses.replace(CONFIGS["dmf"], similarity="none")).eval()
    batch = make_batch()
    flipped = dict(batch, hist_sim=-batch["hist_sim"])
    with torch.no_grad():
        assert torch.allclose(m(batch), m(flipped))


def test_a_config_of_another_family_is_refused():
    with pytest.raises(TypeError, match="needs a DMFConfig"):
        build_model(SPEC, dataclasses.replace(CONFIGS["din"], name="dmf"))


@pytest.mark.parametrize("name", CONFIGS)
def test_loss_falls_when_overfitting_one_batch(name):
    m = model(name).train()
    batch = make_batch(seed=3, b=12)
    optimiser = torch.optim.Adam(m.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        logits, aux = forward(m, batch)
        loss = loss_fn(logits, batch["label"], aux)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(F.binary_cross_entropy_with_logits(logits.detach(), batch["label"]).item())
    assert losses[-1] < 0.5 * losses[0], losses[::10]


def test_diffmsin_per_version_history_reps_equal_per_position():
    """Diff-MSIN runs its experts once per distinct vector version; the logits must not change."""
    m = model("diffmsin")
    batch = make_batch()
    g = torch.Generator().manual_seed(3)
    versions = torch.randint(0, 4, (B, L), generator=g)  # few versions, many repeats
    table = {name: torch.randn(4, dim, generator=g) for name, dim in (("text_emb", 6), ("image_emb", 4))}
    for name in table:
        batch[f"hist_{name}"] = table[name][versions] * batch["hist_mask"][..., None]
        batch[f"hist_{name}_version"] = torch.where(batch["hist_mask"], versions, -1)
    per_position = {k: v for k, v in batch.items() if not k.endswith("_version")}
    with torch.no_grad():
        for deduplicated, direct in zip(m.history_reps(batch), m.modality_reps([batch[f"hist_{n}"] for n in m.names])):
            assert torch.allclose(deduplicated, direct, rtol=0, atol=1e-6)
        assert torch.allclose(m(batch), m(per_position), rtol=0, atol=1e-6)


def test_diffmsin_condition_attention_is_multihead_attention():
    """The reverse process projects K, V once; each step must equal nn.MultiheadAttention's output."""
    m = model("diffmsin")
    g = torch.Generator().manual_seed(4)
    reps, x = torch.randn(B, 3, 4, generator=g), torch.randn(B, 4, generator=g)
    t = torch.randint(1, 3, (B,), generator=g)
    with torch.no_grad():
        cond, _ = m.cond(x.unsqueeze(1), reps, reps)
        expected = m.denoiser(torch.cat([x, m.time(t), cond.squeeze(1)], dim=-1))
        assert torch.allclose(m.predict_noise(x, t, m.condition_keys(reps)), expected, atol=1e-6)


def test_each_model_reads_a_service_the_repo_declares_and_vectors_it_holds(applied_repo):
    """The facts each model declares (its service, its vectors) hold against the Feast repo."""
    from mmfs.model.models import FAMILIES, MODELS, SERVICES
    from mmfs.store import feast_store

    assert set(MODELS) == {"din", "mmctr_din", "dmf", "diffmsin"} and SERVICES["dmf"] == "ctr_dmf_v1"
    repo, root = applied_repo
    store = feast_store.open_store("duckdb", repo, root)
    for family in FAMILIES:
        service = store.get_feature_service(family.SERVICE)
        features = [f"{p.name}:{f.name}" for p in service.feature_view_projections for f in p.features]
        vectors = family.vectors(features)
        assert all(any(f.endswith(f":{v}") for f in features) for v in vectors), (family.NAME, vectors)
        assert bool(vectors) == (family.NAME != "din"), family.NAME
