"""Connectors: one module or package per system the engine erases from.

A connector is chosen by dataset identity (OpenLineage namespace and name). Heavy client
libraries are imported inside the connector's methods, never at package import.

Connectors are plug-ins. Each names a `ConnectorPlugin` (connectors/base.py) under the
entry-point group `erasure.connectors`; this repository's own are listed in its pyproject.toml
the same way, so a package installed beside it adds a connector without editing anything here
(docs/write-a-connector.md). A source tree used without being installed has no entry points;
then the built-in ones below are used, and only them.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Callable

from .base import Connector, ConnectorPlugin, ConnectorRegistry

if TYPE_CHECKING:
    from erasure.config import Config

    from .base import Presentation

__all__ = ["Connector", "ConnectorPlugin", "ConnectorRegistry", "config_sections",
           "default_registry", "plugins", "presentations"]

GROUP = "erasure.connectors"
# the entry points this repository's pyproject.toml declares, for an uninstalled source tree
BUILTIN = {"delta": "connectors.delta:PLUGIN", "parquet": "connectors.parquet:PLUGIN",
           "feast": "connectors.feast:PLUGIN", "mlflow": "connectors.mlflow:PLUGIN",
           "sql": "connectors.sql:PLUGIN", "spark": "connectors.spark:PLUGIN"}


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


@functools.cache
def plugins() -> dict[str, ConnectorPlugin]:
    """Every installed connector plug-in by name, in registry order. A plug-in that cannot be
    loaded, or names something that is not a ConnectorPlugin, is a ConfigError (exit 3) naming
    the entry point: a connector silently missing could leave a subject's data unerased."""
    from erasure.errors import ConfigError

    found: dict[str, str] = {}
    for ep in entry_points(group=GROUP):
        if found.get(ep.name, ep.value) != ep.value:
            raise ConfigError(f"two installed packages name a connector {ep.name!r} ({GROUP} "
                              f"entry points {found[ep.name]} and {ep.value}): uninstall one; "
                              "which one erases would otherwise depend on the path order")
        found[ep.name] = ep.value
    for name, ref in BUILTIN.items():
        if name not in found and importlib.util.find_spec(ref.partition(":")[0]) is not None:
            found[name] = ref
    out: dict[str, ConnectorPlugin] = {}
    for name, ref in found.items():
        try:
            plugin = _load(ref)
        except Exception as exc:   # whatever the plug-in's import raised: it is not usable
            raise ConfigError(f"connector plug-in {name!r} ({GROUP} entry point {ref}) cannot "
                              f"be loaded: {type(exc).__name__}: {exc}") from None
        if not isinstance(plugin, ConnectorPlugin):
            raise ConfigError(f"connector plug-in {name!r} ({GROUP} entry point {ref}) is a "
                              f"{type(plugin).__name__}, not a connectors.base.ConnectorPlugin")
        if plugin.name != name:
            raise ConfigError(f"connector plug-in entry point {name!r} ({ref}) names a "
                              f"connector called {plugin.name!r}; they must match")
        out[name] = plugin
    return dict(sorted(out.items(), key=lambda kv: (kv[1].order, kv[0])))


def config_sections() -> dict[str, tuple[Any, Callable[[], Any]]]:
    """Each connector's section of erasure.toml: its key, the type of its value (the
    connector's own pydantic model, from its own module) and a factory for its default.
    erasure/config.py composes the file's model from its core sections and these."""
    out: dict[str, tuple[Any, Callable[[], Any]]] = {}
    for p in plugins().values():
        if p.section is not None:
            out[p.section] = (p.model, p.default or (lambda: None))
    return out


def presentations() -> dict[str, Presentation]:
    """How each installed connector presents its systems, by connector name, without a
    config (a report is drawn from recorded evidence). Imports no connector library."""
    return {name: p.presentation for name, p in plugins().items()}


def default_registry(config: Config) -> ConnectorRegistry:
    """The connectors the config asks for, in the plug-ins' order. A connector whose extra is
    configured but not installed is a ConfigError (exit 3) naming the pip command
    (connectors/extras.py), raised here, before anything is planned or recorded."""
    registry = ConnectorRegistry([])
    for p in plugins().values():
        conn = p.build(config, registry)
        if conn is not None:
            registry.connectors.append(conn)
    return registry
