"""The Feast side: the repo mmfs works over and where its state lives (``repo``: the packaged
declarations, ``mmfs init``), open and apply it (``feast_store``), every table against its view
(``schema``), the encoders file the static repo reads (``encoders_file``), materialise
(``feast_store.materialize``, ``materialize_spark``) and point-in-time training sets
(``training_set`` over ``entity_frame`` and ``pit_join``)."""
