"""synth: a synthetic items/events generator with a planted multimodal signal, for scale tests.

    mmfs synth --out data/synth --users 100000 --items 10000 --events 1000000 --images 1000 --seed 7

Writes the raw input contract: ``<out>/items.parquet``, ``<out>/events.parquet`` (in row groups,
never all in memory) and PIL-drawn PNGs under ``<out>/images/``. Each item has a colour, a shape
and a topic, named in its text and drawn in its image; each user prefers one colour and one
shape. A click's probability rises when the item's content matches the user's taste, so features
that compare a target's content with the user's history carry signal that item ids alone do not.
Deterministic for a given seed and size. Not a stand-in for real data.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from mmfs.core.contracts.tables import EVENTS

COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40),
          "purple": (140, 60, 180), "orange": (240, 140, 30), "black": (20, 20, 20), "pink": (240, 130, 190)}
SHAPES = ["circle", "square", "triangle", "star", "ring", "cross"]
TOPICS = ["kitchen", "garden", "sports", "travel", "office", "toys", "music", "books", "fashion", "tools"]
ADJECTIVES = ["classic", "modern", "compact", "deluxe", "vintage", "bright", "simple", "premium"]
START = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
SPAN_US = 182 * 24 * 3600 * 1_000_000  # about six months of events
CHUNK = 1_000_000


def make_items(n_items: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-item attributes as arrays of length ``n_items``: ids from 1, colour/shape/topic/adjective
    indices, quality noise and a Zipf-like popularity weight."""
    return {
        "item_id": np.arange(1, n_items + 1, dtype=np.int64),
        "color": rng.integers(0, len(COLORS), n_items),
        "shape": rng.integers(0, len(SHAPES), n_items),
        "topic": rng.integers(0, len(TOPICS), n_items),
        "adjective": rng.integers(0, len(ADJECTIVES), n_items),
        "quality": rng.normal(0.0, 0.5, n_items),
        # Zipf-like popularity: a few items draw most impressions.
        "popularity": 1.0 / np.arange(1, n_items + 1) ** 0.8,
    }


def item_texts(items: dict[str, np.ndarray], distinct: bool = False) -> tuple[list[str], list[str]]:
    """Each item's (title, text), naming its adjective, colour, shape and topic. The vocabulary gives
    3,840 texts, so large catalogues repeat them (the encoder sees each once); ``distinct`` adds
    the item's model number, one text per item as in a real catalogue."""
    color_names = list(COLORS)
    titles, texts = [], []
    for i, c, s, t, a in zip(items["item_id"], items["color"], items["shape"], items["topic"], items["adjective"]):
        titles.append(f"{ADJECTIVES[a].title()} {color_names[c]} {SHAPES[s]}")
        texts.append(f"A {ADJECTIVES[a]} {color_names[c]} {SHAPES[s]} for {TOPICS[t]} lovers."
                     + (f" Model {i:06d}." if distinct else ""))
    return titles, texts


