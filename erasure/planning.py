"""Plan an erasure: which datasets hold a subject, by which key, how many rows. Changes nothing.

The plan is plain, frozen data with a canonical JSON form; the dry run (`erasure plan`) and
the real run share it. Subjects are named only by their keyed HMAC.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Iterator

from .canonical import canonical_text
from .config import Config
from .errors import SubjectKeyTypeError, UnknownDatasetError, translated
from .lineage.graph import LineageGraph, trace_subject_keys
from .identity import Subject, describe
from .subject import coerce_subject_id, redact_paths

if TYPE_CHECKING:
    from connectors.base import ConnectorRegistry

PLAN_FORMAT = 1


def _copy(x: Any) -> Any:
    """A JSON value copied all the way down (what dataclasses.asdict gave, without its
    per-element dataclass checks: 3.4 s of a 1,000-request run went to asdict)."""
    if type(x) is dict:
        return {k: _copy(v) for k, v in x.items()}
    if type(x) is list or type(x) is tuple:
        return [_copy(v) for v in x]
    return x


def _fields_of(obj: Any, skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """A dataclass of JSON values as a dict, like `asdict` (its fields in order, containers
    copied); `skip`ped fields are left out for the caller to fill."""
    return {f.name: _copy(getattr(obj, f.name)) for f in fields(obj) if f.name not in skip}


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
    # the identity type the key column holds (erasure/identity.py); "" in plans recorded
    # before identities existed (and then not in the JSON)
    identity: str = ""
    # per key value the request addresses this target with, its HMAC (of "type\x1fvalue")
    # and rows: where the identity normalizes (each spelling found) or there are several
    # values; never a value. Empty otherwise (and then not in the JSON)
    values: list[dict[str, Any]] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Names the target in step entries: the format is evidence and never changes."""
        return f"{self.connector}|{self.namespace}|{self.name}|{self.column}{self.key_suffix}"

    def to_json(self) -> dict[str, Any]:
        d = _fields_of(self)
        for optional in ("key_suffix", "identity", "values"):
            if not d[optional]:
                del d[optional]
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
    # datasets the subject's data may reach but that the request's identities cannot address
    # (an untyped id that a key column's type cannot hold, an identity type the request does
    # not carry), each with the reason; in the JSON only when not empty
    not_applicable: list[dict[str, str]] = field(default_factory=list)
    # the request's identities, by type and HMAC (never a value), and where each came from
    identities: list[dict[str, Any]] = field(default_factory=list)
    # governance (erasure/governance.py): datasets the policy exempts (with the legal basis)
    # or defers (with the reason), datasets a legal hold freezes (with the hold ids), and the
    # policy's hash and source; in the JSON only when there is a policy or a decision
    exempt: list[dict[str, Any]] = field(default_factory=list)
    deferred: list[dict[str, Any]] = field(default_factory=list)
    held: list[dict[str, Any]] = field(default_factory=list)
    policy: dict[str, Any] | None = None
    # the subject text the plan was made for, derived identities included (never in the JSON:
    # the runner seals it with the plan, erasure/enrich.py)
    subject_text: str = field(default="", repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        d = _fields_of(self)     # its targets are replaced by their own JSON below
        del d["subject_text"]
        for optional in ("connectors", "not_applicable", "identities", "exempt", "deferred",
                         "held", "policy"):
            if not d[optional]:
                del d[optional]
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
                   d.get("connectors", {}), d.get("not_applicable", []),
                   d.get("identities", []), d.get("exempt", []), d.get("deferred", []),
                   d.get("held", []), d.get("policy"))

    def waiting(self) -> str | None:
        """"on_hold" when a legal hold keeps part of the subject's data, "deferred" when the
        policy defers part of it, else None: such a request is not finished by its run."""
        return "on_hold" if self.held else "deferred" if self.deferred else None

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
    identity: str = ""       # the identity type its key column holds (from its root)


