"""pipeline: ingest -> encode_items -> user_sequences -> item_stats -> user_stats -> target_similarity in one Spark session.

    mmfs pipeline --source movielens --input data/movielens-small --out out/movielens

Each stage runs with its defaults; run the stages one by one (``mmfs ingest`` ...) for finer control.
Then ``mmfs apply``, ``mmfs training-set`` and ``mmfs materialize`` take the tables into Feast.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time

from rich.console import Console

from mmfs.pipelines.jobs import encode_items, ingest, item_stats, target_similarity, user_sequences, user_stats
from mmfs.pipelines.spark.session import build_spark
from mmfs.pipelines.spark.validation import ge_context

console = Console()


def start_session(master: str | None) -> float:
    """Start the one session every stage then reuses, and import great-expectations (several seconds)
    meanwhile, while the JVM starts, instead of inside the first validation. Returns the seconds taken."""
    start = time.perf_counter()
    ge_ready = threading.Thread(target=ge_context, name="mmfs-ge-context", daemon=True)
    ge_ready.start()
    build_spark("mmfs-pipeline", master=master)
    ge_ready.join()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """``mmfs pipeline``: run every Spark stage in order with its defaults and print each stage's time. Returns 0."""
    parser = argparse.ArgumentParser(prog="mmfs pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ingest.add_source_args(parser)
    parser.add_argument("--image-model", default=None, help="passed to encode-items")
    parser.add_argument("--max-len", type=int, default=user_sequences.DEFAULT_MAX_LEN)
    parser.add_argument("--master", default=None)
    args = parser.parse_args(argv)

    common = ["--master", args.master] if args.master else []
    ingest_args = ingest.source_argv(args) + common
    encode_args = ["--root", args.out] + common + (["--image-model", args.image_model] if args.image_model else [])
    stages = [
        ("ingest", ingest.main, ingest_args),
        ("encode_items", encode_items.main, encode_args),
        ("user_sequences", user_sequences.main, ["--root", args.out, "--max-len", str(args.max_len)] + common),
        ("item_stats", item_stats.main, ["--root", args.out] + common),
        ("user_stats", user_stats.main, ["--root", args.out] + common),
        ("target_similarity", target_similarity.main, ["--root", args.out] + common),
    ]
    timings = [("spark session", start_session(args.master))]
    for i, (name, run, stage_args) in enumerate(stages, start=1):
        console.rule(f"[bold]stage {i}/{len(stages)}: {name}")
        start = time.perf_counter()
        run(stage_args)
        timings.append((name, time.perf_counter() - start))
    console.rule("[bold]done")
    for name, seconds in timings:
        console.print(f"{name:<20} {seconds:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
