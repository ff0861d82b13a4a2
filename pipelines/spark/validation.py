"""Row rules, quarantine, and great-expectations validation of every table.

A rule is one Spark SQL predicate that is true for valid rows. The same predicate splits rows
into good and quarantined (in Spark, nothing collected to the driver) and is counted by the
table's one great-expectations ``UnexpectedRowsExpectation`` (all its rules and its key in one
pass) that validates the table before and after the split, so the report and the quarantine can
never disagree.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from mmfs.pipelines.spark.schemas import QUARANTINE_SCHEMA, columns

os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
log = logging.getLogger(__name__)

DEFAULT_MAX_INVALID_FRACTION = 0.05


@dataclass(frozen=True)
class Rule:
    """One row rule: a name, a Spark SQL predicate true for valid rows, and the reason shown for failures."""

    name: str
    valid_sql: str  # Spark SQL, true for a valid row; null counts as invalid
    reason: str

    def invalid(self):
        """Column that is true for rows failing the rule (a null predicate counts as failing)."""
        return ~F.coalesce(F.expr(self.valid_sql), F.lit(False))


@dataclass(frozen=True)
class TableRules:
    """A table's rules and the key its rows must be unique on (empty: no uniqueness rule)."""

    table: str
    rules: tuple[Rule, ...]
    unique_key: tuple[str, ...] = ()


@dataclass
class RuleResult:
    """One rule's outcome: failed rows (-1 when the expectation itself errored)."""

    rule: str
    reason: str
    failed: int


@dataclass
class ValidationReport:
    """A table's rule results at one stage ("input" or "output")."""

    table: str
    stage: str  # "input" or "output"
    rows: int
    results: list[RuleResult] = field(default_factory=list)

    @property
    def failed_rows_by_rule(self) -> dict[str, int]:
        """Failed row count per rule name."""
        return {r.rule: r.failed for r in self.results}

    @property
    def success(self) -> bool:
        """True when every rule passed: no failed rows and no errored expectation."""
        return all(r.failed == 0 for r in self.results)

    def to_dict(self) -> dict:
        """The report as a JSON-ready dict (as kept in a table's metadata)."""
        return {
            "table": self.table,
            "stage": self.stage,
            "rows": self.rows,
            "success": self.success,
            "rules": [r.__dict__ for r in self.results],
        }


class ValidationError(RuntimeError):
    """A table failed its rules beyond the allowed fraction, or an output broke its contract."""


# -- rule helpers ------------------------------------------------------------------------------

def integral_sql(column: str) -> str:
    """SQL for the column's value as BIGINT when it is an integer (``12``, ``"12"``, ``12.0``), else null."""
    dec = f"try_cast(trim(cast({column} AS STRING)) AS DECIMAL(38, 6))"
    return f"CASE WHEN {dec} = floor({dec}) THEN try_cast({dec} AS BIGINT) END"


def unit_vector_rule(column: str, dim: int, tolerance: float = 1e-3, nullable: bool = False) -> Rule:
    """Rule: ``column`` holds ``dim`` finite floats with L2 norm 1 within ``tolerance`` (or is null, when ``nullable``)."""
    norm = f"sqrt(aggregate({column}, 0D, (acc, x) -> acc + cast(x AS DOUBLE) * x))"
    body = (
        f"size({column}) = {dim} AND forall({column}, x -> x IS NOT NULL AND NOT isnan(x) "
        f"AND abs(x) < double('Infinity')) AND abs({norm} - 1.0) <= {tolerance}"
    )
    if nullable:
        body = f"{column} IS NULL OR ({body})"
    return Rule(
        f"{column}_unit_{dim}d",
        body,
        f"{column} must hold {dim} finite floats with L2 norm 1 (+/-{tolerance})",
    )


# -- quarantine split --------------------------------------------------------------------------

