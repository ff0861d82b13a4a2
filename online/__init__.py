"""The online store's reads, for the scorer and the stream alike: ``reader`` (``OnlineReader``,
TTL-aware row statuses), ``rows`` (Feast's SQLite and Redis layout read directly, without
Feast's per-value Python objects)."""
