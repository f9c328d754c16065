"""GDPR Article 17 erasure orchestration and lineage engine.

Data flow (one module or package per stage):
    OpenLineage events -> lineage graph -> plan (pure, the dry run)
    -> execution (connectors, ledger) -> verification -> evidence
"""

__version__ = "0.1.0"
