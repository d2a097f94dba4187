"""Ingest: model files to the IR."""
