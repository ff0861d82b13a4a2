"""``mmfs``: one command, a subcommand per job. The top floor: it composes every package below.

    mmfs ingest --source movielens --input data/movielens-small --out out/movielens
    mmfs encode-items --root out/movielens
    mmfs user-sequences --root out/movielens
    mmfs target-similarity --root out/movielens
    mmfs item-stats --root out/movielens
    mmfs user-stats --root out/movielens
    mmfs pipeline --source movielens --input data/movielens-small --out out/movielens   # all of the above
    mmfs synth --out data/synth --events 1000000
    mmfs init my_repo                                                # mmfs's Feast repo, yours to keep
    mmfs apply --root out/movielens [--repo my_repo] [--config duckdb|spark|redis]   # check tables, then `feast apply`
    mmfs training-set --root out/movielens --service ctr_dmf_v1
    mmfs materialize --root out/movielens [--config redis] [--end 2018-10-01T00:00:00Z]
    mmfs ui --root out/movielens [--port 8888]                      # Feast's web UI on 127.0.0.1
    mmfs train --model dmf --training-set out/movielens/training_sets/ctr_dmf_v1 --out out/models/dmf
    mmfs online-read --root out/movielens --user 414 --at 2018-10-01T00:00:00Z
    mmfs parity --root out/movielens --at 2018-10-01T00:00:00Z [--config redis]
    mmfs serve --checkpoint out/models/dmf/checkpoint.pt --root out/movielens
    mmfs stream --root out/movielens [--available-now]               # the event log -> online store + tables
    mmfs consistency --root out/movielens                           # served features vs offline, drift

Every command that opens the Feast store takes ``--repo``; without it, the repo ``mmfs apply``
recorded for ``--root``, else the packaged one. The Spark job subcommands take the same options as
``spark-submit pipelines/jobs/<job>.py``.

Each subcommand imports its module when it runs (Spark, Feast and torch load only for the
commands that use them), with a plain import, so the arrows below show in the code.
"""
from __future__ import annotations

import sys
from typing import Callable

Main = Callable[[list[str]], int]


def _ingest() -> Main:
    from mmfs.pipelines.jobs import ingest
    return ingest.main


def _encode_items() -> Main:
    from mmfs.pipelines.jobs import encode_items
    return encode_items.main


def _user_sequences() -> Main:
    from mmfs.pipelines.jobs import user_sequences
    return user_sequences.main


def _item_stats() -> Main:
    from mmfs.pipelines.jobs import item_stats
    return item_stats.main


def _user_stats() -> Main:
    from mmfs.pipelines.jobs import user_stats
    return user_stats.main


def _target_similarity() -> Main:
    from mmfs.pipelines.jobs import target_similarity
    return target_similarity.main


def _pipeline() -> Main:
    from mmfs.pipelines.jobs import run_pipeline
    return run_pipeline.main


def _synth() -> Main:
    from mmfs.pipelines import synth
    return synth.main


def _implicit() -> Main:
    from mmfs.pipelines import implicit
    return implicit.main


def _init() -> Main:
    from mmfs.store import repo
    return repo.main_init


def _apply() -> Main:
    from mmfs.store import feast_store
    return feast_store.main_apply


def _materialize() -> Main:
    from mmfs.store import feast_store
    return feast_store.main_materialize


def _ui() -> Main:
    from mmfs.store import feast_store
    return feast_store.main_ui


def _training_set() -> Main:
    from mmfs.store import training_set
    return training_set.main


def _train() -> Main:
    from mmfs.model import train
    return train.main


def _model_report() -> Main:
    from mmfs.model import report
    return report.main


def _online_read() -> Main:
    from mmfs.online import inspect
    return inspect.main


def _serve() -> Main:
    from mmfs.serving import app
    return app.main


def _try_serve() -> Main:
    from mmfs.serving import try_http
    return try_http.main


def _stream() -> Main:
    from mmfs.streaming import job
    return job.main


def _parity() -> Main:
    from mmfs.checks import parity
    return parity.main


def _consistency() -> Main:
    from mmfs.checks import consistency
    return consistency.main


COMMANDS: dict[str, Callable[[], Main]] = {
    "ingest": _ingest,
    "encode-items": _encode_items,
    "user-sequences": _user_sequences,
    "item-stats": _item_stats,
    "user-stats": _user_stats,
    "target-similarity": _target_similarity,
    "pipeline": _pipeline,
    "synth": _synth,
    "implicit": _implicit,
    "init": _init,
    "apply": _apply,
    "materialize": _materialize,
    "ui": _ui,
    "training-set": _training_set,
    "train": _train,
    "model-report": _model_report,
    "online-read": _online_read,
    "serve": _serve,
    "try-serve": _try_serve,
    "stream": _stream,
    "parity": _parity,
    "consistency": _consistency,
}


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix (a table unreadable, a store applied for another root, a
    drifted schema, a repo not found): one line on stderr and exit 2, not a traceback."""
    from mmfs.store.feast_store import SchemaDriftError, StoreRootMismatch
    from mmfs.pipelines.spark.table_io import TableReadError
    from mmfs.store.repo import NoStateDir, RepoNotFound
    from mmfs.store.training_set import EncoderIdentityError

    return TableReadError, StoreRootMismatch, SchemaDriftError, RepoNotFound, NoStateDir, FileExistsError, EncoderIdentityError


def main(argv: list[str] | None = None) -> int:
    """Run the ``mmfs`` subcommand named by ``argv[0]`` with the rest of ``argv``; returns its exit code.

    Prints the usage and returns 2 for an unknown subcommand; a user error (``_user_errors``) is
    printed to stderr and returns 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print(__doc__)
        print("subcommands: " + ", ".join(COMMANDS))
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    command = COMMANDS[argv[0]]()
    try:
        return int(command(argv[1:]) or 0)
    except _user_errors() as exc:
        print(f"mmfs {argv[0]}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
