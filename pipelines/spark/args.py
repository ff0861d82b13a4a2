"""Command-line options every job shares: where Spark runs and how strict validation is."""
from __future__ import annotations

import argparse

from pyspark.sql import SparkSession

from mmfs.pipelines.spark.session import build_spark
from mmfs.pipelines.spark.validation import DEFAULT_MAX_INVALID_FRACTION


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add ``--master``, ``--conf KEY=VALUE`` and ``--max-invalid-fraction`` to ``parser``."""
    parser.add_argument("--master", default=None, help="Spark master URL (default: spark-submit's, else local[*])")
    parser.add_argument(
        "--conf", action="append", default=[], metavar="KEY=VALUE", help="extra Spark config, repeatable"
    )
    parser.add_argument(
        "--max-invalid-fraction",
        type=float,
        default=DEFAULT_MAX_INVALID_FRACTION,
        help="fail the job when more than this fraction of an input's rows is quarantined (default %(default)s)",
    )


def spark_from_args(args: argparse.Namespace, app_name: str) -> SparkSession:
    """The Spark session those options describe; exits on a ``--conf`` without ``=``."""
    conf = {}
    for item in args.conf:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--conf expects KEY=VALUE, got {item!r}")
        conf[key] = value
    return build_spark(app_name, master=args.master, conf=conf)
