"""Connectors: one module per system the engine erases from.

A connector is chosen by dataset identity (OpenLineage namespace and name). Heavy client
libraries are imported inside the connector's methods, never at package import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Optional

from .base import Connector, ConnectorRegistry

if TYPE_CHECKING:
    from erasure.config import Config

    from .base import Presentation

__all__ = ["Connector", "ConnectorRegistry", "config_sections", "default_registry",
           "presentations"]


def config_sections() -> dict[str, tuple[Any, Callable[[], Any]]]:
    """Each connector's section of erasure.toml: its name, the type of its value (the
    connector's own pydantic model, from its own module) and a factory for its default.
    erasure/config.py composes the file's model from its core sections and these. The models
    import pydantic but no connector library: this runs when a config is loaded."""
    from .delta.config import DeltaSettings
    from .feast.config import FeastRepoEntry
    from .mlflow_config import MlflowConfig

    return {
        "delta": (DeltaSettings, DeltaSettings),          # [delta], [delta.storage_options]
        "feast": (list[FeastRepoEntry], list),             # [[feast]]
        "mlflow": (Optional[MlflowConfig], lambda: None),  # [mlflow]
    }


def presentations() -> dict[str, Presentation]:
    """How each connector shown here presents its systems, by connector name, without a
    config (a report is drawn from recorded evidence). Imports no connector library."""
    from .delta import DeltaConnector
    from .feast import FeastConnector
    from .mlflow import MlflowConnector
    from .parquet import ParquetConnector

    return {c.name: c.presentation
            for c in (DeltaConnector, ParquetConnector, FeastConnector, MlflowConnector)}


def default_registry(config: Config) -> ConnectorRegistry:
    """The connectors the config asks for. Feast and MLflow are extras: one that is configured
    but not installed is a ConfigError (exit 3) naming the pip command (connectors/extras.py)."""
    from . import extras
    from .delta import DeltaConnector
    from .parquet import ParquetConnector

    if config.feast_repos:
        extras.require(extras.FEAST)
    if config.mlflow is not None:
        extras.require(extras.MLFLOW)
        uris = (config.mlflow.tracking_uri, config.mlflow.registry_uri or "")
        if any(u.startswith(("postgresql:", "postgresql+psycopg2:", "postgres:")) for u in uris):
            extras.require(extras.MLFLOW_POSTGRES)

    connectors: list[Connector] = [DeltaConnector(config.delta), ParquetConnector()]
    if config.feast_repos:
        from .feast import FeastConnector   # light: feast itself loads on first use

        connectors.append(FeastConnector(config.feast_repos))
    registry = ConnectorRegistry(connectors)
    from .mlflow import MlflowConnector, settings_from   # light: mlflow loads on first use

    mlflow_settings = settings_from(config.mlflow, config.base_dir)
    if mlflow_settings is not None:
        registry.connectors.append(MlflowConnector(mlflow_settings, registry))
    return registry
