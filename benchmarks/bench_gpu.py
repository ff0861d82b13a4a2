"""GPU figures, one short prepared script (``make bench-gpu``; run it when a GPU machine is lent).

    python -m benchmarks.bench_gpu [--device cuda] [--items 20000] [--report docs/gpu.md]

Measures, on the device given (CUDA by default), in one run:

- text encoding (``mmfs.pipelines.encoders``, bf16 autocast on CUDA) with MiniLM-L6 (the packaged
  weights) and with a BERT-base-sized model (12 x 768; **random weights**, flagged in the table:
  no BERT-base weights ship in a package), items/s and achieved FLOP/s against the device's bf16
  dense ceiling, at batch 256 and 1024. FLOPs per batch: 2 x (non-embedding parameters) x padded
  tokens + 4 x layers x N x T^2 x H (attention scores and values);
- the image path (EfficientNet-Lite0): encoder items/s on preprocessed pixels against JPEG decode
  + preprocess on all CPU cores (a process pool), which is what feeds it;
- DMF training samples/s (forward, backward, Adam step; batch 1024, L = 50, 64-d mm_emb) on random
  tensors of the loader's shapes.

With no CUDA device it says so and writes nothing unless ``--device cpu`` is given (a dry run that
checks the script on small sizes). Asserts nothing.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from benchmarks.resources import machine_description

ROOT = Path(__file__).resolve().parents[1]
# bf16 dense tensor-core peaks (no sparsity), TFLOP/s, from the vendors' data sheets.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100": 989.4, "A100": 312.0, "L4": 121.0, "L40S": 362.0}
GOAL_SHARE = 0.5


def device_peak(device: str) -> tuple[str, float | None]:
    if not device.startswith("cuda"):
        return "cpu", None
    name = torch.cuda.get_device_name(0)
    return name, next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def texts_for(n: int) -> list[str]:
    from mmfs.pipelines import synth
    import pyarrow.parquet as pq
    from mmfs.pipelines.spark.encoding import item_text

    with tempfile.TemporaryDirectory() as tmp:
        synth.generate(Path(tmp), n_users=10, n_items=n, n_events=10, n_images=0, seed=1)
        items = pq.read_table(Path(tmp) / "items.parquet").to_pylist()
    return [item_text(r["title"], r["text"]) for r in items]


def bert_base_random(folder: Path) -> str:
    """A BERT-base-sized model (12 layers, 768 hidden, 12 heads, 3072 FFN) with random weights and
    MiniLM's tokenizer (the same uncased WordPiece vocabulary), saved where the loader reads a local folder."""
    from transformers import AutoTokenizer, BertConfig, BertModel
    from mmfs.pipelines.encoders import DEFAULT_TEXT_MODEL, _text_model_path

    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(_text_model_path(DEFAULT_TEXT_MODEL)).save_pretrained(folder)
    return str(folder)


def text_figures(model: str, label: str, texts: list[str], device: str, batches: tuple[int, ...], peak: float | None) -> list[dict]:
    from mmfs.pipelines.encoders import EncoderConfig, load_text_encoder

    encoder = load_text_encoder(EncoderConfig(text_model=model, device=device))
    cfg = encoder.model.config
    params = sum(p.numel() for n, p in encoder.model.named_parameters() if "embeddings" not in n)
    rows = []
    for batch in batches:
        ordered = sorted(texts, key=len)  # the job batches texts of like length together
        chunks = [ordered[i:i + batch] for i in range(0, len(ordered), batch)]
        encoder.encode(chunks[0])  # warm-up (kernels, allocator)
        flops = 0.0
        for chunk in chunks:
            tokens = encoder.tokenizer(chunk, padding=True, truncation=True, max_length=encoder.max_length)["input_ids"]
            n, t = len(tokens), len(tokens[0])
            flops += 2 * params * n * t + 4 * cfg.num_hidden_layers * n * t * t * cfg.hidden_size
        sync(device)
        start = time.perf_counter()
        for chunk in chunks:
            encoder.encode(chunk)
        sync(device)
        seconds = time.perf_counter() - start
        achieved = flops / seconds / 1e12
        rows.append({"model": label, "batch": batch, "items_s": len(texts) / seconds, "tflops": achieved,
                     "share": achieved / peak if peak else None})
        print(rows[-1], flush=True)
    return rows


def _decode_one(payload: bytes) -> np.ndarray:
    from PIL import Image

    from mmfs.pipelines.encoders import EfficientNetLite0Encoder
    from mmfs.pipelines.images import resize_center_crop

    image = Image.open(io.BytesIO(payload)).convert("RGB")
    pixels = np.asarray(resize_center_crop(image, EfficientNetLite0Encoder.image_size), dtype=np.float32) / 255.0
    return ((pixels - 0.5) / 0.5).transpose(2, 0, 1)


