"""Model comparison (``make bench-models``): mmfs's DIN, MMCTR DIN, Diff-MSIN and DMF beside
FuxiCTR's own DIN and DCNv2 and model-free baselines, on the same rows, in one run.

Every model trains on the same tables and the same time split (80% / 90% event-time quantiles),
with the same seeds, the same budget and the same selection: early stopping on validation AUC,
the test split read once, after selection. mmfs's models read their feature service's training
set; FuxiCTR's read the same rows exported by ``mmfs.model.export_fuxictr`` (checked row for row).
The model-free baselines (``mmfs.model.baselines``) need no selection at all. Three data sets:

- MovieLens ml-latest-small (bundled; text-only items), 5 seeds;
- two synthetic sets with a planted content signal (``mmfs synth``: clicks depend on the match
  between the user's taste and the colour/shape named in the item's text and drawn in its image),
  dense ids (400 items, ~300 events each) and sparse ids (3,000 items, long tail), 3 seeds each.

Writes docs/models.md (mean ± std tables, the diagnosis, the findings from
docs/models_findings.md), docs/models_auc.png and docs/models_curves.png. Rows already in
``<work>/rows.json`` for the same budget and the same code (a digest of the model, data and job
sources: ``code_version``) are reused, so an interrupted run resumes; rows of other code are rerun.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.resources import machine_description
from mmfs.model.models import model_config
from mmfs.model.models import SERVICES
from mmfs.model.train import TrainConfig, train
from mmfs.store.repo import init_repo

ROOT = Path(__file__).resolve().parents[1]
MOVIELENS = "MovieLens ml-latest-small"

MODELS = {
    "DIN": model_config("din"),
    "MMCTR DIN (MHTA + SENet, V4)": model_config("mmctr_din"),
    "Diff-MSIN": model_config("diffmsin"),
    "DMF": model_config("dmf"),
}

# The diagnosis on MovieLens (--diagnosis): what each fix is worth, 3 seeds each.
DIAGNOSIS = {
    "DIN, sum pooling (the paper's)": model_config("din", pooling="sum"),
    "DIN w/o user stats": model_config("din", user_stats=False),
    "DIN w/o user stats, sum pooling (the old default)": model_config("din", user_stats=False, pooling="sum"),
    "DMF w/o user stats": model_config("dmf", user_stats=False),
    "DMF w/o enriched branch (DTA)": model_config("dmf", enriched_branch=False),
    "DMF w/o modality-centric branch": model_config("dmf", centric_branch=False),
}

# What each part of DMF adds, on the implicit sets (3 seeds each): s_j from which modality, each branch.
# "DMF" itself is the fused s_j with both branches; MMCTR DIN is DIN over the same inputs (id + mm_emb).
ABLATIONS = {
    "DMF without s_j (content still in m_t and the centric attention)": model_config("dmf", similarity="none"),
    "DMF, s_j from text only": model_config("dmf", similarity="text"),
    "DMF, s_j from image only": model_config("dmf", similarity="image"),
    "DMF w/o enriched branch (DTA)": model_config("dmf", enriched_branch=False),
    "DMF w/o modality-centric branch": model_config("dmf", centric_branch=False),
}

# The recipe, compared on the implicit MovieLens set: the default (cosine) against the plateau rule.
PLATEAU = {"lr_schedule": "plateau", "max_epochs": 12}
RECIPES = {"DMF, plateau recipe (rate x0.3 after a flat epoch, 12 epochs)": (model_config("dmf"), PLATEAU),
           "DIN, plateau recipe (rate x0.3 after a flat epoch, 12 epochs)": (model_config("din"), PLATEAU)}

# (work dir name, dataset label, (users, items, events, items with a drawn image)). Every item's
# text names its colour and shape; images cost ~14 items/s to encode on 2 CPU cores.
SYNTHETIC = [
    ("synthetic", "Synthetic, planted image signal (dense ids)", (3000, 400, 120_000, 400)),  # ~300 events per item
    ("synthetic_sparse", "Synthetic, 3,000 items (sparse ids)", (3000, 3000, 90_000, 600)),  # ~30 events per item, long tail
]


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")


def log(message: str) -> None:
    print(f"[{dt.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------------

def ensure_synthetic(work: Path, name: str, users: int, items: int, events: int, images: int) -> Path:
    from mmfs.pipelines.jobs import run_pipeline
    from mmfs.pipelines import synth

    raw, root = work / f"{name}_raw", work / name
    if not (root / "target_similarity").exists() or not (root / "user_stats").exists():
        synth.generate(raw, n_users=users, n_items=items, n_events=events, n_images=images, seed=11)
        run_pipeline.main(["--source", "files", "--items", f"{raw}/items.parquet", "--events", f"{raw}/events.parquet", "--out", str(root)])
    return root


def ensure_implicit(work: Path, name: str, source: Path, positives: str, image_root: Path | None = None) -> Path:
    """``source``'s items and events as implicit feedback (``mmfs.pipelines.implicit``: every rating, or
    every click, a positive; one popularity-matched negative per positive at the same instant), run
    through the whole pipeline into ``<work>/<name>``."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    from mmfs.core.contracts.tables import RAW_EVENT_COLUMNS, RAW_ITEM_COLUMNS
    from mmfs.pipelines import implicit
    from mmfs.pipelines.jobs import run_pipeline

    raw, root = work / f"{name}_raw", work / name
    if not all((root / t).exists() for t in ("target_similarity", "item_stats", "user_stats")):
        raw.mkdir(parents=True, exist_ok=True)
        if (source / "encoder_cache").exists() and not (root / "encoder_cache").exists():  # same items: their embeddings are reused
            shutil.copytree(source / "encoder_cache", root / "encoder_cache")
        items = ds.dataset(source / "items", format="parquet").to_table()
        items = items.select(RAW_ITEM_COLUMNS).append_column("created_at", items.column("created_timestamp"))
        pq.write_table(items, raw / "items.parquet")
        events = ds.dataset(source / "events", format="parquet").to_table(columns=RAW_EVENT_COLUMNS)
        pq.write_table(implicit.implicit_events(events, negatives=1, positives=positives, seed=11), raw / "events.parquet")
        args = ["--source", "files", "--items", f"{raw}/items.parquet", "--events", f"{raw}/events.parquet", "--out", str(root)]
        run_pipeline.main(args + (["--image-root", str(image_root)] if image_root else []))
    return root


