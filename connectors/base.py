"""The protocol every connector implements, and the registry that picks one per dataset.

The runner drives every connector through the same steps: measure (`count`), erase (`erase`,
guarded with `live_rows` and `rows_written_since`), purge (`purge`, after `history` is
copied to the ledger), verify (`count` again). What a connector cannot do it declares in
`Capabilities`, and the plan says so; it never returns a silent zero for an unsupported
operation.

Optional capabilities are typed protocols below, and the core discovers them in one of two
ways, never by probing attribute names:
- a capability that adds a method of its own (`DerivesTargets.derive_targets`,
  `VerifiesItself.verify`, `FileVersions.file_versions`, `ReadsVersions`,
  `ReaderView`) is a `runtime_checkable` protocol,
  found with `isinstance(conn, DerivesTargets)`;
- a capability that only changes how the core calls the core methods (the provenance
  context, `ProvenanceAware`: `count`, `live_rows`, `erase` and `verify` take the keywords of
  `ProvenanceContext`) is declared as data, `Capabilities.provenance_context`, because an
  `isinstance` check cannot see keyword arguments.

How a connector's systems are shown (the plan's detail lines, the report's kind labels,
action, table rows and colour) is its `presentation`, a `Presentation`; the core has no
connector name in it. `Target.key_suffix` is the connector's part of a target's key (MLflow:
one model version trained on several datasets is one target per dataset), fixed at plan time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, Sequence, TypedDict, cast, runtime_checkable

if TYPE_CHECKING:
    from erasure.lineage.graph import LineageGraph
    from erasure.planning import ResolvedTarget


@dataclass(frozen=True)
class Capabilities:
    """What a connector can do, as data: a plan states these instead of pretending."""

    physical_purge: bool        # has a purge step that removes residue the erase leaves
    residue_scan: bool          # can prove absence physically (files, store rows), not only logically
    batch: bool                 # erases many subjects in one pass
    traceable_attempts: bool    # can tell what an interrupted earlier attempt already deleted
    erase_order: int = 0        # lower first: sources before the stores materialized from them
    notes: tuple[str, ...] = ()
    # count, live_rows, erase and verify take the ProvenanceContext keywords (ProvenanceAware)
    provenance_context: bool = False


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


def last_parts(name: str) -> str:
    """A path-like name shortened to its last two parts (`/lake/bronze/users` -> `bronze/users`)."""
    if "/" in name:
        return "/".join([p for p in name.split("/") if p][-2:])
    return name


@dataclass(frozen=True)
class Presentation:
    """How a connector's systems are shown: in the plan (`plan_lines`) and in the report
    (kind labels, action, colour, table cells). A connector that shows its targets
    differently subclasses this and overrides the methods."""

    kind: str                   # one system, "Delta Lake table"
    kinds: str                  # several, "Delta Lake tables" (also the report's section title)
    action: str = "erased"      # the report's Action column
    color: str = "#9a9a9a"      # the report's lineage picture
    path_names: bool = False    # names are paths: the report shows their last two parts
    verdict_note: str = ""      # added to the report's verdict when the subject reached one

    @classmethod
    def default(cls, connector: str) -> "Presentation":
        """For a connector name no installed connector has (an old ledger, say)."""
        return cls(f"{connector} dataset", f"{connector} datasets")

    def short(self, name: str) -> str:
        return last_parts(name) if self.path_names else name

    def plan_lines(self, t: dict[str, Any]) -> list[str]:
        """The dry run's detail lines for one target of the plan's JSON (`Target` as dict)."""
        version = "" if t["table_version"] is None else f", table version {t['table_version']}"
        lines = [f"rows {t['rows']}, files to rewrite {len(t['files'])}{version}"]
        if t["residue_now"]:
            more = "…" if len(t["residue_now"]) > 2 else ""
            lines.append(f"residue now: {len(t['residue_now'])} files "
                         f"({', '.join(t['residue_now'][:2])}{more})")
        return lines

    def report_cells(self, t: dict[str, Any], erase: dict[str, Any], purge: dict[str, Any],
                     verify: dict[str, Any]) -> tuple[Any, Any, str]:
        """The report row's (rows before, rows after, versions) for a plan target and its
        recorded erase, purge and verify steps (empty dicts when not recorded)."""
        before = erase.get("rows_live_before", t["rows"])
        after = verify.get("rows_remaining", "-")
        versions = ("-" if erase.get("version_before") is None else
                    f"{erase.get('version_before')} → {erase.get('version_after')}"
                    + (f", purge → {purge['version_after']}"
                       if purge.get("version_after") is not None else ""))
        return before, after, versions


class Connector(Protocol):
    name: str
    capabilities: Capabilities

    @property
    def presentation(self) -> Presentation:
        """How its systems are shown (a class attribute in the connectors here)."""

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


# ---- optional capabilities ---------------------------------------------------------------
@runtime_checkable
class DerivesTargets(Protocol):
    """Targets derived from other datasets' targets (feature views fed by a table, model
    versions trained on it): called once per plan, after the lineage trace."""

    def derive_targets(self, graph: LineageGraph, dataset_targets: list[ResolvedTarget],
                       unresolved: list[dict[str, str]]
                       ) -> tuple[list[ResolvedTarget], list[dict[str, str]], list[dict[str, str]]]:
        """(more targets, more unresolved, untouched); may also edit `unresolved` in place."""
        ...


class ProvenanceContext(TypedDict, total=False):
    """What the core passes a provenance-aware connector besides the keys."""

    derived: dict[str, Any] | None          # the target's derived_from
    requests: dict[Any, list[str]]          # key value -> request ids erased together
    planned: dict[Any, int]                 # key value -> rows the plan measured


class ProvenanceAware(Protocol):
    """A connector with `Capabilities.provenance_context`: at plan time `count` gets
    `derived`; the runner's `live_rows`, `erase` and `verify` get the whole context."""

    def count(self, namespace: str, name: str, column: str, values: Sequence[Any],
              with_residue: bool = True, derived: dict | None = None) -> TargetCount: ...

    def live_rows(self, namespace: str, name: str, column: str, values: Sequence[Any],
                  derived: dict | None = None, requests: dict[Any, list[str]] | None = None,
                  planned: dict[Any, int] | None = None) -> dict[Any, int]: ...

    def erase(self, namespace: str, name: str, column: str, values: Sequence[Any], tag: str,
              derived: dict | None = None, requests: dict[Any, list[str]] | None = None,
              planned: dict[Any, int] | None = None) -> EraseResult: ...


