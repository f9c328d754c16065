"""The protocol every connector implements, the optional capabilities it may add, and the
registry that picks one per dataset.

The core protocol (`Connector`) is small: what a connector handles, the key column's type,
measure (`count`, `live_rows`), erase, and what remains afterwards (`residue_after`). The
runner drives every connector through the same steps: measure, erase (guarded), purge where the
connector can, verify (`count` again, or its own proof).

Everything else is optional and typed, never probed by attribute name:
- a capability that adds methods is a `runtime_checkable` protocol, found with `isinstance`:
  `Versioned` (a version per commit and the rows written since one: the guard's tolerance for
  concurrent writers), `TracesAttempts` (what an interrupted attempt already deleted),
  `Purges` (a physical purge after the erase, with the history the audit keeps),
  `ErasesInTransaction` (the guard checked inside the delete's own transaction, rolled back on
  a mismatch), `DerivesTargets`, `VerifiesItself`, `FileVersions`, `ReadsVersions`, `Closes`,
  `ReaderView`;
- a capability that only changes how the core calls the core methods is data in
  `Capabilities`: `provenance_context` (count/live_rows/erase/verify take the keywords of
  `ProvenanceContext`), `batch` (False: the runner erases one subject per call), `guard` (how
  the counts are compared), `residue_scan`, `erase_order` and `notes`.
`abilities(conn)` states all of it as data; the plan records it per connector and the plan,
run output, `status` and the report show it.

How a connector's systems are shown (the plan's detail lines, the report's kind labels,
action, table rows and colour, the sweep's findings) is its `presentation`, a `Presentation`;
the core has no connector name in it. `Target.key_suffix` is the connector's part of a
target's key (MLflow: one model version trained on several datasets is one target per
dataset), fixed at plan time.

Connectors are plug-ins: an installed package names a `ConnectorPlugin` under the entry-point
group `erasure.connectors` (connectors/__init__.py finds them); the built-in ones are listed in
this repository's pyproject.toml the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import (TYPE_CHECKING, Any, Callable, Literal, Protocol, Sequence, TypedDict, cast,
                    runtime_checkable)

if TYPE_CHECKING:
    from erasure.config import Config
    from erasure.lineage.graph import LineageGraph
    from erasure.planning import ResolvedTarget

# How the runner compares what an erase finds and removes with what the plan measured:
# - "versioned": the connector is `Versioned`; rows written since the plan's version are the
#   tolerance (a subject re-ingested meanwhile), anything beyond trips the guard;
# - "exact": no tolerance: rows found and rows deleted must equal the plan (re-plan after a
#   concurrent change);
# - "subject-keys": every key the erase addresses is built from the subject's own id; counts
#   may differ from the plan (the store rewrote the subject's keys since), so the plan is no
#   bound, but a delete that removes more than the subject's keys present just before it
#   trips the guard (after the fact: the connector keeps no earlier version).
Guard = Literal["versioned", "exact", "subject-keys"]


@dataclass(frozen=True)
class Capabilities:
    """What a connector can do beyond its methods, as data: a plan states these instead of
    pretending. What a connector can do by having methods (purge, versions, traced attempts)
    is its optional protocols; `abilities` reports both."""

    residue_scan: bool          # can prove absence physically (files, store rows), not only logically
    batch: bool                 # erases many subjects in one call (False: one call per subject)
    guard: Guard = "exact"      # how the runner compares counts with the plan (see Guard)
    erase_order: int = 0        # lower first: sources before the stores materialized from them
    notes: tuple[str, ...] = ()  # what it cannot do, said plainly (shown in plan and report)
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

    def evidence(self) -> dict[str, Any]:
        """The fields the purge step records (counts, never the paths)."""
        return {"dv_files_rewritten": self.dv_files_rewritten,
                "files_removed": len(self.files_vacuumed),
                "log_files_removed": len(self.log_files_removed),
                "folders_removed": len(self.folders_removed),
                "version_after": self.version_after,
                "time_travel_lost_before_version": self.version_after}


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

    def sweep_kinds(self, t: dict[str, Any]) -> list[str]:
        """What a sweep found of an erased subject in one target of a fresh plan (`Target` as
        dict): empty when nothing is back. Residue counts only in a strict residue mode."""
        kinds = []
        if t["rows"]:
            kinds.append("live rows")
        if t["files"] and not t["rows"]:
            kinds.append("rows hidden by deletion vectors still in live files")
        if t["residue_now"] and t["residue_after"].get("mode") != "keep-history":
            kinds.append("residue")
        return kinds


class Connector(Protocol):
    """The core every connector implements."""

    name: str
    capabilities: Capabilities

    @property
    def presentation(self) -> Presentation:
        """How its systems are shown (a class attribute in the connectors here)."""

    def handles(self, namespace: str, name: str) -> bool: ...

    def key_type(self, namespace: str, name: str, column: str) -> str | None:
        """Arrow type name of the column; None if the column does not exist.
        Raises UnknownDatasetError if the dataset does not exist or is not found by key
        column at all (its targets are derived, `DerivesTargets`)."""

    def count(self, namespace: str, name: str, column: str, values: Sequence[Any],
              with_residue: bool = True) -> TargetCount: ...

    def live_rows(self, namespace: str, name: str, column: str,
                  values: Sequence[Any]) -> dict[Any, int]: ...

    def erase(self, namespace: str, name: str, column: str, values: Sequence[Any],
              tag: str) -> EraseResult: ...

    def residue_after(self, namespace: str, name: str, mode: str | None = None) -> dict[str, Any]:
        """What remains once erased, and until when: {"mode", "remains", "until", "note"}.
        `mode` is the one a plan recorded; None: the connector's configured mode."""