def ensure_tables(root: Path, source_args: list[str]) -> None:
    from mmfs.pipelines.jobs import run_pipeline

    if not all((root / t).exists() for t in ("target_similarity", "item_stats", "user_stats")):
        run_pipeline.main(source_args + ["--out", str(root)])


def build_sets(work: Path, root: Path, name: str) -> dict[str, Path]:
    """Every service's training set over ``root``, through a copy of the feature repo."""
    from mmfs.store import feast_store, training_set

    repo = work / f"repo_{name}" / "feature_repo"
    shutil.rmtree(repo.parent, ignore_errors=True)
    init_repo(repo)
    feast_store.apply("duckdb", repo, root)
    store = feast_store.open_store("duckdb", repo, root)
    sets = {}
    for service in sorted(set(SERVICES.values())):
        out = work / f"sets_{name}" / service
        training_set.build(store, service, root / "events", out, saved_dataset=False)
        sets[service] = out
    return sets


def split_arrays(training_set: Path, split: str) -> dict[str, np.ndarray]:
    """One split through mmfs's loader, whole (the bench's sets are small)."""
    import torch

    from mmfs.model.data import LoaderConfig, TrainingSetDataset

    data = TrainingSetDataset(training_set, LoaderConfig(split=split, batch_size=1 << 20, shuffle=False, vectors=()))
    batches = list(data)
    return {k: torch.cat([b[k] for b in batches]).numpy() for k in batches[0]}


# -- baselines -------------------------------------------------------------------------------------

def baseline_rows(training_set: Path, dataset: str) -> list[dict]:
    """Constant, popularity, co-like and popularity x user rate on valid and test."""
    from mmfs.model.baselines import CoLike, Popularity
    from mmfs.model.metrics import auc, ece, gauc, logloss

    s = {split: split_arrays(training_set, split) for split in ("train", "valid", "test")}
    tr = s["train"]
    prior = float(tr["label"].mean())
    pop = Popularity.fit(tr["item_id"], tr["label"])
    colike = CoLike.fit(tr["user_id"], tr["item_id"], tr["label"])
    logit = lambda p: np.log(np.clip(p, 1e-6, 1 - 1e-6) / (1 - np.clip(p, 1e-6, 1 - 1e-6)))  # noqa: E731
    rows = []
    for label, score in (
        ("constant (train positive rate)", lambda d: np.full(len(d["label"]), prior)),
        ("popularity (item's smoothed train CTR)", lambda d: pop.score(d["item_id"])),
        ("co-like (item-item cosine vs history)", lambda d: colike.score(d["item_id"], d["hist_item_ids"], d["hist_mask"])),
        ("user's running CTR (user_stats alone)", lambda d: np.where(d["user_dense_mask"], d["user_dense"][:, 2], prior)),
        # The user's running CTR is the user_stats feature itself (smoothed to 0.5 with 2 pseudo-events).
        ("popularity x user's running CTR", lambda d: 1 / (1 + np.exp(-(logit(pop.score(d["item_id"]))
                                                                         + np.where(d["user_dense_mask"], d["user_dense"][:, 3], 0.0) - logit(prior))))),
    ):
        row = {"dataset": dataset, "model": label, "kind": "baseline"}
        for split in ("valid", "test"):
            d = s[split]
            p = score(d)
            row[f"{split}_auc"] = auc(d["label"], p)
            row[f"{split}_gauc"] = gauc(d["user_id"], d["label"], p)
            probability = label.startswith(("constant", "popularity", "user's"))  # co-like is a score, not a probability
            row[f"{split}_logloss"] = logloss(d["label"], p) if probability else float("nan")
            row[f"{split}_ece"] = ece(d["label"], p) if probability else float("nan")
        rows.append(row)
    return rows