def resolve_targets(config: Config, graph: LineageGraph, registry: ConnectorRegistry,
                    untouched: list[dict] | None = None,
                    excluded: dict[tuple[str, str], str] | None = None
                    ) -> tuple[list[ResolvedTarget], list[dict], list[dict]]:
    """The datasets the trace reaches that a connector handles, and what is unresolved and
    out of scope. `excluded`: datasets governance keeps out of this plan (erasure/
    governance.py), neither erased nor traced through; the plan lists them apart, so they
    are not in `out_of_scope`."""
    from .governance import trace_args

    roots, overrides = trace_args(config, graph, excluded)
    trace = trace_subject_keys(graph, roots, overrides)
    targets: list[ResolvedTarget] = []
    unresolved = [{"namespace": ns, "name": n, "reason": why}
                  for (ns, n), why in sorted(trace.unresolved.items())]
    out_of_scope = [{"namespace": ns, "name": n, "reason": why}
                    for (ns, n), why in sorted(trace.out_of_scope.items())
                    if (ns, n) not in (excluded or {})]
    root_ids = {graph.canonical(ds) for ds, _, _ in roots}
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
        targets.append(ResolvedTarget(ns, name, conn, k.column, typ, k.how, via,
                                      identity=k.identity))
    # stores fed by those datasets (feature views): connectors that derive their targets
    from connectors.base import DerivesTargets

    for conn in registry.connectors:
        if isinstance(conn, DerivesTargets):
            try:
                more, more_unresolved, left = conn.derive_targets(graph, list(targets), unresolved)
            except Exception as exc:   # the store is unreachable or misconfigured
                raise translated(exc, f"{conn.name}: cannot read the store", limit=400) from None
            # a derived target holds the identity type of the dataset it derives from
            kinds = {(t.namespace, t.name): t.identity for t in targets}
            for t in more:
                src = t.derived_from or {}
                targets.append(t if t.identity else replace(t, identity=kinds.get(
                    (str(src.get("namespace")), str(src.get("name"))), t.column)))
            unresolved.extend(more_unresolved)
            if untouched is not None:
                untouched.extend(left)
    # sources before the stores materialized from them
    targets.sort(key=lambda t: t.connector.capabilities.erase_order)
    return targets, unresolved, out_of_scope


NOT_APPLICABLE = object()


def subject_value(subject: Subject, t: Any, hm: str) -> tuple[Any, str | None]:
    """The typed key values a request addresses `t` (a Target or ResolvedTarget) with (a
    list), or (NOT_APPLICABLE, why). Values of the target's identity type must fit its key
    column (SubjectKeyTypeError, exit 4, otherwise); an untyped subject id that the column's
    type cannot hold makes the target not applicable, which is no error."""
    where = f"{t.column} of {t.name}"
    typed = subject.of_type(t.identity) if t.identity else []
    if typed:
        return [coerce_subject_id(v, t.key_type, hm, where) for v in typed], None
    if subject.subject_id is None:
        return NOT_APPLICABLE, (f"key column {t.column} holds {t.identity or t.column} "
                                "identities and the request carries none")
    try:
        return [coerce_subject_id(subject.subject_id, t.key_type, hm, where)], None
    except SubjectKeyTypeError:
        return NOT_APPLICABLE, (f"the subject id cannot be a {t.key_type} value, the type of key "
                                f"column {t.column} ({t.identity or t.column} identities)")


