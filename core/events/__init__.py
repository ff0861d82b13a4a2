"""Events: the rules one must keep (``rules``) and the event log's landing folder (``landing``),
shared by ingest, the web server's ``POST /events`` and ``mmfs stream``."""
