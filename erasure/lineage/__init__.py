"""Lineage: OpenLineage events in, a graph of datasets and jobs out."""