def key_values(config: Config, targets: list[tuple[Any, Any]], subjects: list[tuple[str, str]]
               ) -> tuple[dict[tuple[int, str], list[Any]], dict[str, list[dict[str, str]]],
                          dict[int, str]]:
    """The typed key values each subject's identities address each target with.

    `targets`: (target, connector) pairs (a ResolvedTarget at plan time, a planned Target at
    run time). Returns (target index, subject hmac) -> values, for the targets each subject
    addresses; per subject the targets it cannot address, with the reason; and per target
    index what could not be searched. Where the target's identity type normalizes
    (`[[identities]] normalize`), the values are the normalized value and every spelling of
    it the dataset holds (`FindsKeyVariants`), each erased by exact match; a connector that
    cannot list them gets the normalized value only, and the plan says the other spellings
    were not searched. A subject that addresses no target at all is refused (exit 4)."""
    from connectors.base import FindsKeyVariants

    from .identity import normalized

    out: dict[tuple[int, str], list[Any]] = {}
    skipped: dict[str, list[dict[str, str]]] = {hm: [] for hm, _ in subjects}
    unsearched: dict[int, str] = {}
    # targets of one identity and key type get the same values: typed once per subject (a
    # target that cannot hold them is typed on its own, for its own reason or error)
    kinds = [(t.identity, t.key_type) for t, _ in targets]
    for hm, raw in subjects:
        subject = Subject.parse(raw)
        typed: dict[tuple[str, str], Any] = {}
        for i, (t, _) in enumerate(targets):
            v = typed.get(kinds[i], NOT_APPLICABLE)
            why = None
            if v is NOT_APPLICABLE:
                v, why = subject_value(subject, t, hm)
                if v is not NOT_APPLICABLE:
                    typed[kinds[i]] = v
            if v is NOT_APPLICABLE:
                skipped[hm].append({"namespace": t.namespace, "name": t.name,
                                    "column": t.column, "identity": t.identity,
                                    "reason": why or ""})
            else:
                out[(i, hm)] = list(v)
        if targets and len(skipped[hm]) == len(targets):
            raise SubjectKeyTypeError(
                f"subject {hm[:12]}…: no dataset the lineage reaches can hold its identities "
                f"({'; '.join(sorted({s['reason'] for s in skipped[hm]}))}); nothing was changed")
    for i, (t, conn) in enumerate(targets):
        spec = config.identities.get(t.identity) if t.identity else None
        if spec is None or spec.normalize is None or t.key_type not in ("string",
                                                                        "large_string"):
            continue
        mine = {hm: [normalized(spec.normalize, v) for v in vals]
                for (j, hm), vals in out.items() if j == i}
        if not mine:
            continue
        if isinstance(conn, FindsKeyVariants):
            found = conn.key_variants(t.namespace, t.name, t.column, spec.normalize,
                                      sorted({v for vs in mine.values() for v in vs}))
        else:
            found = {}
            unsearched[i] = (f"other spellings of {t.identity} identities (case, spaces: "
                             f"normalize = {spec.normalize}) were not searched: the "
                             f"{conn.name} connector cannot list key variants")
        for hm, norms in mine.items():
            out[(i, hm)] = list(dict.fromkeys(
                x for norm in norms for x in [norm, *found.get(norm, [])]))
    return out, skipped, unsearched


def _union(lists: Any) -> list[Any]:
    return list(dict.fromkeys(x for xs in lists for x in xs))


def _union_of(by_value: dict[Any, list[Any]], vs: list[Any]) -> list[Any]:
    """`_union` of the lists `by_value` holds for the values `vs` (most hold none)."""
    if len(vs) == 1:
        xs = by_value.get(vs[0])
        return list(dict.fromkeys(xs)) if xs else []
    return _union(by_value.get(v, []) for v in vs)


def _details(details: dict[Any, dict[str, Any]], vs: list[Any]) -> dict[str, Any]:
    """One target's connector facts over several values: the first value's, with counts
    summed and lists joined across them."""
    first = dict(details.get(vs[0], {}))
    for v in vs[1:]:
        for k, x in details.get(v, {}).items():
            if isinstance(x, int) and not isinstance(x, bool) and isinstance(first.get(k), int):
                first[k] += x
            elif isinstance(x, list) and isinstance(first.get(k), list):
                first[k] = _union([first[k], x])
            else:
                first.setdefault(k, x)
    return first


def residue_after(t: ResolvedTarget) -> dict[str, Any]:
    """What remains once erased, in the mode the connector's own settings choose."""
    return t.connector.residue_after(t.namespace, t.name)


