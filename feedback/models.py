"""Feedback events, ingest batches, sources, reports, hourly rollups, alerts."""
