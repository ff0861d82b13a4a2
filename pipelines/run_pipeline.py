"""pipeline: ingest -> encode_items -> user_sequences -> target_similarity in one Spark session.

    mmfs pipeline --source movielens --input data/movielens-small --out out/movielens

Options after ``--`` in ``--encode-args`` style are not needed: each stage takes its defaults;
run the stages one by one for finer control.
"""
from __future__ import annotations

import argparse
import sys
import time

from rich.console import Console

from pipelines import encode_items, ingest, target_similarity, user_sequences

console = Console()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmfs pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", choices=["movielens", "files"], required=True)
    parser.add_argument("--input", help="MovieLens folder (source=movielens)")
    parser.add_argument("--items", help="items CSV/parquet (source=files)")
    parser.add_argument("--events", help="events CSV/parquet (source=files)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-users", type=int, default=None)
    parser.add_argument("--image-model", default=None, help="passed to encode-items")
    parser.add_argument("--max-len", type=int, default=user_sequences.DEFAULT_MAX_LEN)
    parser.add_argument("--master", default=None)
    args = parser.parse_args(argv)

    common = ["--master", args.master] if args.master else []
    ingest_args = ["--source", args.source, "--out", args.out] + common
    for flag, value in (("--input", args.input), ("--items", args.items), ("--events", args.events), ("--max-users", args.max_users)):
        if value is not None:
            ingest_args += [flag, str(value)]
    encode_args = ["--root", args.out] + common + (["--image-model", args.image_model] if args.image_model else [])
    stages = [
        ("ingest", ingest.main, ingest_args),
        ("encode_items", encode_items.main, encode_args),
        ("user_sequences", user_sequences.main, ["--root", args.out, "--max-len", str(args.max_len)] + common),
        ("target_similarity", target_similarity.main, ["--root", args.out] + common),
    ]
    timings = []
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
