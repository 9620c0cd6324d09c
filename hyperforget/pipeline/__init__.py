"""The pipeline: the stage table (what DVC and Prefect run), the stages, answering one request, and the
method comparison with its tables."""
