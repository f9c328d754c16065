"""Plan an erasure: which datasets hold a subject, by which key, how many rows. Changes nothing.

The plan is plain, frozen data with a canonical JSON form; the dry run (`erasure plan`) and
the real run share it. Subjects are named only by their keyed HMAC.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from .canonical import canonical_text
from .config import Config
from .errors import UnknownDatasetError, translated
from .lineage.graph import LineageGraph, trace_subject_keys
from .subject import coerce_subject_id

if TYPE_CHECKING:
    from connectors.base import ConnectorRegistry

PLAN_FORMAT = 1


@dataclass(frozen=True)
class Target:
    namespace: str
    name: str
    connector: str
    column: str
    key_type: str
    how: str                          # root | column_lineage | name_match | override
    derived_from: dict | None         # {"namespace", "name", "column", "job"} one hop upstream
    rows: int
    files: list[str]                  # data files that would be rewritten
    table_version: int | None
    residue_now: list[str]            # traces outside live data (old files, change data, log)
    residue_after: dict[str, Any]     # what remains once erased, and until when
    details: dict[str, Any] = field(default_factory=dict)   # connector facts (online store...)
    # parts the connector could not look at, with the reason: absence is not proven there
    not_verified: list[str] = field(default_factory=list)
    # the connector's part of the key (ResolvedTarget.key_suffix), fixed at plan time; in the
    # plan's JSON only when not empty, so other targets' plans read as they always did
    key_suffix: str = ""

    @property
    def key(self) -> str:
        """Names the target in step entries: the format is evidence and never changes."""
        return f"{self.connector}|{self.namespace}|{self.name}|{self.column}{self.key_suffix}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["key_suffix"]:
            del d["key_suffix"]
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Target":
        return cls(**{**d, "key_suffix": key_suffix_of(d)})


def key_suffix_of(t: dict[str, Any]) -> str:
    """A plan target's key suffix from its JSON. Plans recorded before the suffix was stored
    have none; their only targets with one were model versions (`how` trained_on: one model
    trained on several datasets), whose suffix was the dataset and its version."""
    if "key_suffix" in t:
        return t["key_suffix"]
    src = t.get("derived_from")
    return f"|{src['name']}@{src.get('dataset_version')}" if (
        t.get("how") == "trained_on" and src) else ""


def target_key(t: dict[str, Any]) -> str:
    """`Target.key` of a plan target's JSON (as the evidence holds it)."""
    return f"{t['connector']}|{t['namespace']}|{t['name']}|{t['column']}{key_suffix_of(t)}"


@dataclass(frozen=True)
class Plan:
    subject_hmac: str
    created_at: str
    targets: list[Target]
    unresolved: list[dict[str, str]]
    out_of_scope: list[dict[str, str]]
    notes: list[str] = field(default_factory=list)
    untouched: list[dict[str, str]] = field(default_factory=list)   # e.g. feature views not fed by the subject
    # what each connector with a target can and cannot do (connectors.base.abilities), by
    # connector name; in the plan's JSON only when not empty (plans recorded before have none)
    connectors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        if not d["connectors"]:
            del d["connectors"]
        d["targets"] = [t.to_json() for t in self.targets]
        d["format"] = PLAN_FORMAT
        d["subject"] = {"hmac": d.pop("subject_hmac")}
        d["totals"] = {"targets": len(self.targets), "rows": sum(t.rows for t in self.targets),
                       "files": sum(len(t.files) for t in self.targets),
                       "unresolved": len(self.unresolved),
                       "not_verified": sum(1 for t in self.targets if t.not_verified)}
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Plan":
        return cls(d["subject"]["hmac"], d["created_at"], [Target.from_json(t) for t in d["targets"]],
                   d["unresolved"], d["out_of_scope"], d.get("notes", []), d.get("untouched", []),
                   d.get("connectors", {}))

    def found_nothing(self) -> bool:
        """True when every target was looked at in full and holds no row, file or trace of
        the subject: the honest answer to the request is "no data found" (Art. 12)."""
        return bool(self.targets) and all(
            not t.rows and not t.files and not t.residue_now and not t.not_verified
            for t in self.targets)

    def canonical(self) -> str:
        """The plan's canonical JSON (RFC 8785, `erasure.canonical`)."""
        return canonical_text(self.to_json())


@dataclass(frozen=True)
class ResolvedTarget:
    """A dataset and key column the trace found and a connector can reach (no subject yet)."""

    namespace: str
    name: str
    connector: Any
    column: str
    key_type: str
    how: str
    derived_from: dict | None
    key_suffix: str = ""     # the connector's part of Target.key (one model, several datasets)


