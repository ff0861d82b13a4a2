"""Row rules, quarantine, and great-expectations validation of every table.

A rule is one Spark SQL predicate that is true for valid rows. The same predicate splits rows
into good and quarantined (in Spark, nothing collected to the driver) and becomes a
great-expectations ``UnexpectedRowsExpectation`` that validates the table before and after the
split, so the report and the quarantine can never disagree.
"""
from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from pipelines.spark.schemas import QUARANTINE_SCHEMA, columns

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
def _ge_context():
    """One in-memory great-expectations context per process, without progress bars."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    return context


def ge_validate(df: DataFrame, table_rules: TableRules, stage: str) -> ValidationReport:
    """Run the table's rules as a great-expectations suite on a Spark DataFrame."""
    import great_expectations as gx

    context = _ge_context()
    source = context.data_sources.add_or_update_spark(name=f"mmfs_{table_rules.table}_{stage}")
    asset = source.add_dataframe_asset(name=table_rules.table)
    batch = asset.add_batch_definition_whole_dataframe("whole").get_batch(batch_parameters={"dataframe": df})
    suite = gx.ExpectationSuite(name=f"{table_rules.table}_{stage}")
    by_description: dict[str, Rule] = {}
    for rule in table_rules.rules:
        suite.add_expectation(
            gx.expectations.UnexpectedRowsExpectation(
                unexpected_rows_query=f"SELECT * FROM {{batch}} WHERE NOT coalesce(({rule.valid_sql}), false)",
                description=rule.name,
            )
        )
        by_description[rule.name] = rule
    if table_rules.unique_key:
        keys = ", ".join(table_rules.unique_key)
        suite.add_expectation(
            gx.expectations.UnexpectedRowsExpectation(
                unexpected_rows_query=f"SELECT {keys} FROM {{batch}} GROUP BY {keys} HAVING count(*) > 1",
                description="duplicate_key",
            )
        )
        by_description["duplicate_key"] = Rule("duplicate_key", "", f"({keys}) must be unique")
    suite = context.suites.add_or_update(suite)
    result = batch.validate(suite, result_format="SUMMARY")
    report = ValidationReport(table=table_rules.table, stage=stage, rows=df.count())
    for r in result.results:
        name = r.expectation_config.description
        observed = r.result.get("observed_value", 0)
        failed = int(observed) if isinstance(observed, (int, float)) else 0
        if not r.success and failed == 0:
            failed = -1  # the expectation itself errored; reported, never counted as a pass
            log.error("expectation %s on %s raised: %s", name, table_rules.table, r.exception_info)
        report.results.append(RuleResult(name, by_description[name].reason, failed))
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
