"""The Spark side of mmfs (``mmfs.pipelines``), in layers (each imports only those above it in
this list, and ``mmfs.core``):

- ``images`` and ``encoders``: image checks and decoding; the BERT/CLIP/EfficientNet encoders;
- ``spark``: the Spark plumbing (session, schemas, arguments, table I/O, validation, reports,
  the encode job's inference UDFs);
- ``jobs``: one file per Spark job (``spark-submit pipelines/jobs/<job>.py``, or ``mmfs <job>``),
  each ``main(argv)``: read, a pure ``transform(...)`` that tests call directly, write;
- ``synth``: the synthetic data generator.
"""
