"""The protocol every connector implements, and the registry that picks one per dataset.

The runner drives every connector through the same steps: measure (`count`), erase (`erase`,
guarded with `live_rows` and `rows_written_since`), purge (`purge`, after `history` is
copied to the ledger), verify (`count` again). What a connector cannot do it declares in
`Capabilities`, and the plan says so; it never returns a silent zero for an unsupported
operation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence


@dataclass(frozen=True)
class Capabilities:
    """What a connector can do, as data: a plan states these instead of pretending."""

    physical_purge: bool        # has a purge step that removes residue the erase leaves
    residue_scan: bool          # can prove absence physically (files, store rows), not only logically
    batch: bool                 # erases many subjects in one pass
    traceable_attempts: bool    # can tell what an interrupted earlier attempt already deleted
    erase_order: int = 0        # lower first: sources before the stores materialized from them
    notes: tuple[str, ...] = ()


@dataclass
class TargetCount:
    """What one dataset holds for a set of subject keys (the dry run's measurement)."""

    rows: dict[Any, int]                  # typed key value -> live rows
    files: dict[Any, list[str]]           # typed key value -> files (or store keys) to rewrite
    version: int | None
    residue: dict[Any, list[str]] = field(default_factory=dict)  # value -> traces elsewhere
    details: dict[Any, dict[str, Any]] = field(default_factory=dict)  # connector-specific facts
    # parts of the dataset this count could not look at, each with the reason ("object store
    # prefix not listed: ..."). Non-empty means absence is NOT proven there: the plan, run,
    # status, verify, sweep and report say "not verified: <reason>", never "verified".
    not_verified: list[str] = field(default_factory=list)


@dataclass
class EraseResult:
    rows_deleted: int
    version_before: int | None
    version_after: int | None
    files_removed: int
    files_added: int
    conflicts_retried: int = 0


@dataclass
class PurgeResult:
    dv_files_rewritten: int = 0
    files_vacuumed: list[str] = field(default_factory=list)
    log_files_removed: list[str] = field(default_factory=list)
    folders_removed: list[str] = field(default_factory=list)
    version_after: int | None = None
    notes: list[str] = field(default_factory=list)


class Connector(Protocol):
    name: str
    capabilities: Capabilities

    def handles(self, namespace: str, name: str) -> bool: ...

    def key_type(self, namespace: str, name: str, column: str) -> str | None:
        """Arrow type name of the column; None if the column does not exist.
        Raises UnknownDatasetError if the dataset does not exist."""

    def count(self, namespace: str, name: str, column: str, values: Sequence[Any],
              with_residue: bool = True) -> TargetCount: ...

    def table_version(self, namespace: str, name: str) -> int | None: ...

    def live_rows(self, namespace: str, name: str, column: str,
                  values: Sequence[Any]) -> dict[Any, int]: ...

    def rows_written_since(self, namespace: str, name: str, version: int | None,
                           upto: int | None = None) -> int: ...

    def rows_deleted_by_tags(self, namespace: str, name: str, tags: Sequence[str]) -> int: ...

    def erase(self, namespace: str, name: str, column: str, values: Sequence[Any],
              tag: str) -> EraseResult: ...

    def history(self, namespace: str, name: str) -> list[dict[str, Any]]: ...

    def purge(self, namespace: str, name: str, column: str, values: Sequence[Any],
              tag: str) -> PurgeResult: ...

    def residue_after(self, mode: str, namespace: str, name: str) -> dict[str, Any]:
        """What remains once erased in this residue mode, and until when."""


class ConnectorRegistry:
    def __init__(self, connectors: Sequence[Connector]):
        self.connectors: list[Connector] = list(connectors)

    def for_dataset(self, namespace: str, name: str) -> Connector | None:
        for c in self.connectors:
            if c.handles(namespace, name):
                return c
        return None

    def get(self, name: str) -> Connector:
        for c in self.connectors:
            if c.name == name:
                return c
        raise KeyError(name)
