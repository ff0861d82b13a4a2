"""The agreement checks, each named for what it compares:

- ``parity``: offline training rows == online reads for the same (user, item, T) (``mmfs parity``);
- ``consistency``: the served-feature log against the offline tables, and drift of the served
  values (PSI) (``mmfs consistency``; a Spark job: ``spark-submit checks/consistency.py``).

The third check, tables against their feature views (``mmfs.store.schema``), lives with the
store: ``mmfs apply`` and ``mmfs training-set`` refuse a drifted table before anything is
registered or joined, so it sits below them.
"""
