"""mmfs's pipeline side, in layers (each imports only those above it in this list):

- ``contracts``: table names and columns, view and service names (no pyspark, no feast);
- ``features``: the rules offline and online share (numpy and pyarrow);
- ``spark``: the Spark plumbing; ``jobs``: one file per Spark job (``spark-submit
  pipelines/jobs/<job>.py``, or ``mmfs <job>``), each ``main(argv)``: read, a pure
  ``transform(...)`` that tests call directly, write;
- ``store``: the Feast side (apply, drift, materialise, training sets);
- ``cli``: the ``mmfs`` entry point.
"""
