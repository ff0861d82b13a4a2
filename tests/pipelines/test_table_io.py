import pytest
from pyspark.sql import functions as F

from pipelines.table_io import read_meta, read_table, write_table


def test_write_replaces_and_keeps_metadata(spark, tmp_path):
    path = str(tmp_path / "t")
    write_table(spark.range(3), path, meta={"version": 1})
    write_table(spark.range(5), path, meta={"version": 2})
    assert read_table(spark, path).count() == 5
    assert read_meta(spark, path) == {"version": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["t"]  # no temporary or old copies left


def test_a_job_failing_mid_write_leaves_the_previous_output_untouched(spark, tmp_path):
    path = str(tmp_path / "t")
    write_table(spark.range(3), path, meta={"version": 1})

    @F.udf("long")
    def explode_on_seven(x):
        if x == 7:
            raise RuntimeError("worker died mid-write")
        return x

    with pytest.raises(Exception, match="worker died mid-write"):
        write_table(spark.range(10).select(explode_on_seven("id").alias("id")), path, meta={"version": 2})
    assert sorted(r.id for r in read_table(spark, path).collect()) == [0, 1, 2]
    assert read_meta(spark, path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_a_swap_interrupted_between_renames_is_recovered(spark, tmp_path):
    path = str(tmp_path / "t")
    write_table(spark.range(4), path)
    (tmp_path / "t").rename(tmp_path / "t.old-abc")  # as if killed after the first rename
    assert read_table(spark, path).count() == 4
    assert [p.name for p in tmp_path.iterdir()] == ["t"]


def test_missing_table_names_the_job_to_run(spark, tmp_path):
    with pytest.raises(FileNotFoundError, match="run the job that writes it"):
        read_table(spark, str(tmp_path / "nothing"))