def image_figures(device: str, n: int) -> dict:
    from PIL import Image

    from mmfs.pipelines.encoders import EncoderConfig, load_image_encoder

    rng = np.random.default_rng(0)
    payloads = []
    for _ in range(min(n, 256)):  # 256 distinct 480x360 JPEGs, cycled
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (360, 480, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
        payloads.append(buffer.getvalue())
    payloads = [payloads[i % len(payloads)] for i in range(n)]
    cores = os.cpu_count() or 1
    with ProcessPoolExecutor(cores) as pool:
        list(pool.map(_decode_one, payloads[:cores * 4]))  # warm the pool
        start = time.perf_counter()
        pixels = np.stack(list(pool.map(_decode_one, payloads, chunksize=16)))
        decode_s = n / (time.perf_counter() - start)
    encoder = load_image_encoder(EncoderConfig(image_model="efficientnet-lite0", device=device))
    encoder.encode(pixels[:256])
    sync(device)
    start = time.perf_counter()
    for lo in range(0, n, 256):
        encoder.encode(pixels[lo:lo + 256])
    sync(device)
    encode_s = n / (time.perf_counter() - start)
    row = {"images": n, "cpu_cores": cores, "decode_items_s": decode_s, "encode_items_s": encode_s}
    print(row, flush=True)
    return row


def dmf_figures(device: str, steps: int, batch: int = 1024, L: int = 50, D: int = 64, n_items: int = 100_000) -> dict:
    from mmfs.model.config import DataSpec
    from mmfs.model.models import build_model, model_config
    from mmfs.model.train import train_step

    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_model(DataSpec(n_items=n_items, mm_dim=D), model_config("dmf")).to(dev).train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    lengths = torch.randint(0, L + 1, (batch,), device=dev)
    mask = torch.arange(L, device=dev)[None, :] < lengths[:, None]
    data = {"label": (torch.rand(batch, device=dev) < 0.5).float(), "item_idx": torch.randint(2, n_items, (batch,), device=dev),
            "hist_idx": torch.randint(2, n_items, (batch, L), device=dev) * mask, "hist_mask": mask,
            "hist_sim": (torch.rand(batch, L, device=dev) * 2 - 1) * mask, "hist_sim_mask": mask.clone(),
            "dense": torch.rand(batch, 4, device=dev), "dense_mask": torch.ones(batch, dtype=torch.bool, device=dev),
            "user_dense": torch.rand(batch, 4, device=dev), "user_dense_mask": torch.ones(batch, dtype=torch.bool, device=dev),
            "mm_emb": torch.randn(batch, D, device=dev), "mm_emb_found": torch.ones(batch, dtype=torch.bool, device=dev),
            "hist_mm_emb": torch.randn(batch, L, D, device=dev) * mask[..., None], "hist_mm_emb_found": mask.clone(),
            "user_id": torch.arange(batch, device=dev)}

    def step():
        train_step(model, optimiser, data, dev)

    for _ in range(5):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    row = {"batch": batch, "steps": steps, "samples_s": batch * steps / (time.perf_counter() - start)}
    print(row, flush=True)
    return row


def report(device: str, name: str, peak: float | None, text: list[dict], image: dict, dmf: dict) -> str:
    lines = ["# GPU figures", "", f"Generated by `python -m benchmarks.bench_gpu` on {dt.date.today()} ({machine_description()}), "
             f"device {device} ({name}), bf16 ceiling {peak or 'unknown'} TFLOP/s.", "",
             "| goal | measured | |", "|---|---|---|"]
    for r in text:
        if r["batch"] >= 256 and r["share"] is not None:
            lines.append(f"| text encoding >= {GOAL_SHARE:.0%} of the bf16 ceiling at batch >= 256 ({r['model']}, batch {r['batch']}) | "
                         f"{r['share']:.1%} ({r['tflops']:.1f} TFLOP/s) | {'met' if r['share'] >= GOAL_SHARE else '**not met**'} |")
    lines += ["", "| text model | batch | items/s | TFLOP/s | share of ceiling |", "|---|---:|---:|---:|---:|"]
    for r in text:
        share = "-" if r["share"] is None else f"{r['share']:.1%}"
        lines.append(f"| {r['model']} | {r['batch']} | {r['items_s']:,.0f} | {r['tflops']:.2f} | {share} |")
    lines += ["", f"Image path (EfficientNet-Lite0, {image['images']} JPEGs of 480x360): encoder {image['encode_items_s']:,.0f} items/s; "
              f"JPEG decode + preprocess on {image['cpu_cores']} CPU processes {image['decode_items_s']:,.0f} items/s "
              f"({image['encode_items_s'] / image['decode_items_s']:.2f}x: {'decode' if image['decode_items_s'] < image['encode_items_s'] else 'the encoder'} is the limit).",
              "", f"DMF training (batch {dmf['batch']}, L = 50, 64-d mm_emb, random tensors): {dmf['samples_s']:,.0f} samples/s over {dmf['steps']} steps.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--dmf-steps", type=int, default=200)
    parser.add_argument("--batches", default="256,1024")
    parser.add_argument("--report", default=str(ROOT / "docs" / "gpu.md"))
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"no GPU available ({dt.date.today()}): nothing measured")
        return 1
    name, peak = device_peak(args.device)
    texts = texts_for(args.items)
    batches = tuple(int(b) for b in args.batches.split(","))
    rows = text_figures("minilm", "MiniLM-L6 (packaged weights)", texts, args.device, batches, peak)
    with tempfile.TemporaryDirectory() as tmp:
        rows += text_figures(bert_base_random(Path(tmp)), "BERT-base size (random weights)", texts, args.device, batches, peak)
    image = image_figures(args.device, args.images)
    dmf = dmf_figures(args.device, args.dmf_steps)
    text = report(args.device, name, peak, rows, image, dmf)
    Path(args.report).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
