"""ge_validate: all of a table's rules in one great-expectations expectation, counted per rule."""
import logging

from mmfs.pipelines.spark.validation import Rule, TableRules, assert_valid_output, failed_counts_query, ge_validate

ROWS = [  # (id, version, score)
    (1, 1, 0.5),
    (1, 1, 0.7),   # duplicate key (1, 1)
    (2, 1, -1.0),  # score out of range
    (3, 1, None),  # null score: the predicate is null, which counts as failing
    (3, 2, 2.0),   # out of range, and over the limit
    (4, 1, 0.1),
    (4, 1, 0.2),   # duplicate key (4, 1)
    (4, 1, 0.3),   # the same key a third time: still one duplicated key
]

RULES = TableRules(
    table="scores",
    rules=(
        Rule("score_in_range", "score >= 0 AND score <= 1", "score must lie in [0, 1]"),
        Rule("score_below_limit", "score < 1.5", "score must stay below 1.5"),
        Rule("id_positive", "id > 0", "id must be positive"),
    ),
    unique_key=("id", "version"),
)


def scores(spark, rows=ROWS):
    return spark.createDataFrame(rows, "id long, version long, score double")


def test_one_pass_counts_failed_rows_per_rule_and_duplicated_keys(spark):
    report = ge_validate(scores(spark), RULES, stage="output")
    assert report.table == "scores" and report.stage == "output"
    assert report.rows == 8
    assert report.failed_rows_by_rule == {"score_in_range": 3, "score_below_limit": 2, "id_positive": 0, "duplicate_key": 2}
    assert [r.reason for r in report.results] == [
        "score must lie in [0, 1]", "score must stay below 1.5", "id must be positive", "(id, version) must be unique"]
    assert not report.success
    assert report.to_dict()["rules"][0] == {"rule": "score_in_range", "reason": "score must lie in [0, 1]", "failed": 3}


def test_a_valid_table_passes_every_rule_and_keeps_its_row_count(spark):
    valid = [(1, 1, 0.5), (2, 1, 0.0), (2, 2, 1.0)]
    report = ge_validate(scores(spark, valid), RULES, stage="input")
    assert report.success and report.rows == 3
    assert report.failed_rows_by_rule == {"score_in_range": 0, "score_below_limit": 0, "id_positive": 0, "duplicate_key": 0}
    assert assert_valid_output(scores(spark, valid), RULES).success


def test_without_a_key_there_is_no_duplicate_rule(spark):
    rules = TableRules("scores", RULES.rules)
    report = ge_validate(scores(spark), rules, stage="output")
    assert report.failed_rows_by_rule == {"score_in_range": 3, "score_below_limit": 2, "id_positive": 0}
    assert report.rows == 8


def test_an_empty_table_passes(spark):
    report = ge_validate(scores(spark, []), RULES, stage="output")
    assert report.success and report.rows == 0


def test_an_expectation_that_errors_reports_minus_one_never_a_pass(spark, caplog):
    broken = TableRules("scores", (Rule("no_such_column", "missing_column > 0", "refers to nothing"),), ("id",))
    with caplog.at_level(logging.ERROR, logger="mmfs.pipelines.spark.validation"):
        report = ge_validate(scores(spark), broken, stage="output")
    assert report.failed_rows_by_rule == {"no_such_column": -1, "duplicate_key": -1}
    assert not report.success and report.rows == 8
    assert any("raised" in r.getMessage() for r in caplog.records)


def test_the_query_names_every_rule_once():
    query = failed_counts_query(RULES)
    for name in ("score_in_range", "score_below_limit", "id_positive", "duplicate_key"):
        assert query.count(f"'{name}'") == 1
    assert query.count("{batch}") == 1  # one pass over the table