def split_valid(df: DataFrame, table_rules: TableRules, raw_columns: list[str]) -> tuple[DataFrame, DataFrame]:
    """Return (good rows, quarantine rows). Every input row lands in exactly one of them.

    Among rows sharing ``unique_key`` one is kept (the first by all columns, so the choice is
    deterministic) and the others are quarantined as duplicates.
    """
    flagged = df
    failed_names = []
    for i, rule in enumerate(table_rules.rules):
        flagged = flagged.withColumn(f"_fail_{i}", rule.invalid())
        failed_names.append((rule, F.col(f"_fail_{i}")))
    any_failed = F.lit(False)
    for _, fail in failed_names:
        any_failed = any_failed | fail
    flagged = flagged.withColumn("_any_failed", any_failed)
    if table_rules.unique_key:
        order = [F.col(c).asc_nulls_last() for c in raw_columns]
        rank = Window.partitionBy(*[F.col(k) for k in table_rules.unique_key], F.col("_any_failed")).orderBy(*order)
        flagged = flagged.withColumn(
            "_duplicate", ~F.col("_any_failed") & (F.row_number().over(rank) > 1)
        )
    else:
        flagged = flagged.withColumn("_duplicate", F.lit(False))

    rule_names = F.concat_ws(
        ",",
        *[F.when(fail, F.lit(rule.name)) for rule, fail in failed_names],
        F.when(F.col("_duplicate"), F.lit("duplicate_key")),
    )
    reasons = F.concat_ws(
        "; ",
        *[F.when(fail, F.lit(rule.reason)) for rule, fail in failed_names],
        F.when(
            F.col("_duplicate"),
            F.lit(f"another row has the same key ({', '.join(table_rules.unique_key)}); one was kept"),
        ),
    )
    is_bad = F.col("_any_failed") | F.col("_duplicate")
    flagged = flagged.persist()
    good = flagged.filter(~is_bad).drop(*[c for c in flagged.columns if c.startswith("_fail_")], "_any_failed", "_duplicate")
    quarantine = flagged.filter(is_bad).select(
        F.lit(table_rules.table).alias("table"),
        rule_names.alias("rule"),
        reasons.alias("reason"),
        F.to_json(F.struct(*[F.col(c) for c in raw_columns])).alias("row_json"),
        F.current_timestamp().alias("quarantined_at"),
    ).select(*columns(QUARANTINE_SCHEMA))
    return good, quarantine


def check_threshold(
    table: str, total: int, quarantine: DataFrame, max_invalid_fraction: float
) -> dict[str, int]:
    """Count quarantined rows per rule; fail with samples when too many rows were bad."""
    counts = {r["rule"]: r["count"] for r in quarantine.groupBy("rule").count().collect()}
    bad = sum(counts.values())
    if total and bad / total > max_invalid_fraction:
        samples = [
            f"  [{r['rule']}] {r['reason']}: {r['row_json']}"
            for r in quarantine.orderBy("rule", "row_json").limit(5).collect()
        ]
        raise ValidationError(
            f"table '{table}': {bad} of {total} rows ({bad / total:.1%}) failed validation, "
            f"more than the allowed {max_invalid_fraction:.1%}.\n"
            f"failed rows by rule: {counts}\nsample offending rows:\n" + "\n".join(samples)
        )
    return counts


