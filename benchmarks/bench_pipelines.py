"""Benchmark of the Spark feature jobs (``make bench``). Prints figures; asserts no times.

- encode_items items/s on this machine's device, text only and text+image, each beside the bare
  encoder on the same inputs in the same run (the floor the job is judged against);
- user_sequences and target_similarity rows/s and peak memory on synthetic events;
- the fixed costs of every job and of ``mmfs apply`` (``benchmarks.bench_fixed_costs``), first,
  while the process has no session yet.

Results go to docs/benchmarks.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import time
from pathlib import Path

import duckdb
import numpy as np
import torch

from benchmarks import bench_fixed_costs
from benchmarks.resources import machine_description, measured, write_section
from mmfs.pipelines.jobs import encode_items, ingest, target_similarity, user_sequences
from mmfs.pipelines import synth
from mmfs.pipelines.encoders import EncoderConfig, load_image_encoder, load_text_encoder
from mmfs.pipelines.images import decode_image
from mmfs.pipelines.spark.encoding import item_text
from mmfs.pipelines.spark.session import build_spark

ROOT = Path(__file__).resolve().parents[1]
FEAST_SECTION = "## Feast: training sets, materialisation, online reads"
ENCODE_GOAL = 0.8
NOTES_MARKER = "<!-- notes below this line are kept when make bench rewrites the tables above -->"


def count(path: str) -> int:
    return duckdb.connect().execute(f"select count(*) from '{path}/*.parquet'").fetchone()[0]


def bare_text_floor(texts: list[str], batch_size: int) -> float:
    encoder = load_text_encoder(EncoderConfig())
    encoder.encode(texts[:batch_size])  # warm-up
    start = time.perf_counter()
    for lo in range(0, len(texts), batch_size):
        encoder.encode(texts[lo: lo + batch_size])
    return len(texts) / (time.perf_counter() - start)


def bare_image_floor(uris: list[str], batch_size: int) -> float:
    encoder = load_image_encoder(EncoderConfig())
    start = time.perf_counter()
    for lo in range(0, len(uris), batch_size):
        pixels = np.stack([encoder.preprocess(decode_image(u).image) for u in uris[lo: lo + batch_size]])
        encoder.encode(pixels)
    return len(uris) / (time.perf_counter() - start)


def run_encode_bench(work: Path, n_text: list[int], n_image: int) -> list[dict]:
    rows = []
    cases = [("text only", n, 0, "none") for n in n_text] + [("text + image", n_image, n_image, "efficientnet-lite0")]
    for label, n_items, n_images, image_model in cases:
        raw = work / f"enc_raw_{n_items}_{n_images}"
        # one text per item: the job and the bare loop encode the same n_items distinct contents
        synth.generate(raw, n_users=100, n_items=n_items, n_events=1000, n_images=n_images, seed=1, distinct_texts=True)
        root = str(work / f"enc_{n_items}_{n_images}")
        ingest.main(["--source", "files", "--items", f"{raw}/items.parquet", "--events", f"{raw}/events.parquet", "--out", root])
        with measured() as m:
            encode_items.main(["--root", root, "--image-model", image_model, "--batch-size", "64"])
        items = duckdb.connect().execute(f"select title, text, image_uri from '{root}/items/*.parquet'").fetchall()
        texts = [item_text(t, x) for t, x, _ in items]
        torch.set_num_threads(2)
        text_floor = bare_text_floor(texts, 64)
        floor = text_floor
        if n_images:
            image_floor = bare_image_floor([u for _, _, u in items if u], 32)
            floor = 1.0 / (1.0 / text_floor + 1.0 / image_floor)  # both encoders per item, serial
        phases = json.loads(Path(root, "item_embeddings", "_mmfs_meta.json").read_text())["phase_seconds"]
        rows.append({"what": label, "items": n_items, "job_items_s": n_items / m.seconds, "floor_items_s": floor,
                     "encode_items_s": n_items / phases["encode in Spark workers"],
                     "seconds": m.seconds, "peak_gib": m.peak_rss_bytes / 2**30, "phases": phases})
    return rows


def run_scale_bench(work: Path, sizes: list[int], n_items: int) -> list[dict]:
    rows = []
    base = work / "scale_items"
    synth.generate(base, n_users=10, n_items=n_items, n_events=10, n_images=0, seed=3)
    embeddings_root = str(work / "scale_embeddings")
    ingest.main(["--source", "files", "--items", f"{base}/items.parquet", "--events", f"{base}/events.parquet", "--out", embeddings_root])
    encode_items.main(["--root", embeddings_root, "--image-model", "none"])
    for n_events in sizes:
        raw = work / f"scale_raw_{n_events}"
        synth.generate(raw, n_users=max(1, n_events // 20), n_items=n_items, n_events=n_events, n_images=0, seed=3)
        root = str(work / f"scale_{n_events}")
        with measured() as m_ingest:
            ingest.main(["--source", "files", "--items", f"{raw}/items.parquet", "--events", f"{raw}/events.parquet", "--out", root])
        shutil.copytree(f"{embeddings_root}/item_embeddings", f"{root}/item_embeddings")
        with measured() as m_seq:
            user_sequences.main(["--root", root])
        with measured() as m_sim:
            target_similarity.main(["--root", root])
        mean_len = duckdb.connect().execute(f"select avg(hist_len) from '{root}/sequences/*.parquet'").fetchone()[0]
        for stage, m in (("ingest", m_ingest), ("user_sequences", m_seq), ("target_similarity", m_sim)):
            rows.append({"events": n_events, "stage": stage, "seconds": m.seconds, "rows_s": n_events / m.seconds,
                         "peak_gib": m.peak_rss_bytes / 2**30, "mean_hist_len": mean_len})
        shutil.rmtree(raw)
        shutil.rmtree(root)
    return rows


def write_report(path: Path, encode_rows: list[dict], scale_rows: list[dict]) -> str:
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `make bench` on {dt.date.today()}. Machine: {machine_description()}.",
        "Spark `local[*]`; every figure is one whole job (read, transform, great-expectations validation of input and",
        "output, atomic write), wall time, peak resident memory of the driver + JVM + Python workers.",
        "",
        "## encode_items (CPU)",
        "",
        "The floor is the bare encoder on the same items in the same run (2 torch threads, batch 64, no Spark).",
        "Every item's text is distinct (`mmfs synth --distinct-texts`), so the job, which encodes each distinct content",
        "once, does the same work as the floor.",
        "'encode phase' is the Spark stage that runs the encoders (worker start-up and model loading included);",
        "'job' is the whole job, whose fixed costs (driver-side weight check, PCA fit, validation) do not grow",
        "with the item count.",
        "",
        "| inputs | items | job items/s | encode phase items/s | floor items/s | encode phase / floor | wall s | peak GiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in encode_rows:
        lines.append(f"| {r['what']} | {r['items']} | {r['job_items_s']:.1f} | {r['encode_items_s']:.1f} | {r['floor_items_s']:.1f} | "
                     f"{r['encode_items_s'] / r['floor_items_s']:.2f} | {r['seconds']:.1f} | {r['peak_gib']:.2f} |")
    lines += ["", "| goal | measured | |", "|---|---|---|"]
    for r in encode_rows:
        ratio = r["job_items_s"] / r["floor_items_s"]
        lines.append(f"| encode job >= {ENCODE_GOAL}x the bare encoder loop's items/s ({r['what']}, {r['items']:,} items) | "
                     f"{ratio:.2f}x ({r['job_items_s']:.1f} vs {r['floor_items_s']:.1f} items/s; encode phase "
                     f"{r['encode_items_s'] / r['floor_items_s']:.2f}x) | {'met' if ratio >= ENCODE_GOAL else '**not met**'} |")
    lines += ["", "Where the job's time went (seconds):", ""]
    for r in encode_rows:
        lines.append(f"- {r['what']}: " + ", ".join(f"{name} {sec:.1f}" for name, sec in r["phases"].items()))
    if not torch.cuda.is_available():
        lines += ["", f"GPU figures: no GPU available on {dt.date.today()} (no CUDA device on this machine). The same job runs the",
                  "encoders on CUDA under bf16/fp16 autocast when `torch.cuda.is_available()`; `make bench-gpu` (benchmarks/bench_gpu.py)",
                  "is the prepared script for a GPU machine and writes docs/gpu.md."]
    lines += [
        "",
        "## Sequence and similarity jobs on synthetic events",
        "",
        "Synthetic events from `mmfs synth` (users = events / 20, 5,000 text-only items encoded once and shared),",
        "history length N = 50. rows/s counts input events per second of the whole job.",
        "",
        "| events | stage | wall s | rows/s | peak GiB | mean hist_len |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    for r in scale_rows:
        lines.append(f"| {r['events']:,} | {r['stage']} | {r['seconds']:.1f} | {r['rows_s']:,.0f} | {r['peak_gib']:.2f} | {r['mean_hist_len']:.1f} |")
    text = "\n".join(lines) + "\n"
    current = path.read_text() if path.exists() else ""
    kept = current.split(NOTES_MARKER, 1)[1] if NOTES_MARKER in current else "\n"
    # The sections written by the other benchmarks (bench_feast, bench_serving) are their own runs'; keep them.
    head = current.split(NOTES_MARKER, 1)[0]
    others = head[head.index(FEAST_SECTION):].rstrip() + "\n" if FEAST_SECTION in head else ""
    path.write_text(text + ("\n" + others if others else "") + "\n" + NOTES_MARKER + kept)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "bench_out"))
    parser.add_argument("--sizes", default="1000000,10000000", help="comma-separated event counts")
    parser.add_argument("--encode-text-items", default="4000,20000", help="comma-separated item counts of the text-only runs")
    parser.add_argument("--encode-image-items", type=int, default=300)
    parser.add_argument("--scale-items", type=int, default=5000)
    parser.add_argument("--report", default=str(ROOT / "docs" / "benchmarks.md"))
    parser.add_argument("--fixed-events", type=int, default=200, help="the fixed-cost section's tiny input")
    args = parser.parse_args(argv)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    # First, while this process has no Spark session: the fixed costs include starting one.
    fixed_text, _ = bench_fixed_costs.run(work / "fixed_costs", args.fixed_events)
    build_spark("mmfs-bench")
    encode_rows = run_encode_bench(work, [int(n) for n in args.encode_text_items.split(",")], args.encode_image_items)
    scale_rows = run_scale_bench(work, [int(s) for s in args.sizes.split(",") if s], args.scale_items)
    print(write_report(Path(args.report), encode_rows, scale_rows))
    write_section(Path(args.report), fixed_text, bench_fixed_costs.SECTION, bench_fixed_costs.END)
    print(fixed_text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
