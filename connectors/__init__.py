"""Connectors: one module per system the engine erases from.

A connector is chosen by dataset identity (OpenLineage namespace and name). Heavy client
libraries are imported inside the connector's methods, never at package import.
"""

from __future__ import annotations

from .base import Connector, ConnectorRegistry

__all__ = ["Connector", "ConnectorRegistry", "default_registry"]


def default_registry(config) -> ConnectorRegistry:
    from .delta import DeltaConnector
    from .parquet import ParquetConnector

    connectors = [DeltaConnector(config.delta), ParquetConnector()]
    if config.feast_repos:
        from .feast import FeastConnector   # light: feast itself loads on first use

        connectors.append(FeastConnector(config.feast_repos))
    registry = ConnectorRegistry(connectors)
    from .mlflow import MlflowConnector, settings_from   # light: mlflow loads on first use

    mlflow_settings = settings_from(config.mlflow, config.base_dir)
    if mlflow_settings is not None:
        registry.connectors.append(MlflowConnector(mlflow_settings, registry))
    return registry
