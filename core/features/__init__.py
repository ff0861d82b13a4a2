"""The feature logic that the offline jobs and the online side share: numpy and pyarrow only,
never pyspark or feast, so the web server imports it without loading either.

- ``similarity``: ``s_j = cos(m_t, m_j)`` and its batch form over Arrow rows (point-in-time lookups);
- ``item_index``: the item-embedding index, versions looked up as of a time;
- ``stats``: the smoothed CTR and the running-stats rule on rows;
- ``snapshot``: the snapshot stamp (a row holding events up to t is stamped t + 1 µs) and history;
- ``event_rules``: the rules an event must keep (ingest's Spark predicates, the scorer's POST /events).
"""