@dataclass
class Measurement:
    """Every subject's key values and one count per target for all of them: the part of
    planning that reads the lake. `plan_erasures` turns it into one Plan per subject; a sweep
    turns only the hits into findings (`hits`, `target`)."""

    targets: list[ResolvedTarget]
    unresolved: list[dict]
    out_of_scope: list[dict]
    untouched: list[dict]
    subjects: list[tuple[str, str]]            # (hmac, text), derived identities included
    requested: dict[str, str]                  # (hmac -> text) as the request gave it
    enriched: dict[str, Any]
    values: dict[tuple[int, str], list[Any]]   # (target index, hmac) -> typed key values
    skipped: dict[str, list[dict[str, str]]]
    counted: dict[int, Any]                    # target index -> TargetCount
    after: dict[int, dict[str, Any]]
    not_verified: dict[int, list[str]]
    normalizes: dict[int, bool]
    created_at: str

    def addressed(self, i: int) -> bool:
        return i in self.counted

    def target(self, i: int, hm: str, hmac_of: Callable[[str], str] | None = None) -> Target:
        """Subject `hm`'s Target in target `i` (which it addresses), as its plan holds it."""
        t, counted, vs = self.targets[i], self.counted[i], self.values[(i, hm)]
        shown = ([{"hmac": hmac_of(f"{t.identity}\x1f{v}"), "rows": counted.rows.get(v, 0)}
                  for v in vs] if hmac_of is not None and (self.normalizes[i] or len(vs) > 1)
                 else [])
        return Target(
            t.namespace, t.name, t.connector.name, t.column, t.key_type, t.how,
            t.derived_from, sum(counted.rows.get(v, 0) for v in vs),
            redact_paths(_union_of(counted.files, vs), vs), counted.version,
            redact_paths(_union_of(counted.residue, vs), vs),
            self.after[i], _details(counted.details, vs), self.not_verified[i], t.key_suffix,
            t.identity, shown)

    def empty_target(self, i: int) -> Target:
        """Target `i` as the plan of a subject whose keys it does not hold at all (no row,
        file, trace or connector fact), without per-value HMACs."""
        t = self.targets[i]
        return Target(t.namespace, t.name, t.connector.name, t.column, t.key_type, t.how,
                      t.derived_from, 0, [], self.counted[i].version, [], self.after[i], {},
                      self.not_verified[i], t.key_suffix, t.identity, [])

    def hits(self, i: int) -> set[str]:
        """The subjects (hmacs) for whom target `i` holds anything: rows, files, residue or
        connector facts for one of their key values. Every other subject's Target there is
        `empty_target(i)`."""
        c = self.counted[i]
        held = ({v for v, n in c.rows.items() if n} | {v for v, x in c.files.items() if x}
                | {v for v, x in c.residue.items() if x} | {v for v, x in c.details.items() if x})
        if not held:
            return set()
        return {hm for hm, _ in self.subjects
                if any(v in held for v in self.values.get((i, hm), ()))}


def measure(config: Config, graph: LineageGraph, registry: ConnectorRegistry,
            subjects: list[tuple[str, str]], with_residue: bool = True,
            excluded: dict[tuple[str, str], str] | None = None) -> Measurement:
    """Resolve the targets, enrich the subjects, type their key values and count every
    target once for all of them (one `count_target` per dataset, all keys). `excluded`:
    see `resolve_targets`."""
    with _gc_paused():
        return _measure(config, graph, registry, subjects, with_residue, excluded)


def governed(config: Config, graph: LineageGraph, subjects: list[tuple[str, str]],
             governance: Any, registry: ConnectorRegistry | None = None,
             hmac_of: Callable[[str], str] | None = None
             ) -> list[tuple[Any, list[tuple[str, str]]]]:
    """The subjects grouped by their governance decisions (erasure/governance.py), in the
    order of their first subject: [(Decisions or None, subjects)]. Without governance, one
    group with no decisions. With legal holds and `[[enrich]]`, the identities enrichment
    derives are looked up first (with `registry` and `hmac_of`): a hold on a user id holds a
    request by e-mail that the CRM maps to it, from its very first plan."""
    if governance is None or not governance.active:
        return [(None, subjects)]
    if governance.holds and governance.holds.holds and config.enrich \
            and registry is not None and hmac_of is not None:
        from .enrich import enrich_subjects, records

        for hm, e in enrich_subjects(config, registry, subjects).items():
            derived = records(e, hmac_of)
            governance.derived[hm] = derived
            governance.learn(hm, {r["hmac"] for r in derived})
    groups: dict[str, tuple[Any, list[tuple[str, str]]]] = {}
    for hm, text in subjects:
        d = governance.decide(config, graph, hm)
        groups.setdefault(d.key(), (d, []))[1].append((hm, text))
    return list(groups.values())


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while measuring: per-key lists and tuples for 100,000
    subjects set off full collections over everything the process holds (a third of a
    20,000-subject sweep's time). Measuring makes no reference cycles worth collecting."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _measure(config: Config, graph: LineageGraph, registry: ConnectorRegistry,
             subjects: list[tuple[str, str]], with_residue: bool,
             excluded: dict[tuple[str, str], str] | None = None) -> Measurement:
    from connectors.base import count_target

    from .enrich import enrich_subjects

    untouched: list[dict] = []
    targets, unresolved, out_of_scope = resolve_targets(config, graph, registry, untouched,
                                                        excluded)
    requested = dict(subjects)
    enriched = enrich_subjects(config, registry, subjects) if config.enrich else {}
    if enriched:     # every key of the person: the request's identities and derived ones
        subjects = [(hm, enriched[hm].subject.text()) for hm, _ in subjects]
    values, skipped, unsearched = key_values(config, [(t, t.connector) for t in targets],
                                             subjects)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    m = Measurement(targets, unresolved, out_of_scope, untouched, subjects, requested, enriched,
                    values, skipped, {}, {}, {}, {}, now)
    per_target: dict[int, list[Any]] = {}
    for (i, _), vs in values.items():      # in subject order, as the plan lists them
        per_target.setdefault(i, []).extend(vs)
    for i, t in enumerate(targets):
        vals = per_target.get(i)
        if not vals:
            continue
        try:
            counted = count_target(t.connector, t.namespace, t.name, t.column,
                                   list(dict.fromkeys(vals)), with_residue, t.derived_from)
        except Exception as exc:   # the library's error, translated once, keys redacted
            raise translated(exc, f"{t.name}: cannot read with the {t.connector.name} "
                             "connector", vals) from None
        m.counted[i] = counted
        m.after[i] = residue_after(t)
        m.not_verified[i] = list(counted.not_verified) + (
            [unsearched[i]] if i in unsearched else [])
        spec = config.identities.get(t.identity) if t.identity else None
        m.normalizes[i] = spec is not None and spec.normalize is not None
    return m