# -- training runs ---------------------------------------------------------------------------------

# The code a row's numbers depend on: the models, the loader and training, the training sets and the
# feature rules, the Spark jobs that wrote the tables, and this benchmark (down to its report
# section, which only formats rows; the budget and set of a row are in the row) with its peer runner.
CODE_FOLDERS = ("model", "core", "store", "pipelines")
REPORT_MARKER = b"\n# -- report -"


def code_version() -> str:
    """A digest of the files in ``CODE_FOLDERS`` and the benchmark's own: a cached row is reused only
    from the same code, so docs/models.md always reproduces from HEAD."""
    import hashlib

    digest = hashlib.sha256()
    files = sorted(p for folder in CODE_FOLDERS for p in (ROOT / folder).rglob("*.py"))
    files += [ROOT / "benchmarks" / "bench_models.py", ROOT / "benchmarks" / "fuxictr_peer.py"]
    for path in files:
        text = path.read_bytes()
        if path.name == "bench_models.py":
            text = text[:text.index(REPORT_MARKER)]
        digest.update(str(path.relative_to(ROOT)).encode() + b"\0" + text + b"\0")
    return digest.hexdigest()[:16]


def load_done(work: Path) -> list[dict]:
    """Rows an earlier run of this very code left in ``rows.json`` (other code's rows are ignored)."""
    done_file = work / "rows.json"
    rows = json.loads(done_file.read_text()) if done_file.exists() else []
    return [r for r in rows if r.get("code") == code_version()]


def save_row(work: Path, row: dict) -> None:
    done = load_done(work)
    done.append({**row, "code": code_version()})
    (work / "rows.json").write_text(json.dumps(done, indent=1))


def run_mmfs(sets: dict[str, Path], work: Path, dataset: str, seeds: int, budget: dict, variants: dict) -> list[dict]:
    rows = []
    done = load_done(work)
    for label, model in variants.items():
        for seed in range(seeds):
            previous = next((r for r in done if (r["dataset"], r["model"], r["seed"], r.get("budget")) == (dataset, label, seed, budget)), None)
            if previous:
                rows.append(previous)
                continue
            log(f"{dataset}: {label}, seed {seed}")
            config = TrainConfig(training_set=str(sets[SERVICES[model.name]]), out=str(work / f"models_{slug(dataset)}" / f"{slug(label)}_{seed}"),
                                 model=model, seed=seed, progress=False, **budget)
            metrics = train(config)
            row = {"dataset": dataset, "model": label, "kind": "mmfs", "seed": seed, "params": metrics["params"],
                   **{f"{split}_{k}": metrics[split][k] for split in ("valid", "test") for k in ("auc", "gauc", "logloss", "ece")},
                   "best_epoch": metrics["best_epoch"], "epochs_run": metrics["history"][-1]["epoch"],
                   "samples_s": metrics["train_samples_per_s"], "budget": budget,
                   "curve": [(h["epoch"], h["valid_auc"]) for h in metrics["history"]]}
            rows.append(row)
            save_row(work, row)
    return rows


def run_peers(training_set: Path, work: Path, dataset: str, seeds: int, budget: dict) -> tuple[list[dict], dict]:
    """FuxiCTR's models on the exported rows; the export is checked against the training set first."""
    import pyarrow.parquet as pq

    from benchmarks.fuxictr_peer import PEERS, train_peer
    from mmfs.model.export_fuxictr import SPLITS, check_export, export

    out = work / f"fuxictr_{slug(dataset)}"
    exported = export(training_set, out)
    checked = check_export(training_set, exported)
    log(f"{dataset}: FuxiCTR export checked, rows {checked}")
    users = {s: pq.read_table(out / f"{s}.parquet", columns=["user_id"]).column(0).to_numpy() for s in SPLITS}
    rows, done = [], load_done(work)
    peer_budget = {"max_epochs": budget["max_epochs"], "patience": 2, "batch_size": budget["batch_size"], "lr": budget["lr"]}
    for label, peer in PEERS.items():
        for seed in range(seeds):
            previous = next((r for r in done if (r["dataset"], r["model"], r["seed"], r.get("budget")) == (dataset, label, seed, peer_budget)), None)
            if previous:
                rows.append(previous)
                continue
            log(f"{dataset}: {label}, seed {seed}")
            metrics = train_peer(exported, peer, seed, peer_budget["max_epochs"], peer_budget["patience"], peer_budget["batch_size"],
                                 peer_budget["lr"], users)
            row = {"dataset": dataset, "model": label, "kind": "peer", "seed": seed, "params": metrics["params"],
                   **{f"{split}_{k}": metrics[split].get(k, float("nan")) for split in ("valid", "test") for k in ("auc", "gauc", "logloss", "ece")},
                   "best_epoch": metrics["best_epoch"], "samples_s": metrics["train_samples_per_s"], "budget": peer_budget}
            rows.append(row)
            save_row(work, row)
    return rows, {"checked_rows": checked, "item_info_rows": exported.n_items}


