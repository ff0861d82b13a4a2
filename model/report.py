"""``mmfs model-report DIR...``: valid/test AUC, GAUC and logloss of trained models side by side."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table


def plot_curve(history: list[dict], path: Path, title: str) -> None:
    """Save a PNG of train loss and valid AUC per epoch at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, left = plt.subplots(figsize=(6, 3.5))
    left.plot(epochs, [h["train_loss"] for h in history], "o-", label="train loss")
    left.set_xlabel("epoch")
    left.set_ylabel("train loss")
    right = left.twinx()
    right.plot(epochs, [h["valid_auc"] for h in history], "s-", color="tab:orange", label="valid AUC")
    right.set_ylabel("valid AUC")
    fig.suptitle(f"{title}: training curve")
    fig.legend(loc="lower center", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """``mmfs model-report``: print the metrics of each ``mmfs train`` output folder in one table; 2 without folders."""
    dirs = [Path(d) for d in (sys.argv[1:] if argv is None else argv)]
    if not dirs:
        print("usage: mmfs model-report OUT_DIR [OUT_DIR ...]  (folders written by mmfs train)")
        return 2
    table = Table(title="models (selected on validation AUC; test read once)")
    for column in ("model", "params", "best epoch", "valid AUC", "valid GAUC", "test AUC", "test GAUC", "test logloss", "train samples/s"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for d in dirs:
        m = json.loads((d / "metrics.json").read_text())
        table.add_row(m["model"], f"{m['params']:,}", str(m["best_epoch"]), f"{m['valid']['auc']:.4f}", f"{m['valid']['gauc']:.4f}",
                      f"{m['test']['auc']:.4f}", f"{m['test']['gauc']:.4f}", f"{m['test']['logloss']:.4f}",
                      f"{m['train_samples_per_s']:,.0f}")
    Console(width=160).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