# ---- optional capabilities ---------------------------------------------------------------
@runtime_checkable
class Versioned(Protocol):
    """A version per commit (Delta): the plan records the version it measured, and rows
    written since then are the guard's tolerance (`Capabilities.guard` "versioned")."""

    def table_version(self, namespace: str, name: str) -> int | None: ...

    def rows_written_since(self, namespace: str, name: str, version: int | None,
                           upto: int | None = None) -> int: ...


@runtime_checkable
class TracesAttempts(Protocol):
    """Can tell how many rows an interrupted earlier attempt deleted, from the tags its
    commits carry: a resumed erase counts them instead of guessing."""

    def rows_deleted_by_tags(self, namespace: str, name: str, tags: Sequence[str]) -> int: ...


@runtime_checkable
class Purges(Protocol):
    """Removes physically what the erase leaves (old files, log entries): run after the erase
    when the target's residue mode is "purge". `history` is copied to the ledger first, since
    the purge may delete it."""

    def history(self, namespace: str, name: str) -> list[dict[str, Any]]: ...

    def purge(self, namespace: str, name: str, column: str, values: Sequence[Any],
              tag: str) -> PurgeResult: ...


@runtime_checkable
class PurgesAgainstPlan(Protocol):
    """A purge that checks the table against facts its own count put in the plan
    (`TargetCount.details` for a key value, recorded in `Target.details`): the runner passes
    the planned details of the target; the connector decides what they prove (Delta's
    rewrite-history: each version's rows of everyone else, unchanged since the dry run)."""

    def purge_planned(self, namespace: str, name: str, column: str, values: Sequence[Any],
                      tag: str, planned: dict[str, Any]) -> PurgeResult: ...


@runtime_checkable
class FindsKeyVariants(Protocol):
    """Lists the spellings a string key column holds of normalized identities (an identity
    type with `normalize`, erasure/identity.py): `Alice@Example.COM` and ` alice@example.com `
    for `alice@example.com`. The plan then erases each spelling by exact match, so no
    normalization ever enters a predicate. Without it, only the normalized spelling is
    matched and the plan says the others were not searched."""

    def key_variants(self, namespace: str, name: str, column: str, rule: str,
                     values: Sequence[str]) -> dict[str, list[str]]:
        """For each normalized value, the distinct stored values normalizing to it."""
        ...


