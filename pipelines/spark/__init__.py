"""Spark plumbing the jobs share: the one SparkSession builder (``session``), schemas built from the
contracts (``schemas``), job arguments (``args``), table I/O with atomic swaps (``table_io``),
validation and quarantine (``validation``), and the reports a job prints (``reports``)."""
