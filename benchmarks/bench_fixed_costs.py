"""Fixed costs (issue 17): what each Spark job and ``mmfs apply`` cost beyond their data.

    python -m benchmarks.bench_fixed_costs [--events 200]   # also run by make bench (bench_pipelines)

Measured side by side in one run, in one process as ``mmfs pipeline`` runs the jobs:
- the session start (JVM, with great-expectations imported meanwhile, as ``mmfs pipeline`` does);
- each job on a tiny input (``--events`` events): its wall time there is its fixed cost, since
  the data takes next to nothing; first run (what ``mmfs pipeline`` pays) and a second run in the
  same session (what a re-run pays), against the 5 s goal;
- great-expectations validation per table: the per-expectation path this replaced (one
  expectation per rule plus one for the key, then a count) against today's one expectation, on
  the same cached tables, with the reports compared;
- ``mmfs apply`` on the tiny table set, each as its own process: today's, the earlier route
  (features.py parsed in-process for the drift check, then the ``feast apply`` CLI in a second
  interpreter), and the floor of any route, ``python -c "import feast"``.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.resources import machine_description, write_section

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Fixed costs: Spark jobs and mmfs apply"
END = "<!-- end fixed-costs section -->"
GOAL_S = 5.0
# The route `mmfs apply` took before it ran Feast's apply in-process (kept here to measure against).
OLD_APPLY = """
import sys
from mmfs.store import feast_store as f
from mmfs.store.repo import PACKAGED_REPO as REPO
fs_yaml = f.yaml_path("duckdb", REPO)
f.encoders_file.write(f.encoders_file.encoders_path(REPO, sys.argv[1], True), sys.argv[1])
f.assert_no_drift(f.declared_views(REPO, sys.argv[1], fs_yaml))
f.feast_cli(["apply"], "duckdb", REPO, sys.argv[1])
"""


def per_expectation_validate(df, table_rules, stage: str):
    """The validation this issue replaced: one UnexpectedRowsExpectation per rule and one for the
    key, then ``df.count()``; each expectation runs its query twice (rows and row count)."""
    import great_expectations as gx

    from mmfs.pipelines.spark.validation import RuleResult, ValidationReport, ge_context

    context = ge_context()
    source = context.data_sources.add_or_update_spark(name=f"old_{table_rules.table}_{stage}")
    batch = source.add_dataframe_asset(name=table_rules.table).add_batch_definition_whole_dataframe("whole").get_batch(
        batch_parameters={"dataframe": df})
    suite = gx.ExpectationSuite(name=f"old_{table_rules.table}_{stage}")
    reasons = {}
    for rule in table_rules.rules:
        suite.add_expectation(gx.expectations.UnexpectedRowsExpectation(
            unexpected_rows_query=f"SELECT * FROM {{batch}} WHERE NOT coalesce(({rule.valid_sql}), false)",
            description=rule.name))
        reasons[rule.name] = rule.reason
    if table_rules.unique_key:
        keys = ", ".join(table_rules.unique_key)
        suite.add_expectation(gx.expectations.UnexpectedRowsExpectation(
            unexpected_rows_query=f"SELECT {keys} FROM {{batch}} GROUP BY {keys} HAVING count(*) > 1",
            description="duplicate_key"))
        reasons["duplicate_key"] = f"({keys}) must be unique"
    result = batch.validate(context.suites.add_or_update(suite), result_format="SUMMARY")
    report = ValidationReport(table=table_rules.table, stage=stage, rows=df.count())
    for r in result.results:
        observed = r.result.get("observed_value", 0)
        failed = int(observed) if isinstance(observed, (int, float)) else 0
        name = r.expectation_config.description
        report.results.append(RuleResult(name, reasons[name], failed if r.success or failed else -1))
    return report


def job_stages(raw: Path, out: str) -> list[tuple[str, object, list[str]]]:
    from mmfs.pipelines.jobs import encode_items, ingest, item_stats, target_similarity, user_sequences, user_stats

    return [
        ("ingest", ingest.main, ["--source", "files", "--items", f"{raw}/items.parquet", "--events", f"{raw}/events.parquet", "--out", out]),
        ("encode_items", encode_items.main, ["--root", out]),
        ("user_sequences", user_sequences.main, ["--root", out]),
        ("item_stats", item_stats.main, ["--root", out]),
        ("user_stats", user_stats.main, ["--root", out]),
        ("target_similarity", target_similarity.main, ["--root", out]),
    ]


def run_jobs(raw: Path, out: str, rounds: int) -> dict[str, list[float]]:
    """Each job's wall seconds per round, all in the one session already started."""
    seconds: dict[str, list[float]] = {}
    for _ in range(rounds):
        for name, main, argv in job_stages(raw, out):
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                main(argv)
            seconds.setdefault(name, []).append(time.perf_counter() - start)
    return seconds