@runtime_checkable
class LooksUp(Protocol):
    """Reads a lookup table (`[[enrich]]`, erasure/enrich.py): for each value of
    `from_column`, the distinct values of `to_column` in the rows holding it, from one
    consistent snapshot whose version (None where there are none) is returned too."""

    def lookup(self, namespace: str, name: str, from_column: str, to_column: str,
               values: Sequence[Any]) -> tuple[dict[Any, list[Any]], int | None]: ...


@runtime_checkable
class ErasesInTransaction(Protocol):
    """Deletes in one transaction and checks the guard inside it: when the rows deleted fall
    outside [low, high] it rolls back and raises erasure.errors.GuardTripped, and nothing was
    deleted. The runner calls this instead of `erase`."""

    def erase_within(self, namespace: str, name: str, column: str, values: Sequence[Any],
                     tag: str, low: int, high: int) -> EraseResult: ...


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
class Closes(Protocol):
    """Holds a connection or session (a Spark Connect session) to release when the command
    ends, while the server is still there: `Engine.close` calls it."""

    def close(self) -> None: ...


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


# ---- what a connector can do, as data --------------------------------------------------------
GUARD_TEXT = {
    "versioned": "counts compared with the plan; rows written since the planned version "
                 "are the only tolerance",
    "exact": "counts compared with the plan, no tolerance (re-plan after a concurrent change)",
    "subject-keys": "deletes only keys built from the subject's own id; no more may go than "
                    "the subject's keys present just before the delete",
}


def abilities(conn: Connector) -> dict[str, Any]:
    """Everything a connector can and cannot do, as data: what the plan records per
    connector and the plan, run output, status and report show (`ability_lines`)."""
    cap = conn.capabilities
    return {"purge": isinstance(conn, Purges),
            "residue_scan": cap.residue_scan,
            "batch": cap.batch,
            "versions": isinstance(conn, Versioned),
            "traces_attempts": isinstance(conn, TracesAttempts),
            "guard": cap.guard,
            "guard_in_transaction": isinstance(conn, ErasesInTransaction),
            "own_verification": isinstance(conn, VerifiesItself),
            "key_variants": isinstance(conn, FindsKeyVariants),
            "lookup": isinstance(conn, LooksUp),
            "notes": list(cap.notes)}


def ability_lines(a: dict[str, Any]) -> list[str]:
    """`abilities` in words, the cannot's first."""
    lines = []
    if not a.get("purge"):
        lines.append("no physical purge: nothing beyond the erase is removed")
    if not a.get("residue_scan"):
        lines.append("no residue scan: absence is checked logically, not in files")
    if not a.get("traces_attempts"):
        lines.append("cannot trace an interrupted attempt: a resumed erase trusts the plan")
    if not a.get("batch"):
        lines.append("one subject per erase call")
    guard = GUARD_TEXT.get(a.get("guard", ""), str(a.get("guard")))
    if a.get("guard_in_transaction"):
        guard += "; checked inside the delete's transaction, rolled back on a mismatch"
    lines.append(f"guard: {guard}")
    lines.extend(a.get("notes", []))
    return lines


# ---- plug-ins ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ConnectorPlugin:
    """What an entry point of the group `erasure.connectors` names: a connector's name, how it
    shows its systems, its section of erasure.toml and how to build it from a loaded config.

    The module that defines it must import no heavy library: plug-ins are listed whenever a
    config is loaded or a report drawn. `build` imports the connector's library (and checks
    its extra, connectors/extras.py) and returns None when the config does not ask for it.
    """

    name: str
    presentation: Presentation
    build: Callable[[Config, ConnectorRegistry], Connector | None]
    section: str | None = None        # its key in erasure.toml ("sql" for [[sql]])
    model: Any = None                 # the section value's type (a pydantic model, list[...])
    default: Callable[[], Any] | None = None   # the value when the section is absent
    order: int = 100                  # the registry asks lower first which connector handles
