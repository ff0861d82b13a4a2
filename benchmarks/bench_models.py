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


def run(sets: dict[str, Path], work: Path, dataset: str, seeds: int, budget: dict, only: set[str] | None = None) -> list[dict]:
    """Train every variant for every seed; rows already in <work>/rows.json (same budget) are reused."""
    done_file = work / "rows.json"
    done = json.loads(done_file.read_text()) if done_file.exists() else []
    rows = []
    for label, model in VARIANTS.items():
        if only and label not in only:
            rows += [r for r in done if r["dataset"] == dataset and r["model"] == label and r.get("budget") == budget]
            continue
        for seed in range(seeds):
            previous = next((r for r in done if (r["dataset"], r["model"], r["seed"], r.get("budget")) == (dataset, label, seed, budget)), None)
            if previous:
                rows.append(previous)
                continue
            config = TrainConfig(training_set=str(sets[SERVICES[model.name]]), out=str(work / f"models_{dataset}" / f"{model.name}_{seed}"),
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


def table(rows: list[dict], dataset: str) -> list[str]:
    lines = ["| model | seeds | valid AUC | test AUC | test GAUC | test logloss | params | train samples/s | best epoch |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label in VARIANTS:
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


def write_report(rows: list[dict], budget: dict, seeds: dict, path: Path, findings: str) -> None:
    lines = ["# Model comparison", "",
             f"Generated by `make bench-models` on {dt.date.today()} ({machine_description()}).", "",
             f"Same budget for every model: {json.dumps(budget)}; AdamW; early stopping on validation AUC; test read once.",
             "Each model trains on its own feature service's training set (same tables, same time split: 80% / 10% / 10%",
             "by event time). GAUC: per-user AUC weighted by impressions, users with both classes only.", ""]
    for dataset in sorted({r["dataset"] for r in rows}):
        lines += [f"## {dataset}", ""] + table(rows, dataset) + [""]
    lines += ["![test AUC by model](models_auc.png)", "", "## Findings", "", findings.strip(), ""]
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
    rows += run(build_sets(work, movielens, "movielens"), work, "MovieLens ml-latest-small", args.seeds, budget,
               set(args.only) if args.only else None)
    seeds["MovieLens ml-latest-small"] = args.seeds
    if not args.skip_synthetic:
        raw = work / "synthetic_raw"
        synth_root = work / "synthetic"
        if not (synth_root / "target_similarity").exists():
            synth.generate(raw, n_users=3000, n_items=400, n_events=120_000, n_images=400, seed=11)
            run_pipeline.main(["--source", "files", "--items", f"{raw}/items.parquet", "--events", f"{raw}/events.parquet",
                               "--out", str(synth_root)])
        rows += run(build_sets(work, synth_root, "synthetic"), work, "Synthetic, planted image signal", args.synthetic_seeds, budget,
                    set(args.only) if args.only else None)
        seeds["Synthetic, planted image signal"] = args.synthetic_seeds
    findings = Path(args.findings).read_text() if Path(args.findings).exists() else "(none recorded yet)"
    report = Path(args.report)
    write_report(rows, budget, seeds, report, findings)
    chart(rows, report.parent / "models_auc.png")
    print(report.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