def plan_erasures(config: Config, graph: LineageGraph, registry: ConnectorRegistry,
                  subjects: list[tuple[str, str]], with_residue: bool = True,
                  hmac_of: Callable[[str], str] | None = None,
                  governance: Any = None) -> list[Plan]:
    """One plan per subject (hmac, the request's subject text: erasure/identity.py), measured
    in one pass per dataset. With `hmac_of` (the subject key's HMAC) the plan records the
    request's identities by type and HMAC. With `governance` (erasure/governance.py) each
    subject's exempt, deferred and held datasets are left out and listed; subjects with the
    same decisions are measured together."""
    with _gc_paused():
        plans: dict[str, Plan] = {}
        for decisions, group in governed(config, graph, subjects, governance, registry,
                                         hmac_of):
            listing = (decisions.listing(governance.policy) if decisions is not None
                       else {})
            excluded = decisions.excluded() if decisions is not None else None
            if decisions is not None and decisions.held_everything:
                now = datetime.now(timezone.utc).isoformat(timespec="seconds")
                for hm, text in group:      # held for everything: nothing is even measured
                    ids = (describe(Subject.parse(text), hmac_of)
                           + governance.derived.get(hm, []) if hmac_of is not None else [])
                    plans[hm] = Plan(hm, now, [], [], [], identities=ids, held=[{
                        "namespace": "*", "name": "*",
                        "hold_ids": decisions.held_everything}], subject_text=text)
                continue
            for p in plans_of(measure(config, graph, registry, group, with_residue, excluded),
                              hmac_of):
                plans[p.subject_hmac] = replace(p, **listing) if listing else p
        return [plans[hm] for hm, _ in subjects]


def plans_of(m: Measurement, hmac_of: Callable[[str], str] | None = None) -> list[Plan]:
    """One Plan per measured subject."""
    from connectors.base import abilities

    from .enrich import records

    targets, subjects = m.targets, m.subjects
    per_subject: dict[str, list[Target]] = {hm: [] for hm, _ in subjects}
    for i in range(len(targets)):
        if not m.addressed(i):
            continue
        for hm, _ in subjects:
            if (i, hm) in m.values:
                per_subject[hm].append(m.target(i, hm, hmac_of))
    notes = [f"{t.name}: key column {t.column} matched by name (no column lineage)"
             for t in targets if t.how == "name_match"]
    plans = []
    # once per connector: the isinstance checks of runtime protocols are slow
    known = {t.connector.name: abilities(t.connector) for t in targets}
    for hm, raw in subjects:
        mine = per_subject[hm]
        can = {t.connector: known[t.connector] for t in mine}
        ids = (describe(Subject.parse(m.requested[hm]), hmac_of)
               + (records(m.enriched[hm], hmac_of) if hm in m.enriched else [])
               if hmac_of is not None else [])
        plans.append(Plan(hm, m.created_at, mine, list(m.unresolved), list(m.out_of_scope),
                          notes, list(m.untouched), can, m.skipped[hm], ids, subject_text=raw))
    return plans


__all__ = ["Measurement", "Plan", "ResolvedTarget", "Target", "measure", "plan_erasures",
           "plans_of", "resolve_targets"]