# -- great-expectations ------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def ge_context():
    """One in-memory great-expectations context per process, without progress bars (importing
    great-expectations alone takes seconds: ``mmfs pipeline`` does it while the JVM starts)."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


@functools.lru_cache(maxsize=None)
def _ge_batch_definition(table: str, stage: str):
    """The whole-dataframe batch definition of one table at one stage, made once per process (a job
    run again in the same ``mmfs pipeline`` or test session reuses it)."""
    source = ge_context().data_sources.add_or_update_spark(name=f"mmfs_{table}_{stage}")
    return source.add_dataframe_asset(name=table).add_batch_definition_whole_dataframe("whole")


DUPLICATE_KEY = "duplicate_key"


def _sql_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def failed_counts_query(table_rules: TableRules) -> str:
    """One Spark SQL query over ``{batch}`` for all of a table's rules, in one pass over its rows.

    It returns one row ``(rule, failed)`` per rule that some rows fail (``failed``: those rows), and
    a ``duplicate_key`` row with the number of keys held by more than one row; no rows when the
    table is valid. Failing a rule means what ``Rule.invalid`` means: a null predicate fails.
    """
    fails = [f"count_if(NOT coalesce(({rule.valid_sql}), false)) AS _f{i}" for i, rule in enumerate(table_rules.rules)]
    pairs = [f"{_sql_string(rule.name)}, CAST(_f{i} AS BIGINT)" for i, rule in enumerate(table_rules.rules)]
    if table_rules.unique_key:
        keys = ", ".join(table_rules.unique_key)
        # Per key first: its row count gives the duplicates, its partial rule counts add up to the table's.
        per_key = f"SELECT count(*) AS _n, {', '.join(fails) or '0 AS _unused'} FROM {{batch}} GROUP BY {keys}"
        totals = ", ".join([f"coalesce(sum(_f{i}), 0) AS _f{i}" for i in range(len(table_rules.rules))]
                           + ["count_if(_n > 1) AS _dup"])
        counts = f"SELECT {totals} FROM ({per_key}) AS per_key"
        pairs.append(f"{_sql_string(DUPLICATE_KEY)}, CAST(_dup AS BIGINT)")
    else:
        counts = f"SELECT {', '.join(fails)} FROM {{batch}}"
    return (f"SELECT rule, failed FROM (SELECT stack({len(pairs)}, {', '.join(pairs)}) AS (rule, failed) "
            f"FROM ({counts}) AS counts) AS by_rule WHERE failed > 0")


def _raised(exception_info) -> bool:
    """Whether a great-expectations ``exception_info`` (flat, or keyed by metric) records a raised exception."""
    if not isinstance(exception_info, dict):
        return False
    if "raised_exception" in exception_info:
        return bool(exception_info["raised_exception"])
    return any(_raised(info) for info in exception_info.values())


def _observed_rows(rows_seen, df: DataFrame) -> int:
    """The row count the validation pass observed; counted anew only when Spark emitted no metrics
    row (an input with no partitions: nothing to count)."""
    from py4j.protocol import Py4JJavaError

    try:
        return int(rows_seen.get["rows"])
    except Py4JJavaError:
        return df.count()


def _reasons(table_rules: TableRules) -> dict[str, str]:
    reasons = {rule.name: rule.reason for rule in table_rules.rules}
    if table_rules.unique_key:
        reasons[DUPLICATE_KEY] = f"({', '.join(table_rules.unique_key)}) must be unique"
    return reasons


def ge_validate(df: DataFrame, table_rules: TableRules, stage: str) -> ValidationReport:
    """Validate the table's rules with great-expectations: one ``UnexpectedRowsExpectation`` whose
    query (``failed_counts_query``) counts every rule's failed rows and the duplicate keys at once.

    The row count is observed on the same pass (a Spark ``Observation``), not counted again. When
    the expectation itself errors, every rule reports -1 (never a pass).
    """
    import great_expectations as gx
    from pyspark.sql import Observation

    if not table_rules.rules and not table_rules.unique_key:
        return ValidationReport(table=table_rules.table, stage=stage, rows=df.count())
    rows_seen = Observation(f"mmfs_rows_{table_rules.table}_{stage}")
    observed = df.observe(rows_seen, F.count(F.lit(1)).alias("rows"))
    batch = _ge_batch_definition(table_rules.table, stage).get_batch(batch_parameters={"dataframe": observed})
    expectation = gx.expectations.UnexpectedRowsExpectation(
        unexpected_rows_query=failed_counts_query(table_rules), description=f"{table_rules.table} rules")
    # COMPLETE: the result carries the query's rows (one per failing rule), not only their number.
    result = batch.validate(expectation, result_format="COMPLETE")
    reasons = _reasons(table_rules)
    found = (result.result or {}).get("details", {}).get("unexpected_rows")
    if _raised(result.exception_info) or found is None or (not result.success and not found):
        log.error("the expectations of %s (%s) raised: %s", table_rules.table, stage, result.exception_info)
        rows = df.count()
        failed = dict.fromkeys(reasons, -1)  # the expectation itself errored; reported, never counted as a pass
    else:
        rows = _observed_rows(rows_seen, df)
        failed = dict.fromkeys(reasons, 0)
        for row in found:
            failed[row["rule"]] = int(row["failed"])
    report = ValidationReport(table=table_rules.table, stage=stage, rows=rows)
    report.results = [RuleResult(name, reason, failed[name]) for name, reason in reasons.items()]
    return report


def validate_and_split(
    df: DataFrame,
    table_rules: TableRules,
    raw_columns: list[str],
    max_invalid_fraction: float = DEFAULT_MAX_INVALID_FRACTION,
) -> tuple[DataFrame, DataFrame, ValidationReport]:
    """Validate an input, quarantine its bad rows, fail past the threshold."""
    df = df.persist()
    report = ge_validate(df, table_rules, stage="input")
    good, quarantine = split_valid(df, table_rules, raw_columns)
    check_threshold(table_rules.table, report.rows, quarantine, max_invalid_fraction)
    return good, quarantine, report


def assert_valid_output(df: DataFrame, table_rules: TableRules) -> ValidationReport:
    """Validate a job's output; any failing row here is a bug, so the job stops before writing."""
    report = ge_validate(df, table_rules, stage="output")
    if not report.success:
        bad = {r.rule: r.failed for r in report.results if r.failed}
        raise ValidationError(f"output table '{table_rules.table}' broke its contract: {bad}")
    return report
