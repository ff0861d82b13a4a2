"""The contracts between stages, written once: table names and columns, view and service names,
time units. Plain Python (pyarrow for the Arrow form): no pyspark and no feast, so every layer
above (the Spark jobs, the store, the model, the web server) imports it.
"""