# -- the diagnosis: where trained models win and lose --------------------------------------------

HIST_BUCKETS = ((0, 0, "0"), (1, 9, "1-9"), (10, 29, "10-29"), (30, 49, "30-49"), (50, 10**9, "50"))


def slices(sets: dict[str, Path], work: Path, dataset: str) -> list[dict]:
    """Seed 0 of each mmfs model, re-scored on valid and test: AUC by history length, on seen and
    unseen target items, and with the whole history masked at test time."""
    import torch

    from mmfs.model.data import LoaderConfig, TrainingSetDataset
    from mmfs.model.metrics import auc
    from mmfs.model.checkpoint import load_checkpoint
    from mmfs.model.models import model_vectors
    from mmfs.model.train import prepare

    out = []
    for label, config in MODELS.items():
        checkpoint = work / f"models_{slug(dataset)}" / f"{slug(label)}_0" / "checkpoint.pt"
        if not checkpoint.exists():
            continue
        model, meta = load_checkpoint(checkpoint)
        vectors = model_vectors(config.name, meta)
        row = {"model": label}
        for split in ("valid", "test"):
            data = TrainingSetDataset(sets[SERVICES[config.name]], LoaderConfig(split=split, batch_size=4096, vectors=vectors, shuffle=False))
            labels, logits, masked, seen, lengths = [], [], [], [], []
            for batch in data:
                batch = prepare(batch, meta["vocab"], torch.device("cpu"))
                with torch.inference_mode():
                    logits.append(model(batch).numpy())
                    empty = {k: (torch.zeros_like(v) if k.startswith("hist_") else v) for k, v in batch.items()}
                    masked.append(model(empty).numpy())
                labels.append(batch["label"].numpy())
                seen.append(batch["item_idx"].numpy() > 1)
                lengths.append(batch["hist_mask"].sum(1).numpy())
            labels, logits, masked, seen, lengths = map(np.concatenate, (labels, logits, masked, seen, lengths))
            row[f"{split}_auc"] = auc(labels, logits)
            row[f"{split}_auc_no_history"] = auc(labels, masked)
            row[f"{split}_seen_share"] = float(seen.mean())
            row[f"{split}_auc_seen"] = auc(labels[seen], logits[seen])
            row[f"{split}_auc_unseen"] = auc(labels[~seen], logits[~seen]) if (~seen).any() else float("nan")
            for lo, hi, name in HIST_BUCKETS:
                rows_ = (lengths >= lo) & (lengths <= hi)
                row[f"{split}_hist_{name}_share"] = float(rows_.mean())
                row[f"{split}_hist_{name}_auc"] = auc(labels[rows_], logits[rows_]) if rows_.sum() > 20 else float("nan")
        out.append(row)
    return out


def drift(training_set: Path) -> list[dict]:
    """Inputs whose distribution moves with time: history length, the cumulative counts, unseen
    items, new users, the positive rate, by split."""
    s = {split: split_arrays(training_set, split) for split in ("train", "valid", "test")}
    train_users, train_items = set(s["train"]["user_id"].tolist()), set(s["train"]["item_id"].tolist())
    rows = []
    for split, d in s.items():
        rows.append({
            "split": split, "rows": len(d["label"]), "positive rate": float(d["label"].mean()),
            "rows of users new since train": float(np.mean([u not in train_users for u in d["user_id"]])) if split != "train" else 0.0,
            "rows with an item unseen in train": float(np.mean([i not in train_items for i in d["item_id"]])) if split != "train" else 0.0,
            "mean history length": float(d["hist_mask"].sum(1).mean()),
            "mean log1p(item impressions)": float(d["dense"][d["dense_mask"], 0].mean()),
            "max log1p(item impressions)": float(d["dense"][d["dense_mask"], 0].max()),
            "item stats known": float(d["dense_mask"].mean()), "user stats known": float(d["user_dense_mask"].mean()),
        })
    return rows


def epoch_speed(sets: dict[str, Path], work: Path, repeats: int = 3) -> list[dict]:
    """One training epoch of DMF and Diff-MSIN on MovieLens, side by side in one process, their
    order alternating, so both see the same machine: train samples/s (the loader included,
    validation excluded) and the ratio."""
    out = []
    for r in range(repeats):
        order = ("DMF", "Diff-MSIN") if r % 2 == 0 else ("Diff-MSIN", "DMF")
        for label in order:
            model = MODELS[label]
            config = TrainConfig(training_set=str(sets[SERVICES[model.name]]), out=str(work / "speed" / slug(label)), model=model, seed=r,
                                 max_epochs=1, evals_per_epoch=1, max_eval_batches=1, progress=False)
            out.append({"model": label, "repeat": r, "samples_s": train(config)["train_samples_per_s"]})
            log(f"speed: {label} repeat {r}: {out[-1]['samples_s']:,.0f} samples/s")
    return out


