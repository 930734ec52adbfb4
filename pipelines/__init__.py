"""Launchers for the jobs in :mod:`mrag.pipelines` (``python -m pipelines.ingest …``)."""