def validated_tables(spark, out: str) -> list[tuple[object, object]]:
    """(cached table, its output rules) for every table the jobs wrote."""
    from mmfs.pipelines.jobs import encode_items, ingest, item_stats, target_similarity, user_sequences, user_stats
    from mmfs.pipelines.spark.table_io import read_meta, read_table

    identity = read_meta(spark, f"{out}/item_embeddings")["encoder_identity"]
    image_dim = identity["image"] and identity["image"]["dim"]
    rules = {"items": ingest.canonical_item_rules(), "events": ingest.canonical_event_rules(),
             **user_sequences.output_rules(user_sequences.DEFAULT_MAX_LEN),
             "item_stats": item_stats.output_rules(), "user_stats": user_stats.output_rules(),
             "target_similarity": target_similarity.output_rules(),
             "item_embeddings": encode_items.embedding_rules(identity["text"]["dim"], image_dim, identity["mm_dim"])}
    tables = []
    for name, table_rules in rules.items():
        df = read_table(spark, f"{out}/{name}").persist()
        df.count()
        tables.append((df, table_rules))
    return tables


def compare_validation(spark, out: str) -> list[dict]:
    from mmfs.pipelines.spark.validation import ge_validate

    rows = []
    for df, table_rules in validated_tables(spark, out):
        per_expectation_validate(df, table_rules, "output")  # both paths' one-off set-up out of the figures
        ge_validate(df, table_rules, "output")
        timed = {}
        for label, validate in (("before", per_expectation_validate), ("after", ge_validate)):
            start = time.perf_counter()
            report = validate(df, table_rules, "output")
            timed[label] = (time.perf_counter() - start, report)
        same = timed["before"][1].to_dict() == timed["after"][1].to_dict()
        rows.append({"table": table_rules.table, "rules": len(table_rules.rules) + bool(table_rules.unique_key),
                     "before_s": timed["before"][0], "after_s": timed["after"][0], "same_report": same})
        df.unpersist()
    return rows


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def apply_times(root: str) -> dict[str, float]:
    """Wall seconds of each route as its own process (``_feast`` removed first: the first apply creates the store)."""
    python = sys.executable
    mmfs = [str(Path(python).parent / "mmfs"), "apply", "--root", root]
    shutil.rmtree(f"{root}/_feast", ignore_errors=True)
    times = {"mmfs apply, first (creates the registry)": wall(mmfs), "mmfs apply, again (no changes)": wall(mmfs)}
    shutil.rmtree(f"{root}/_feast", ignore_errors=True)
    times["before: drift check in-process + `feast apply` CLI, first"] = wall([python, "-c", OLD_APPLY, root])
    times["before: again (no changes)"] = wall([python, "-c", OLD_APPLY, root])
    times["floor: python -c 'import feast'"] = wall([python, "-c", "import feast"])
    wall(mmfs)  # leave the store as today's apply writes it
    return times


def met(seconds: float) -> str:
    return "met" if seconds <= GOAL_S else "**not met**"


def report(session_s: float, jobs: dict[str, list[float]], validation: list[dict], applies: dict[str, float], events: int) -> str:
    lines = [SECTION, "", f"Measured {dt.date.today().isoformat()} on {machine_description()}, "
             "`python -m benchmarks.bench_fixed_costs`.", "",
             f"Spark session start (JVM; great-expectations imported meanwhile, as `mmfs pipeline` does): {session_s:.1f} s.",
             "", f"Each job on a tiny input ({events} events, text-only items), in that one session: its wall time is its fixed cost.",
             "", "| job | first run s | second run s | goal ≤ 5 s (first run) |", "|---|---:|---:|---|"]
    for name, seconds in jobs.items():
        lines.append(f"| {name} | {seconds[0]:.1f} | {seconds[-1]:.1f} | {met(seconds[0])} |")
    lines += ["", "great-expectations validation per table (cached table, warm), the per-expectation path it replaced "
              "against one expectation per table:", "",
              "| table | rules (key included) | before s | after s | same report |", "|---|---:|---:|---:|---|"]
    for r in validation:
        lines.append(f"| {r['table']} | {r['rules']} | {r['before_s']:.2f} | {r['after_s']:.2f} | {'yes' if r['same_report'] else '**no**'} |")
    lines += ["", "`mmfs apply` on that table set, each as its own process:", "", "| route | wall s | goal ≤ 5 s |", "|---|---:|---|"]
    for label, seconds in applies.items():
        lines.append(f"| {label} | {seconds:.1f} | {met(seconds) if label.startswith('mmfs') else ''} |")
    lines += ["", END, ""]
    return "\n".join(lines)


def run(work: Path, events: int, rounds: int = 2) -> tuple[str, dict]:
    """Measure everything above under ``work``; returns (the markdown section, the figures)."""
    from mmfs.pipelines import synth
    from mmfs.pipelines.jobs.run_pipeline import start_session
    from mmfs.pipelines.spark.session import build_spark

    raw = work / "fixed_raw"
    synth.generate(raw, n_users=max(1, events // 10), n_items=max(2, events // 5), n_events=events, n_images=0, seed=5)
    out = str(work / "fixed_tables")
    session_s = start_session(None)
    jobs = run_jobs(raw, out, rounds)
    validation = compare_validation(build_spark("mmfs-bench"), out)
    applies = apply_times(out)
    figures = {"session_s": session_s, "jobs": jobs, "validation": validation, "apply": applies}
    return report(session_s, jobs, validation, applies, events), figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default=str(ROOT / "bench_out" / "fixed_costs"))
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--report", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args(argv)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    text, _ = run(work, args.events)
    write_section(Path(args.report), text, SECTION, END)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
