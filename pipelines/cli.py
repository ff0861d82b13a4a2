"""``mmfs``: one command, a subcommand per job.

    mmfs ingest --source movielens --input data/movielens-small --out out/movielens
    mmfs encode-items --root out/movielens
    mmfs user-sequences --root out/movielens
    mmfs target-similarity --root out/movielens
    mmfs item-stats --root out/movielens
    mmfs user-stats --root out/movielens
    mmfs pipeline --source movielens --input data/movielens-small --out out/movielens   # all of the above
    mmfs synth --out data/synth --events 1000000
    mmfs apply --root out/movielens [--config duckdb|spark|redis]   # check tables, then `feast apply`
    mmfs training-set --root out/movielens --service ctr_dmf_v1
    mmfs materialize --root out/movielens [--config redis] [--end 2018-10-01T00:00:00Z]
    mmfs ui --root out/movielens [--port 8888]                      # Feast's web UI on 127.0.0.1
    mmfs train --model dmf --training-set out/movielens/training_sets/ctr_dmf_v1 --out out/models/dmf
    mmfs online-read --root out/movielens --user 414 --at 2018-10-01T00:00:00Z
    mmfs parity --root out/movielens --at 2018-10-01T00:00:00Z [--config redis]
    mmfs stream --root out/movielens [--available-now]               # the event log -> online store + tables
    mmfs consistency --root out/movielens                           # served features vs offline, drift

The Spark job subcommands take the same options as ``spark-submit pipelines/jobs/<job>.py``.
"""
from __future__ import annotations

import importlib
import sys

JOBS = {
    "ingest": "pipelines.jobs.ingest",
    "encode-items": "pipelines.jobs.encode_items",
    "user-sequences": "pipelines.jobs.user_sequences",
    "item-stats": "pipelines.jobs.item_stats",
    "user-stats": "pipelines.jobs.user_stats",
    "target-similarity": "pipelines.jobs.target_similarity",
    "pipeline": "pipelines.jobs.run_pipeline",
    "synth": "pipelines.synth",
    "apply": "pipelines.store.feast_store:main_apply",
    "materialize": "pipelines.store.feast_store:main_materialize",
    "ui": "pipelines.store.feast_store:main_ui",
    "training-set": "pipelines.store.training_set",
    "parity": "serving.parity",
    "online-read": "serving.online",
    "serve": "serving.app:main",
    "stream": "streaming.job",
    "consistency": "pipelines.jobs.consistency",
    "try-serve": "serving.try_http:main",
    "train": "model.train",
    "model-report": "model.report",
}


def main(argv: list[str] | None = None) -> int:
    """Run the ``mmfs`` subcommand named by ``argv[0]`` with the rest of ``argv``; returns its exit code.

    Prints the usage and returns 2 for an unknown subcommand; a table-read, store-root or schema
    drift error is printed to stderr and returns 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in JOBS:
        print(__doc__)
        print("subcommands: " + ", ".join(JOBS))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module, _, function = JOBS[argv[0]].partition(":")
    job = importlib.import_module(module)
    from pipelines.store.feast_store import SchemaDriftError, StoreRootMismatch
    from pipelines.spark.table_io import TableReadError

    try:
        return int(getattr(job, function or "main")(argv[1:]) or 0)
    except (TableReadError, StoreRootMismatch, SchemaDriftError) as exc:
        print(f"mmfs {argv[0]}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