@runtime_checkable
class VerifiesItself(Protocol):
    """Its own proof instead of a recount (MLflow: the retrain flag). Problems per key."""

    def verify(self, namespace: str, name: str, column: str, values: Sequence[Any],
               derived: dict[str, Any] | None, requests: dict[Any, list[str]],
               planned: dict[Any, int] | None = None,
               erased_versions: dict[str, int] | None = None) -> dict[Any, list[str]]: ...


@runtime_checkable
class FileVersions(Protocol):
    """The version that added each data file: a sweep dates when a subject came back."""

    def file_versions(self, namespace: str, name: str,
                      paths: Sequence[str]) -> dict[str, int]: ...


@runtime_checkable
class ReadsVersions(Protocol):
    """Reads an earlier version of a dataset (Delta time travel): MLflow asks whether the
    version a model was trained on held the subject."""

    def rows_at_version(self, namespace: str, name: str, column: str, values: Sequence[Any],
                        version: int) -> dict[Any, int] | None:
        """Rows per key in that version; None when it can no longer be read."""
        ...

    def version_at(self, namespace: str, name: str, ms: int) -> int | None:
        """The version current at a time (epoch milliseconds); None when unknown."""
        ...


@runtime_checkable
class ReaderView(Protocol):
    """Rows a reader of the dataset sees beyond the live rows `live_rows` counts (Feast: the
    offline rows its store would read too): MLflow asks whether a model saw the subject."""

    def rows_readers_see(self, namespace: str, name: str, column: str,
                         values: Sequence[Any]) -> dict[Any, int]: ...


def count_target(conn: Connector, namespace: str, name: str, column: str,
                 values: Sequence[Any], with_residue: bool,
                 derived: dict[str, Any] | None) -> TargetCount:
    """`count`, with the target's provenance for a connector that declares it wants it."""
    if conn.capabilities.provenance_context:
        return cast(ProvenanceAware, conn).count(namespace, name, column, values,
                                                 with_residue=with_residue, derived=derived)
    return conn.count(namespace, name, column, values, with_residue=with_residue)


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

    def presentation(self, name: str) -> Presentation:
        """How the connector named `name` shows its systems (a default for an unknown name)."""
        for c in self.connectors:
            if c.name == name:
                return c.presentation
        return Presentation.default(name)
