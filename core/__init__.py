"""The ground floor: what every layer of mmfs shares, and imports nothing of mmfs's own.

- ``contracts``: table names and columns, view names, state folders, time units (no pyspark, no feast);
- ``features``: the feature rules offline and online share (numpy and pyarrow only): the
  similarity, the item-embedding index, the smoothed CTR and running stats, the snapshot stamp;
- ``events``: the rules an event must keep (``rules``: ingest's Spark predicates and the checks
  of ``POST /events`` and ``mmfs stream``) and the event log's landing files (``landing``).
"""
