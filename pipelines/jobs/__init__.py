"""The Spark jobs, one file each: ``spark-submit pipelines/jobs/<job>.py ...`` or ``mmfs <job> ...``.
Each is ``main(argv)``: read, a pure ``transform(...)`` the tests call directly, write."""
