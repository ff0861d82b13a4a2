"""The Feast side: open and apply the repo (``feast_store``), check tables against views (``drift``),
the encoders file the static repo reads (``encoders_file``), materialise (``feast_store.materialize``,
``materialize_spark``) and build point-in-time training sets (``training_set``)."""
