"""Model comparison (``make bench-models``): DIN, MMCTR DIN, Diff-MSIN, DMF and DMF ablations.

Each model trains on its own feature service's training set, built from the same tables with the
same time split; same budget (epochs, patience, batch, learning rate), several seeds; selection on
validation AUC only, test read once. Two datasets:

- MovieLens ml-latest-small (bundled; text-only items: no images);
- synthetic events with a planted multimodal signal (``mmfs synth``: clicks depend on the match
  between the user's taste and the colour/shape drawn in the item's image), where multimodal
  models must beat DIN clearly.

Writes docs/models.md (mean +- std tables) and docs/models_auc.png.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import shutil
from pathlib import Path

import numpy as np

from benchmarks.resources import machine_description
from model.models import SERVICES, ModelConfig
from model.train import TrainConfig, train
from pipelines import feast_store, run_pipeline, synth, training_set

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "DIN": ModelConfig(name="din"),
    "MMCTR DIN (MHTA + SENet, V4)": ModelConfig(name="mmctr_din"),
    "Diff-MSIN": ModelConfig(name="diffmsin"),
    "DMF": ModelConfig(name="dmf"),
    "DMF w/o enriched branch (DTA)": ModelConfig(name="dmf", enriched_branch=False),
    "DMF w/o modality-centric branch": ModelConfig(name="dmf", centric_branch=False),
    "DMF w/o centric MM attention": ModelConfig(name="dmf", centric_attention=False),
}


# DMF knobs tried on MovieLens (issue 4: "if DMF does not beat the peers, investigate bucket count,
# alpha, the embedding projections"); run with --sweep.
SWEEP = {
    "DMF, 10 buckets": ModelConfig(name="dmf", buckets=10),
    "DMF, 70 buckets": ModelConfig(name="dmf", buckets=70),
    "DMF, alpha fixed 0.5": ModelConfig(name="dmf", alpha=0.5),
    "DMF, id/projection dim 64": ModelConfig(name="dmf", id_dim=64),
}


def slug(label: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in label.lower()).strip("_")


# (work dir name, dataset label, (users, items, events, items with a drawn image)). Every item's
# text names its colour and shape; images cost ~14 items/s to encode on 2 CPU cores.
SYNTHETIC = [
    ("synthetic", "Synthetic, planted image signal", (3000, 400, 120_000, 400)),  # dense ids: ~300 events per item
    ("synthetic_sparse", "Synthetic, 3,000 items (sparse ids)", (3000, 3000, 90_000, 600)),  # ~30 events per item, long tail
]


def ensure_synthetic(work: Path, name: str, users: int, items: int, events: int, images: int) -> Path:
    raw, root = work / f"{name}_raw", work / name
    if not (root / "target_similarity").exists():
        synth.generate(raw, n_users=users, n_items=items, n_events=events, n_images=images, seed=11)
        run_pipeline.main(["--source", "files", "--items", f"{raw}/items.parquet", "--events", f"{raw}/events.parquet", "--out", str(root)])
    return root


def ensure_tables(root: Path, source_args: list[str]) -> None:
    if not (root / "target_similarity").exists() or not (root / "item_stats").exists():
        run_pipeline.main(source_args + ["--out", str(root)])


def build_sets(work: Path, root: Path, name: str) -> dict[str, Path]:
    repo = work / f"repo_{name}" / "feature_repo"
    shutil.rmtree(repo.parent, ignore_errors=True)
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("data", "__pycache__"))
    meta = json.loads((root / "item_embeddings" / "_mmfs_meta.json").read_text())
    identity = meta["encoder_identity"]
    os.environ["MMFS_MM_DIM"] = str(identity["mm_dim"])
    os.environ["MMFS_TEXT_DIM"] = str(identity["text"]["dim"])
    os.environ["MMFS_IMAGE_DIM"] = str((identity.get("image") or {}).get("dim") or 1280)
    feast_store.apply("duckdb", repo, root)
    store = feast_store.open_store("duckdb", repo, root)
    sets = {}
    for service in sorted(set(SERVICES.values())):
        out = work / f"sets_{name}" / service
        training_set.build(store, service, root / "events", out, saved_dataset=False)
        sets[service] = out
    return sets


def run(sets: dict[str, Path], work: Path, dataset: str, seeds: int, budget: dict, only: set[str] | None = None,
        variants: dict[str, ModelConfig] = VARIANTS) -> list[dict]:
    """Train every variant for every seed; rows already in <work>/rows.json (same budget) are reused."""
    done_file = work / "rows.json"
    done = json.loads(done_file.read_text()) if done_file.exists() else []
    rows = []
    for label, model in variants.items():
        if only and label not in only:
            rows += [r for r in done if r["dataset"] == dataset and r["model"] == label and r.get("budget") == budget]
            continue
        for seed in range(seeds):
            previous = next((r for r in done if (r["dataset"], r["model"], r["seed"], r.get("budget")) == (dataset, label, seed, budget)), None)
            if previous:
                rows.append(previous)
                continue
            config = TrainConfig(training_set=str(sets[SERVICES[model.name]]), out=str(work / f"models_{dataset}" / f"{slug(label)}_{seed}"),
                                 model=model, seed=seed, progress=False, **budget)
            metrics = train(config)
            rows.append({"dataset": dataset, "model": label, "seed": seed, "params": metrics["params"],
                         "valid_auc": metrics["valid"]["auc"], "test_auc": metrics["test"]["auc"],
                         "valid_gauc": metrics["valid"]["gauc"], "test_gauc": metrics["test"]["gauc"],
                         "test_logloss": metrics["test"]["logloss"], "best_epoch": metrics["best_epoch"],
                         "samples_s": metrics["train_samples_per_s"], "budget": budget})
            print(json.dumps(rows[-1]), flush=True)
            done.append(rows[-1])
            done_file.write_text(json.dumps(done, indent=1))
    return rows


def slice_analysis(sets: dict[str, Path], work: Path, budget: dict, seed: int = 0) -> list[dict]:
    """Test AUC of DIN, MMCTR DIN and DMF (one seed each) on rows whose target item was seen in
    training and on rows whose item was not: where does the valid/test disagreement come from?"""
    import torch

    from model.data import LoaderConfig, TrainingSetDataset
    from model.metrics import auc
    from model.train import load_checkpoint, model_vectors, prepare

    out = []
    for label in ("DIN", "MMCTR DIN (MHTA + SENet, V4)", "DMF"):
        model_config = VARIANTS[label]
        training_set = sets[SERVICES[model_config.name]]
        target = work / "analysis" / f"{slug(label)}_{seed}"
        if not (target / "checkpoint.pt").exists():
            train(TrainConfig(training_set=str(training_set), out=str(target), model=model_config, seed=seed, progress=False, **budget))
        model, meta = load_checkpoint(target / "checkpoint.pt")
        row = {"model": label}
        for split in ("valid", "test"):
            vectors = model_vectors(model_config.name, meta)
            data = TrainingSetDataset(training_set, LoaderConfig(split=split, batch_size=4096, vectors=vectors, shuffle=False))
            labels, logits, seen, history = [], [], [], []
            for batch in data:
                batch = prepare(batch, meta["vocab"], torch.device("cpu"))
                with torch.inference_mode():
                    logits.append(model(batch).numpy())
                labels.append(batch["label"].numpy())
                seen.append(batch["item_idx"].numpy() > 1)
                history.append(batch["hist_mask"].any(1).numpy())
            labels, logits, seen, history = map(np.concatenate, (labels, logits, seen, history))
            row[f"{split}_seen_share"] = float(seen.mean())
            row[f"{split}_auc_seen"] = auc(labels[seen], logits[seen])
            row[f"{split}_auc_unseen"] = auc(labels[~seen], logits[~seen]) if (~seen).any() else float("nan")
            row[f"{split}_auc_all"] = auc(labels, logits)
        out.append(row)
        print(json.dumps(row), flush=True)
    return out


def slice_table(rows: list[dict]) -> list[str]:
    lines = ["| model (seed 0) | valid AUC all | valid AUC, seen items | valid AUC, unseen items | test AUC all | test AUC, seen items | test AUC, unseen items |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['valid_auc_all']:.4f} | {r['valid_auc_seen']:.4f} | {r['valid_auc_unseen']:.4f} | "
                     f"{r['test_auc_all']:.4f} | {r['test_auc_seen']:.4f} | {r['test_auc_unseen']:.4f} |")
    if rows:
        lines += ["", f"Rows whose target item was seen in training: valid {rows[0]['valid_seen_share']:.1%}, test {rows[0]['test_seen_share']:.1%}."]
    return lines


def table(rows: list[dict], dataset: str, variants: dict[str, ModelConfig] = VARIANTS) -> list[str]:
    lines = ["| model | seeds | valid AUC | test AUC | test GAUC | test logloss | params | train samples/s | best epoch |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label in variants:
        group = [r for r in rows if r["dataset"] == dataset and r["model"] == label]
        if not group:
            continue

        def ms(key, digits=4):
            values = np.array([r[key] for r in group], dtype=float)
            return f"{values.mean():.{digits}f} ± {values.std(ddof=1) if len(values) > 1 else 0:.{digits}f}"

        lines.append(f"| {label} | {len(group)} | {ms('valid_auc')} | {ms('test_auc')} | {ms('test_gauc')} | {ms('test_logloss')} | "
                     f"{group[0]['params']:,} | {np.mean([r['samples_s'] for r in group]):,.0f} | "
                     f"{np.mean([r['best_epoch'] for r in group]):.1f} |")
    return lines


def chart(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        labels = [label for label in VARIANTS if any(r["dataset"] == dataset and r["model"] == label for r in rows)]
        means = [np.mean([r["test_auc"] for r in rows if r["dataset"] == dataset and r["model"] == label]) for label in labels]
        stds = [np.std([r["test_auc"] for r in rows if r["dataset"] == dataset and r["model"] == label]) for label in labels]
        ax.barh(range(len(labels)), means, xerr=stds, color="tab:blue")
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.set_xlim(min(means) - 0.03, max(means) + 0.02)
        ax.set_xlabel("test AUC (mean ± std over seeds)")
        ax.set_title(dataset)
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(rows: list[dict], budget: dict, seeds: dict, path: Path, findings: str,
                 sweep: list[dict] | None = None, slices: list[dict] | None = None) -> None:
    lines = ["# Model comparison", "",
             f"Generated by `make bench-models` on {dt.date.today()} ({machine_description()}).", "",
             f"Same budget for every model: {json.dumps(budget)}; AdamW; early stopping on validation AUC; test read once.",
             "Each model trains on its own feature service's training set (same tables, same time split: 80% / 10% / 10%",
             "by event time). GAUC: per-user AUC weighted by impressions, users with both classes only.", ""]
    for dataset in sorted({r["dataset"] for r in rows}):
        lines += [f"## {dataset}", ""] + table(rows, dataset) + [""]
    lines += ["![test AUC by model](models_auc.png)", ""]
    if sweep:
        lines += ["## DMF knobs (MovieLens)", "", "Same budget; DMF defaults: 35 buckets, learned alpha, id/projection dim 32.", ""]
        lines += table(rows + sweep, "MovieLens ml-latest-small", {"DMF": VARIANTS["DMF"], **SWEEP}) + [""]
    if slices:
        lines += ["## Seen and unseen target items (MovieLens, one seed)", ""] + slice_table(slices) + [""]
    lines += ["## Findings", "", findings.strip(), ""]
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "bench_out" / "models"))
    parser.add_argument("--movielens-root", default=str(ROOT / "out" / "movielens"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--synthetic-seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--skip-synthetic", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="also train the DMF knob variants on MovieLens (3 seeds)")
    parser.add_argument("--slices", action="store_true", help="also compare seen/unseen-item AUC (one seed of DIN, MMCTR DIN, DMF)")
    parser.add_argument("--only", action="append", default=None, help="train only these variants (exact labels); others come from saved rows")
    parser.add_argument("--report", default=str(ROOT / "docs" / "models.md"))
    parser.add_argument("--findings", default=str(ROOT / "docs" / "models_findings.md"),
                        help="hand-written findings included in the report")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    budget = {"max_epochs": args.epochs, "patience": args.patience, "batch_size": args.batch_size, "lr": 1e-3, "weight_decay": 1e-4}
    rows, seeds = [], {}
    movielens = Path(args.movielens_root)
    ensure_tables(movielens, ["--source", "movielens", "--input", str(ROOT / "data" / "movielens-small")])
    movielens_sets = build_sets(work, movielens, "movielens")
    rows += run(movielens_sets, work, "MovieLens ml-latest-small", args.seeds, budget, set(args.only) if args.only else None)
    seeds["MovieLens ml-latest-small"] = args.seeds
    sweep = run(movielens_sets, work, "MovieLens ml-latest-small", 3, budget, variants=SWEEP) if args.sweep else None
    slices = slice_analysis(movielens_sets, work, budget) if args.slices else None
    if not args.skip_synthetic:
        for name, dataset, sizes in SYNTHETIC:
            synth_root = ensure_synthetic(work, name, *sizes)
            rows += run(build_sets(work, synth_root, name), work, dataset, args.synthetic_seeds, budget,
                        set(args.only) if args.only else None)
            seeds[dataset] = args.synthetic_seeds
    findings = Path(args.findings).read_text() if Path(args.findings).exists() else "(none recorded yet)"
    report = Path(args.report)
    write_report(rows, budget, seeds, report, findings, sweep, slices)
    chart(rows, report.parent / "models_auc.png")
    print(report.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
