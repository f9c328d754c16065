"""Deterministic sample Delta lake (PII reviews -> clean -> features/aggregates) with OpenLineage events."""
