"""mmfs Spark feature jobs: ingest, encode_items, user_sequences, target_similarity, synth.

Each job module is runnable as ``spark-submit pipelines/<job>.py ...`` and through the ``mmfs``
CLI. A job is ``main(argv)``: read, a pure ``transform(...)`` that tests call directly, write.
"""
