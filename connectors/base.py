"""The protocol every connector implements, and the registry that picks one per dataset."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence


@dataclass(frozen=True)
class Capabilities:
    """What a connector can do, as data: a plan states these instead of pretending."""

    physical_purge: bool
    residue_scan: bool
    batch: bool
    notes: tuple[str, ...] = ()


@dataclass
class TargetCount:
    """What one dataset holds for a set of subject keys (the dry run's measurement)."""

    rows: dict[Any, int]                  # typed key value -> live rows
    files: dict[Any, list[str]]           # typed key value -> data files that would be rewritten
    version: int | None
    residue: dict[Any, list[str]] = field(default_factory=dict)  # value -> files with traces


class Connector(Protocol):
    name: str
    capabilities: Capabilities

    def handles(self, namespace: str, name: str) -> bool: ...

    def key_type(self, namespace: str, name: str, column: str) -> str | None:
        """Arrow type name of the column; None if the column does not exist.
        Raises UnknownDatasetError if the dataset does not exist."""

    def columns(self, namespace: str, name: str) -> list[str]: ...

    def count(self, namespace: str, name: str, column: str, values: Sequence[Any],
              with_residue: bool = True) -> TargetCount: ...


class ConnectorRegistry:
    def __init__(self, connectors: list[Any]):
        self.connectors = list(connectors)

    def for_dataset(self, namespace: str, name: str):
        for c in self.connectors:
            if c.handles(namespace, name):
                return c
        return None

    def get(self, name: str):
        for c in self.connectors:
            if c.name == name:
                return c
        raise KeyError(name)