def resolve_targets(config: Config, graph: LineageGraph, registry: ConnectorRegistry,
                    untouched: list[dict] | None = None
                    ) -> tuple[list[ResolvedTarget], list[dict], list[dict]]:
    overrides = {graph.canonical((o.namespace, o.name)): (o.column, o.exclude)
                 for o in config.overrides}
    roots = [((r.namespace, r.name), r.column) for r in config.roots]
    trace = trace_subject_keys(graph, roots, overrides)
    targets: list[ResolvedTarget] = []
    unresolved = [{"namespace": ns, "name": n, "reason": why}
                  for (ns, n), why in sorted(trace.unresolved.items())]
    out_of_scope = [{"namespace": ns, "name": n, "reason": why}
                    for (ns, n), why in sorted(trace.out_of_scope.items())]
    root_ids = {graph.canonical(ds) for ds, _ in roots}
    for k in trace.keyed:
        ns, name = k.dataset
        is_root = k.dataset in root_ids and k.how == "root"
        conn = registry.for_dataset(ns, name)
        if conn is None:
            if is_root:
                raise UnknownDatasetError(
                    f"root dataset {ns}:{name} was not found or no connector handles it")
            unresolved.append({"namespace": ns, "name": name, "reason": (
                f"holds the subject key {k.column} but no connector handles namespace {ns!r} "
                "or the table does not exist; erase it by hand or add a connector")})
            continue
        try:
            typ = conn.key_type(ns, name, k.column)
        except UnknownDatasetError as exc:
            if is_root:
                raise
            unresolved.append({"namespace": ns, "name": name, "reason": str(exc)})
            continue
        if typ is None:
            if is_root:
                raise UnknownDatasetError(f"root dataset {ns}:{name} has no column {k.column!r}")
            reason = (f"no column lineage and no column named {k.column}" if k.how == "name_match"
                      else f"key column {k.column} is not in the table's schema")
            unresolved.append({"namespace": ns, "name": name, "reason": reason})
            continue
        via = None
        if k.via:
            via = {"namespace": k.via[0][0], "name": k.via[0][1], "column": k.via[1],
                   "job": f"{k.job[0]}:{k.job[1]}" if k.job else None}
        targets.append(ResolvedTarget(ns, name, conn, k.column, typ, k.how, via))
    # stores fed by those datasets (feature views): connectors that derive their targets
    from connectors.base import DerivesTargets

    for conn in registry.connectors:
        if isinstance(conn, DerivesTargets):
            try:
                more, more_unresolved, left = conn.derive_targets(graph, list(targets), unresolved)
            except Exception as exc:   # the store is unreachable or misconfigured
                raise translated(exc, f"{conn.name}: cannot read the store", limit=400) from None
            targets.extend(more)
            unresolved.extend(more_unresolved)
            if untouched is not None:
                untouched.extend(left)
    # sources before the stores materialized from them
    targets.sort(key=lambda t: t.connector.capabilities.erase_order)
    return targets, unresolved, out_of_scope


def typed_values(targets: list[ResolvedTarget], subjects: list[tuple[str, str]]
                 ) -> dict[tuple[int, str], Any]:
    """(target index, subject hmac) -> the typed key value; refuses a wrong type up front."""
    out = {}
    for i, t in enumerate(targets):
        for hm, raw in subjects:
            out[(i, hm)] = coerce_subject_id(raw, t.key_type, hm, f"{t.column} of {t.name}")
    return out


def residue_after(t: ResolvedTarget) -> dict[str, Any]:
    """What remains once erased, in the mode the connector's own settings choose."""
    return t.connector.residue_after(t.namespace, t.name)


def plan_erasures(config: Config, graph: LineageGraph, registry: ConnectorRegistry,
                  subjects: list[tuple[str, str]], with_residue: bool = True) -> list[Plan]:
    """One plan per subject (hmac, raw id), measured in one pass per dataset."""
    from connectors.base import abilities, count_target

    untouched: list[dict] = []
    targets, unresolved, out_of_scope = resolve_targets(config, graph, registry, untouched)
    values = typed_values(targets, subjects)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    per_subject: dict[str, list[Target]] = {hm: [] for hm, _ in subjects}
    for i, t in enumerate(targets):
        vals = [values[(i, hm)] for hm, _ in subjects]
        try:
            counted = count_target(t.connector, t.namespace, t.name, t.column,
                                   list(dict.fromkeys(vals)), with_residue, t.derived_from)
        except Exception as exc:   # the library's error, translated once, keys redacted
            raise translated(exc, f"{t.name}: cannot read with the {t.connector.name} "
                             "connector", vals) from None
        after = residue_after(t)
        for hm, _ in subjects:
            v = values[(i, hm)]
            per_subject[hm].append(Target(
                t.namespace, t.name, t.connector.name, t.column, t.key_type, t.how,
                t.derived_from, counted.rows.get(v, 0), counted.files.get(v, []),
                counted.version, counted.residue.get(v, []), after,
                counted.details.get(v, {}), list(counted.not_verified), t.key_suffix))
    notes = [f"{t.name}: key column {t.column} matched by name (no column lineage)"
             for t in targets if t.how == "name_match"]
    can = {t.connector.name: abilities(t.connector) for t in targets}
    return [Plan(hm, now, per_subject[hm], list(unresolved), list(out_of_scope), notes,
                 list(untouched), dict(can)) for hm, _ in subjects]


__all__ = ["Plan", "ResolvedTarget", "Target", "plan_erasures", "resolve_targets"]
