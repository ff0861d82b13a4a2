"""The feature logic that the offline jobs and the online scorer share: numpy and pyarrow only,
never pyspark or feast, so the web server imports it without loading either.

- ``similarity``: ``s_j = cos(m_t, m_j)`` and its batch form over Arrow rows (point-in-time lookups);
- ``item_index``: the item-embedding index, versions looked up as of a time;
- ``stats``: the smoothed CTR of the running item and user stats.
"""