def speed_lines(rows: list[dict]) -> list[str]:
    by = {label: [r["samples_s"] for r in rows if r["model"] == label] for label in ("DMF", "Diff-MSIN")}
    ratio = np.median(by["DMF"]) / np.median(by["Diff-MSIN"])
    return ["| model | train samples/s per repeat | median |", "|---|---|---:|"] + [
        f"| {label} | {', '.join(f'{v:,.0f}' for v in values)} | {np.median(values):,.0f} |" for label, values in by.items()] + [
        "", f"An epoch of Diff-MSIN costs {ratio:.2f}x DMF's on the same rows (goal: within 2x: {'met' if ratio <= 2 else 'NOT met'})."]


# -- report ----------------------------------------------------------------------------------------

def ms(values, digits=4) -> str:
    values = np.array([v for v in values if v == v], dtype=float)
    if not len(values):
        return "-"
    return f"{values.mean():.{digits}f} ± {values.std(ddof=1) if len(values) > 1 else 0:.{digits}f}"


def table(rows: list[dict], dataset: str, order: list[str]) -> list[str]:
    lines = ["| model | kind | seeds | valid AUC | test AUC | test GAUC | test logloss | test ECE | params | train samples/s | best epoch / run |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda v: f"{v:.4f}" if v == v else "-"  # noqa: E731
    for label in order:
        group = [r for r in rows if r["dataset"] == dataset and r["model"] == label]
        if not group:
            continue
        if group[0]["kind"] == "baseline":
            r = group[0]
            lines.append(f"| {label} | model-free | - | {r['valid_auc']:.4f} | {r['test_auc']:.4f} | {r['test_gauc']:.4f} | "
                         f"{fmt(r['test_logloss'])} | {fmt(r.get('test_ece', float('nan')))} | 0 | - | - |")
            continue
        lines.append(f"| {label} | {group[0]['kind']} | {len(group)} | {ms(r['valid_auc'] for r in group)} | {ms(r['test_auc'] for r in group)} | "
                     f"{ms(r['test_gauc'] for r in group)} | {ms(r['test_logloss'] for r in group)} | "
                     f"{ms(r.get('test_ece', float('nan')) for r in group)} | {group[0]['params']:,} | "
                     f"{np.mean([r['samples_s'] for r in group]):,.0f} | {np.mean([r['best_epoch'] for r in group]):.1f}"
                     f"{' / ' + format(np.mean([r['epochs_run'] for r in group]), '.1f') if 'epochs_run' in group[0] else ''} |")
    return lines


def verdicts(rows: list[dict], dataset: str) -> list[str]:
    """DMF against every other trained model (test AUC, > 2 seed-stds), every trained model
    against popularity (AUC) and the constant (logloss)."""
    def group(label):
        return np.array([r["test_auc"] for r in rows if r["dataset"] == dataset and r["model"] == label])

    trained = sorted({r["model"] for r in rows if r["dataset"] == dataset and r["kind"] != "baseline"})
    base = {r["model"]: r for r in rows if r["dataset"] == dataset and r["kind"] == "baseline"}
    pop = base.get("popularity (item's smoothed train CTR)")
    const = base.get("constant (train positive rate)")
    lines = []
    dmf = group("DMF")
    for label in trained:
        g = group(label)
        lls = [r["test_logloss"] for r in rows if r["dataset"] == dataset and r["model"] == label]
        checks = []
        if pop:
            checks.append(f"AUC {'above' if g.mean() > pop['test_auc'] else 'NOT above'} popularity ({g.mean():.4f} vs {pop['test_auc']:.4f})")
        if const:
            checks.append(f"logloss {'below' if np.mean(lls) < const['test_logloss'] else 'NOT below'} the constant's "
                          f"({np.mean(lls):.4f} vs {const['test_logloss']:.4f})")
        colike = base.get("co-like (item-item cosine vs history)")
        if label == "DMF" and colike:
            checks.append(f"AUC {'above' if g.mean() > colike['test_auc'] else 'NOT above'} co-like ({g.mean():.4f} vs {colike['test_auc']:.4f})")
        din_ll = [r["test_logloss"] for r in rows if r["dataset"] == dataset and r["model"] == "DIN"]
        if label == "DMF" and din_ll:
            checks.append(f"logloss {'no worse than' if np.mean(lls) <= np.mean(din_ll) else 'WORSE than'} DIN's "
                          f"({np.mean(lls):.4f} vs {np.mean(din_ll):.4f})")
        if label != "DMF" and len(dmf) > 1 and len(g) > 1:
            gap, spread = dmf.mean() - g.mean(), 2 * max(dmf.std(ddof=1), g.std(ddof=1))
            checks.append(f"DMF {'ahead by more than' if gap > spread else 'NOT ahead by more than'} 2 std ({gap:+.4f} vs {spread:.4f})")
        lines.append(f"- {label}: " + "; ".join(checks))
    return lines


def ablation_verdicts(rows: list[dict], dataset: str, variants: list[str]) -> list[str]:
    """What each ablation costs DMF on test AUC, against 2 std of the seeds; a recipe variant against
    the same model under the default recipe, on validation AUC (what chose the recipe) and test."""
    def aucs(label, split="test"):
        return np.array([r[f"{split}_auc"] for r in rows if r["dataset"] == dataset and r["model"] == label])

    lines = []
    for label in variants:
        reference = label.split(",")[0] if "recipe" in label else "DMF"
        for split in (("valid", "test") if "recipe" in label else ("test",)):
            ref, g = aucs(reference, split), aucs(label, split)
            if len(ref) > 1 and len(g) > 1:
                gap, spread = ref.mean() - g.mean(), 2 * max(ref.std(ddof=1), g.std(ddof=1))
                verdict = f"{reference} better" if gap > spread else "variant better" if -gap > spread else "no difference beyond 2 std"
                lines.append(f"- {label}: {reference} {gap:+.4f} {split} AUC against it (2 std {spread:.4f}; seed std "
                             f"{ref.std(ddof=1):.4f} vs {g.std(ddof=1):.4f}): {verdict}")
    return lines


def slice_tables(rows: list[dict]) -> list[str]:
    lines = ["| model (seed 0) | split | AUC | AUC, history masked | seen items | unseen items | " +
             " | ".join(f"history {name}" for _, _, name in HIST_BUCKETS) + " |",
             "|---|---|---:|---:|---:|---:|" + "---:|" * len(HIST_BUCKETS)]
    fmt = lambda v: "-" if v != v else f"{v:.4f}"  # noqa: E731
    for r in rows:
        for split in ("valid", "test"):
            lines.append(f"| {r['model']} | {split} | {fmt(r[f'{split}_auc'])} | {fmt(r[f'{split}_auc_no_history'])} | "
                         f"{fmt(r[f'{split}_auc_seen'])} | {fmt(r[f'{split}_auc_unseen'])} | " +
                         " | ".join(fmt(r[f"{split}_hist_{name}_auc"]) for _, _, name in HIST_BUCKETS) + " |")
    if rows:
        r = rows[0]
        lines += ["", "Share of rows: " + "; ".join(
            f"{split}: seen items {r[f'{split}_seen_share']:.1%}, history " +
            ", ".join(f"{name}: {r[f'{split}_hist_{name}_share']:.1%}" for _, _, name in HIST_BUCKETS) for split in ("valid", "test")) + "."]
    return lines


def drift_table(rows: list[dict]) -> list[str]:
    keys = [k for k in rows[0] if k != "split"]
    lines = ["| " + " | ".join(["split"] + keys) + " |", "|---|" + "---:|" * len(keys)]
    for r in rows:
        lines.append("| " + " | ".join([r["split"]] + [f"{r[k]:,}" if isinstance(r[k], int) else f"{r[k]:.3f}" for k in keys]) + " |")
    return lines


def charts(rows: list[dict], order: dict[str, list[str]], docs: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = list(order)
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4.5), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        labels = [m for m in order[dataset] if any(r["dataset"] == dataset and r["model"] == m for r in rows)]
        values = [[r["test_auc"] for r in rows if r["dataset"] == dataset and r["model"] == m] for m in labels]
        means, stds = [np.mean(v) for v in values], [np.std(v, ddof=1) if len(v) > 1 else 0 for v in values]
        colours = ["tab:gray" if next(r for r in rows if r["dataset"] == dataset and r["model"] == m)["kind"] == "baseline"
                   else "tab:orange" if m.startswith("FuxiCTR") else "tab:blue" for m in labels]
        ax.barh(range(len(labels)), means, xerr=stds, color=colours)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_xlim(max(0.45, min(means) - 0.02), max(means) + 0.01)
        ax.set_xlabel("test AUC (mean ± std over seeds)")
        ax.set_title(dataset, fontsize=9)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(docs / "models_auc.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(datasets), figsize=(6.5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for label in MODELS:
            run = next((r for r in rows if r["dataset"] == dataset and r["model"] == label and r.get("seed") == 0 and r.get("curve")), None)
            if run:
                epochs, aucs = zip(*run["curve"])
                ax.plot(epochs, aucs, "o-", ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("valid AUC (seed 0)")
        ax.set_title(dataset, fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(docs / "models_curves.png", dpi=100)
    plt.close(fig)


def write_report(rows: list[dict], order: dict[str, list[str]], budgets: dict[str, dict], path: Path, findings: str, exports: dict,
                 diagnosis: list[dict], slice_rows: list[dict], drift_rows: list[dict], seconds: float, speed: list[dict],
                 ablation: dict[str, list[dict]], not_run: list[str]) -> None:
    lines = ["# Model comparison", "",
             f"Generated by `make bench-models` on {dt.date.today()} ({machine_description()}), {seconds / 60:.0f} min in this run "
             f"(rows that an earlier run of the same code, {code_version()}, and budget left in `--work`'s rows.json are reused, not rerun).", "",
             f"mmfs's models: {'; '.join(f'{d}: {json.dumps(b)}' for d, b in budgets.items())}; AdamW; "
             "`evals_per_epoch` validation passes per epoch and the best pass's weights kept; every other rule counted in epochs: "
             "the learning rate along `lr_schedule` (cosine: decayed to 1e-5 by `max_epochs`; plateau: cut by `lr_decay` after "
             "`lr_patience_epochs` without a better validation AUC), the run ended after `patience_epochs` without one (`mmfs train`'s "
             "defaults, the same for every mmfs model; the rows named 'plateau recipe' change only that). FuxiCTR's models: the same epochs, batch and learning rate, Adam, FuxiCTR's own early "
             "stopping (patience 2 epochs) and learning-rate cut on plateau. Selection on validation AUC only; test read once.",
             "Same rows for every model: each mmfs model reads its feature service's training set (same tables, same time split: 80% / 90% "
             "event-time quantiles); FuxiCTR's read those rows exported by `mmfs.model.export_fuxictr` and checked row for row "
             "(row count, labels, users, every history and target, the target's vector). GAUC: per-user AUC weighted by impressions, "
             "users with both classes only. ECE: expected calibration error over 15 equal-width probability bins. "
             "Model-free baselines are fitted on the train split. Sets marked implicit: " + IMPLICIT_NOTE + ".", ""]
    if not_run:
        lines += ["Not run in this report (`--sets`): " + "; ".join(not_run) + ". Their last results are in this file's git history, "
                  "from older code; nothing here is reused from it.", ""]
    for dataset, labels in order.items():
        lines += [f"## {dataset}", ""] + table(rows, dataset, labels) + [""]
        if dataset in exports:
            lines += [f"FuxiCTR export check: {exports[dataset]['checked_rows']} rows equal; {exports[dataset]['item_info_rows']:,} item_info rows.", ""]
        lines += ["Verdicts (test):", ""] + verdicts(rows, dataset) + [""]
    lines += ["![test AUC by model](models_auc.png)", "", "![validation curves, seed 0](models_curves.png)", ""]
    for dataset, group in ablation.items():
        labels = ["DIN", "MMCTR DIN (MHTA + SENet, V4)", "DMF"] + list(dict.fromkeys(r["model"] for r in group))
        lines += [f"## Ablations on {dataset}: what each part of DMF adds", "",
                  "DMF is the fused s_j with both branches; the variants change one thing each. MMCTR DIN is DIN over the same "
                  "inputs as DMF (item id + mm_emb).", ""]
        lines += table(rows + group, dataset, labels) + [""] + ablation_verdicts(rows + group, dataset, list(dict.fromkeys(r["model"] for r in group))) + [""]
    if diagnosis:
        lines += ["## Diagnosis on MovieLens: what each fix is worth (3 seeds)", ""]
        lines += table(rows + diagnosis, MOVIELENS, ["DIN"] + [k for k in DIAGNOSIS if k.startswith("DIN")] + ["DMF"] +
                       [k for k in DIAGNOSIS if k.startswith("DMF")]) + [""]
    if drift_rows:
        lines += ["## What moves between the splits (MovieLens)", ""] + drift_table(drift_rows) + [""]
    if slice_rows:
        lines += ["## Where the trained models win and lose (MovieLens, seed 0)", ""] + slice_tables(slice_rows) + [""]
    if speed:
        lines += ["## Training speed: Diff-MSIN against DMF (MovieLens, one epoch each, alternating, same run)", ""] + speed_lines(speed) + [""]
    lines += ["## Findings", "", findings.strip(), ""]
    path.write_text("\n".join(lines))


IMPLICIT_NOTE = ("implicit feedback: every rating (MovieLens) or click (synthetic) a positive, one negative per positive for "
                 "the same user at the same instant, an item drawn in proportion to its popularity that the user has no event "
                 "for (`mmfs implicit`); popularity says almost nothing here, the history and the content carry the task")
SET_NAMES = ("movielens", "synthetic", "synthetic_sparse", "movielens_implicit", "synthetic_implicit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "bench_out" / "models"))
    parser.add_argument("--movielens-root", default=str(ROOT / "out" / "movielens"))
    parser.add_argument("--sets", default=",".join(SET_NAMES), help=f"comma-separated, from {SET_NAMES}")
    parser.add_argument("--seeds", type=int, default=5, help="seeds per model on every set")
    parser.add_argument("--ablation-seeds", type=int, default=3)
    parser.add_argument("--diffmsin-seeds", type=int, default=None, help="seeds for Diff-MSIN, the slowest model (default: --seeds)")
    parser.add_argument("--peer-seeds", type=int, default=5, help="seeds per FuxiCTR peer")
    parser.add_argument("--epochs", type=int, default=TrainConfig.max_epochs, help="epoch budget (the recipe's patience ends most runs sooner)")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--models", default=",".join(c.name for c in MODELS.values()),
                        help="comma-separated model names (din, mmctr_din, dmf, diffmsin) of the mmfs models to train, in this order")
    parser.add_argument("--skip-peers", action="store_true", help="no FuxiCTR runs (it needs the bench extra)")
    parser.add_argument("--no-diagnosis", action="store_true", help="skip the MovieLens diagnosis variants and slices")
    parser.add_argument("--no-ablations", action="store_true", help="skip the DMF ablations on the implicit sets")
    parser.add_argument("--report", default=str(ROOT / "docs" / "models.md"))
    parser.add_argument("--findings", default=str(ROOT / "docs" / "models_findings.md"), help="hand-written findings included in the report")
    args = parser.parse_args(argv)
    chosen = [n.strip() for n in args.sets.split(",") if n.strip()]
    unknown = sorted(set(chosen) - set(SET_NAMES))
    if unknown:
        parser.error(f"unknown set(s) {unknown}; known: {SET_NAMES}")
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    if sorted(set(names) - {c.name for c in MODELS.values()}):
        parser.error(f"--models: unknown model(s) {sorted(set(names) - {c.name for c in MODELS.values()})}")
    models = {label: config for name in names for label, config in MODELS.items() if config.name == name}
    began = time.perf_counter()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    # The recipe is TrainConfig's own (patience and learning-rate cuts in epochs), the same for every mmfs model.
    recipe = TrainConfig()
    budget = {"max_epochs": args.epochs, "evals_per_epoch": recipe.evals_per_epoch, "patience_epochs": recipe.patience_epochs,
              "lr_schedule": recipe.lr_schedule, "lr_patience_epochs": recipe.lr_patience_epochs, "lr_decay": recipe.lr_decay,
              "batch_size": args.batch_size, "lr": 1e-3, "weight_decay": 1e-4}
    movielens = Path(args.movielens_root)
    if "movielens" in chosen or "movielens_implicit" in chosen:
        ensure_tables(movielens, ["--source", "movielens", "--input", str(ROOT / "data" / "movielens-small")])
    roots = {"movielens": (MOVIELENS, lambda: movielens)}
    for name, label, sizes in SYNTHETIC:
        roots[name] = (label, lambda name=name, sizes=sizes: ensure_synthetic(work, name, *sizes))
    roots["movielens_implicit"] = (f"{MOVIELENS}, implicit",
                                   lambda: ensure_implicit(work, "movielens_implicit", movielens, "all"))
    roots["synthetic_implicit"] = (f"{SYNTHETIC[0][1]}, implicit",
                                   lambda: ensure_implicit(work, "synthetic_implicit", ensure_synthetic(work, *((SYNTHETIC[0][0],) + SYNTHETIC[0][2])),
                                                           "clicks", work / f"{SYNTHETIC[0][0]}_raw"))
    rows, order, exports, diagnosis, slice_rows, drift_rows, speed, ablation = [], {}, {}, [], [], [], [], {}
    budgets = {}
    for name in chosen:
        label, make_root = roots[name]
        root = make_root()
        budgets[label] = budget
        log(f"{label}: training sets")
        sets = build_sets(work, root, name)
        base = baseline_rows(sets["ctr_din_v1"], label)
        rows += base
        for model_label, config in models.items():
            seeds = args.diffmsin_seeds if config.name == "diffmsin" and args.diffmsin_seeds is not None else args.seeds
            rows += run_mmfs(sets, work, label, seeds, budget, {model_label: config})
        if not args.skip_peers:
            peer_rows, exports[label] = run_peers(sets["ctr_dmf_v1"], work, label, args.peer_seeds, budget)
            rows += peer_rows
        from benchmarks.fuxictr_peer import PEERS

        order[label] = [r["model"] for r in base] + list(models) + ([] if args.skip_peers else list(PEERS))
        if name.endswith("_implicit") and not args.no_ablations:
            has_image = "image_components" in np.load(root / "item_embeddings" / "_pca.npz")  # mm_emb has an image part
            variants = {k: v for k, v in ABLATIONS.items() if has_image or getattr(v, "similarity", "") != "image"}
            ablation[label] = run_mmfs(sets, work, label, args.ablation_seeds, budget, variants)
            if name == "movielens_implicit":
                for variant, (config, change) in RECIPES.items():
                    ablation[label] += run_mmfs(sets, work, label, args.ablation_seeds, {**budget, **change}, {variant: config})
        if name == "movielens" and not args.no_diagnosis:
            diagnosis = run_mmfs(sets, work, label, 3, budget, DIAGNOSIS)
            slice_rows = slices(sets, work, label)
            drift_rows = drift(sets["ctr_din_v1"])
            speed = epoch_speed(sets, work)
    findings = Path(args.findings).read_text() if Path(args.findings).exists() else "(none recorded yet)"
    report = Path(args.report)
    write_report(rows, order, budgets, report, findings, exports, diagnosis, slice_rows, drift_rows, time.perf_counter() - began, speed,
                 ablation, [roots[n][0] for n in SET_NAMES if n not in chosen])
    charts(rows, order, report.parent)
    print(report.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