def draw_image(path: Path, color: int, shape: int, rng: np.random.Generator, size: int = 128) -> None:
    """Draw the item's shape in its colour on a random light background and save a ``size`` x ``size`` PNG at ``path``."""
    from PIL import Image, ImageDraw

    background = tuple(int(v) for v in rng.integers(200, 256, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    fill = list(COLORS.values())[color]
    m = int(rng.integers(10, 30))
    box = (m, m, size - m, size - m)
    name = SHAPES[shape]
    if name == "circle":
        draw.ellipse(box, fill=fill)
    elif name == "square":
        draw.rectangle(box, fill=fill)
    elif name == "triangle":
        draw.polygon([(size // 2, m), (size - m, size - m), (m, size - m)], fill=fill)
    elif name == "ring":
        draw.ellipse(box, outline=fill, width=12)
    elif name == "cross":
        draw.rectangle((size // 2 - 10, m, size // 2 + 10, size - m), fill=fill)
        draw.rectangle((m, size // 2 - 10, size - m, size // 2 + 10), fill=fill)
    else:  # star
        c, r_out, r_in = size / 2, size / 2 - m, (size / 2 - m) / 2.5
        points = [(c + (r_out if k % 2 == 0 else r_in) * np.sin(k * np.pi / 5), c - (r_out if k % 2 == 0 else r_in) * np.cos(k * np.pi / 5)) for k in range(10)]
        draw.polygon(points, fill=fill)
    image.save(path, format="PNG")


def click_logit(user_color: np.ndarray, user_shape: np.ndarray, color: np.ndarray, shape: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """The planted signal: content that matches the user's taste is clicked far more often."""
    return -1.6 + 2.2 * (user_color == color) + 1.4 * (user_shape == shape) + quality


def generate(out: Path, n_users: int, n_items: int, n_events: int, n_images: int, seed: int, distinct_texts: bool = False) -> dict:
    """Write items.parquet, events.parquet and the images under ``out``; returns a summary of counts and the positive rate.
    ``distinct_texts``: every item's text its own (see ``item_texts``); the events do not change."""
    out.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(seed)
    item_seed, user_seed, image_seed, *chunk_seeds = seeds.spawn(3 + (n_events + CHUNK - 1) // CHUNK)
    items = make_items(n_items, np.random.default_rng(item_seed))
    user_rng = np.random.default_rng(user_seed)
    user_color = user_rng.integers(0, len(COLORS), n_users)
    user_shape = user_rng.integers(0, len(SHAPES), n_users)

    image_dir = out / "images"
    image_dir.mkdir(exist_ok=True)
    image_rng = np.random.default_rng(image_seed)
    image_uris: list[str | None] = [None] * n_items
    for i in tqdm(range(min(n_images, n_items)), desc="drawing images", unit="img", disable=n_images < 500):
        path = image_dir / f"{items['item_id'][i]}.png"
        draw_image(path, int(items["color"][i]), int(items["shape"][i]), image_rng)
        image_uris[i] = str(path.resolve())
    titles, texts = item_texts(items, distinct_texts)
    pq.write_table(pa.table({
        "item_id": items["item_id"],
        "title": titles,
        "text": texts,
        "image_uri": pa.array(image_uris, pa.string()),
        "updated_at": pa.array(np.full(n_items, int(START.timestamp() * 1e6) - SPAN_US // 10), pa.timestamp("us", tz="UTC")),
    }), out / "items.parquet")

    probability = items["popularity"] / items["popularity"].sum()
    by_color = [np.flatnonzero(items["color"] == k) for k in range(len(COLORS))]  # items of each colour
    positives = 0
    with pq.ParquetWriter(out / "events.parquet", EVENTS.arrow()) as writer:
        for c, chunk_seed in enumerate(tqdm(chunk_seeds, desc="events", unit="M rows", disable=len(chunk_seeds) < 3)):
            rng = np.random.default_rng(chunk_seed)
            n = min(CHUNK, n_events - c * CHUNK)
            users = rng.integers(0, n_users, n)
            # Users see mostly popular items, and a share of items in their favourite colour.
            shown = rng.choice(n_items, n, p=probability)
            same_color = np.flatnonzero(rng.random(n) < 0.3)
            for k, members in enumerate(by_color):
                rows = same_color[user_color[users[same_color]] == k]
                if len(members) and len(rows):
                    shown[rows] = rng.choice(members, len(rows))
            logit = click_logit(user_color[users], user_shape[users], items["color"][shown], items["shape"][shown], items["quality"][shown])
            label = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int32)
            positives += int(label.sum())
            stamp = int(START.timestamp() * 1e6) + rng.integers(0, SPAN_US, n)
            writer.write_table(pa.table({
                "user_id": users.astype(np.int64) + 1,
                "item_id": items["item_id"][shown],
                "event_timestamp": pa.array(stamp, pa.timestamp("us", tz="UTC")),
                "label": label,
            }, schema=EVENTS.arrow()))
    return {"users": n_users, "items": n_items, "events": n_events, "images": min(n_images, n_items),
            "positive_rate": positives / max(n_events, 1)}


def main(argv: list[str] | None = None) -> int:
    """``mmfs synth``: generate a synthetic data set (at most 10M events). Returns 0."""
    parser = argparse.ArgumentParser(prog="mmfs synth", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=5_000)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--images", type=int, default=1_000, help="items that get a drawn image (the rest have none)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--distinct-texts", action="store_true",
                        help="one text per item (a model number added): the vocabulary alone gives 3,840 texts")
    args = parser.parse_args(argv)
    if args.events > 10_000_000:
        parser.error("--events is capped at 10M")
    start = time.perf_counter()
    summary = generate(Path(args.out), args.users, args.items, args.events, args.images, args.seed, args.distinct_texts)
    print(f"synth: {summary} in {time.perf_counter() - start:.1f}s -> {args.out}/items.parquet, {args.out}/events.parquet")
    return 0


if __name__ == "__main__":
    sys.exit(main())
