"""Verification sweeps: prove every completed erasure still holds, and catch re-ingestion.

A sweep re-reads lineage (new events may show new downstream datasets), plans every erased
subject again against the lake as it is now, in one pass per dataset for all subjects, and
reports each place a subject is back: live rows, unvacuumed files or log residue in Delta
tables, rows in Parquet files, Feast online keys or offline rows Feast would materialize,
model versions trained on the subject's data without a retrain flag. Findings are recorded
in the ledger. `fix` files a new request for each subject found and runs it.

State at rest: the subjects are the sealed ids already in the ledger (AES-GCM under a key
kept outside the ledger file); a sweep decrypts them in memory only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from connectors.base import FileVersions, Presentation

from .errors import ExitCode
from .execution import subject_texts
from .planning import governed, measure
from .requests import finished, submit
from .subject import short

if TYPE_CHECKING:
    from .engine import Engine

EXIT_FINDINGS = ExitCode.FOUND_AGAIN
EXIT_NOT_VERIFIED = ExitCode.NEEDS_OPERATOR


@dataclass
class SweepResult:
    swept_at: str
    requests_checked: int = 0
    subjects: int = 0
    targets_scanned: list[dict[str, Any]] = field(default_factory=list)
    findings: list[dict[str, Any]] = field(default_factory=list)
    open_model_flags: list[dict[str, Any]] = field(default_factory=list)
    fixed: list[dict[str, Any]] = field(default_factory=list)
    # targets the sweep could not look at in full (an object store not listed...): "clean"
    # is never said of them
    not_verified: list[dict[str, Any]] = field(default_factory=list)
    # subjects not swept, and why: under a legal hold for all their data (never re-erased),
    # or their sealed ids crypto-shredded (`erasure shred`: nothing left to look for)
    held: list[dict[str, Any]] = field(default_factory=list)
    shredded: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def status(self) -> str:
        return "findings" if self.findings else "not_verified" if self.not_verified else "clean"

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "swept_at": self.swept_at,
                "requests_checked": self.requests_checked, "subjects": self.subjects,
                "targets_scanned": self.targets_scanned, "findings": self.findings,
                "open_model_flags": self.open_model_flags, "fixed": self.fixed,
                "not_verified": self.not_verified, "held": self.held,
                "shredded": self.shredded, "seconds": round(self.seconds, 3)}


def run_sweep(engine: Engine, fix: bool = False) -> SweepResult:
    t0 = time.perf_counter()
    ledger = engine.ledger
    res = SweepResult(datetime.now(timezone.utc).isoformat(timespec="seconds"))
    # what the sweep needs of each finished request, in the order they were submitted, not
    # its whole state (100,000 folded states with their plans would hold gigabytes)
    # governance's facts of each request (identities, reason, day) only when a policy or a
    # hold may use them
    active = engine.policy is not None or bool(engine.holds().holds)
    done = finished(ledger, with_facts=active)
    res.requests_checked = len(done)
    if not done:
        res.seconds = time.perf_counter() - t0
        ledger.append(None, "sweep.completed", {k: v for k, v in res.to_json().items()
                                                 if k != "targets_scanned"})
        return res
    from .vault import shredded_request_ids

    shredded = shredded_request_ids(ledger)
    by_subject: dict[str, list] = {}
    for st in done:
        if st.request_id in shredded:          # its sealed id is gone: nothing to look for
            res.shredded.append(st.request_id)
            continue
        by_subject.setdefault(st.subject_hmac, []).append(st)
    # each subject as its first request's plan saw it: identities derived by enrichment
    # included (sealed ids read with a few queries)
    texts = subject_texts(engine, [sts[0].request_id for sts in by_subject.values()])
    raw = {hm: texts[sts[0].request_id] for hm, sts in by_subject.items()}
    # a legal hold on all of a subject's data: not swept, never re-erased; a hold on part of
    # it, and the policy's exemptions and deferrals, leave those datasets out of its sweep
    gov = engine.governance([_facts_state(sts[0]) for sts in by_subject.values()]
                            if active else ())
    for hm in list(raw):
        ids = [h.hold_id for h in gov.holds_on(hm) if h.covers_everything()]
        if ids:
            del raw[hm]
            res.held += [{"request_id": st.request_id, "subject": short(hm), "hold_ids": ids}
                         for st in by_subject[hm]]
    res.subjects = len(raw)
    graph = engine.graph()                     # re-reads the configured lineage events
    seen_targets: dict[str, dict] = {}
    order = {hm: n for n, hm in enumerate(raw)}
    for decisions, group in governed(engine.config, graph, list(raw.items()), gov,
                                     engine.registry, engine.keys.subject_hmac):
        # every erased key matched in one pass per dataset; only the hits are explained
        m = measure(engine.config, graph, engine.registry, group,
                    excluded=decisions.excluded() if decisions is not None else None)
        mine = [hm for hm, _ in group]
        first: list[tuple[int, int]] = []      # (first subject addressing it, target)
        found: dict[str, list[int]] = {}       # subject -> targets with something of it
        for i, rt in enumerate(m.targets):
            if not m.addressed(i):
                continue
            who = [hm for hm in mine if (i, hm) in m.values]
            if not who:
                continue
            first.append((order[who[0]], i))
            conn = engine.registry.get(rt.connector.name)
            # a subject the target holds nothing of gets this Target in its plan; when that
            # says nothing (the usual case), only the hits need their own
            quiet = _quiet(m.empty_target(i), conn)
            for hm in (m.hits(i) if quiet else who):
                found.setdefault(hm, []).append(i)
        # targets (and what could not be verified) in the order the subjects' plans list them
        for _, i in sorted(first):
            t = m.empty_target(i)
            if t.key in seen_targets:
                continue
            if t.not_verified:
                res.not_verified.append({"connector": t.connector, "namespace": t.namespace,
                                         "name": t.name, "reasons": list(t.not_verified)})
            seen_targets[t.key] = {"connector": t.connector, "namespace": t.namespace,
                                   "name": t.name, "column": t.column}
        for hm in mine:                        # findings in plan order: subject, target, request
            for i in sorted(found.get(hm, ())):
                t = m.target(i, hm)
                conn = engine.registry.get(t.connector)
                for st in by_subject[hm]:
                    f = _finding(st, t, t.key not in st.planned, st.erased, conn)
                    if f is None and _erased_by_flag(t) and t.details.get("flagged"):
                        res.open_model_flags.append({"request_id": st.request_id,
                                                     "model_version": t.name})
                    if f is not None:
                        res.findings.append(f)
    res.targets_scanned = list(seen_targets.values())
    with ledger.transaction():
        for f in res.findings:
            ledger.append(f["request_id"], "sweep.finding", dict(f))   # the body gets an actor
        ledger.append(None, "sweep.completed", {
            "status": res.status, "requests_checked": res.requests_checked,
            "subjects": res.subjects, "targets_scanned": len(res.targets_scanned),
            "findings": len(res.findings), "not_verified": res.not_verified,
            "held": len(res.held), "shredded": len(res.shredded)})
    if fix and res.findings:
        from .execution import Runner

        from .errors import InputError

        again = {}
        by_id = {s.request_id: s for s in done}
        for f in res.findings:
            st = by_id[f["request_id"]]
            if st.subject_hmac in again:
                continue
            try:
                again[st.subject_hmac] = submit(
                    ledger, engine.keys, raw[st.subject_hmac], "erasure sweep",
                    f"re-erasure after sweep finding for {st.request_id}")
            except InputError as exc:   # one subject that cannot be filed stops no other
                res.fixed.append({"request_id": None, "subject": short(st.subject_hmac),
                                  "status": "failed", "error": str(exc)})
        outcomes = Runner(engine).run(list(again.values())) if again else []
        res.fixed += [{"request_id": o.request_id, "status": o.status} for o in outcomes]
    res.seconds = time.perf_counter() - t0
    return res


def _facts_state(st) -> Any:
    """What governance needs of a finished request (`requests.Finished`)."""
    from types import SimpleNamespace

    return SimpleNamespace(subject_hmac=st.subject_hmac, reason=st.reason,
                           received_at=st.received_at, identities=list(st.identities),
                           identity_types=sorted({i["type"] for i in st.identities
                                                  if i.get("type")}))


def _quiet(t, conn) -> bool:
    """True when target `t` (a subject's Target) gives no finding and no open model flag."""
    if _erased_by_flag(t):
        return not t.rows and not t.details.get("flagged")
    shown = conn.presentation if conn is not None else Presentation.default(t.connector)
    return not shown.sweep_kinds(t.to_json())


def _erased_by_flag(t) -> bool:
    """A target whose erasure is a flag (a model version to retrain), not a delete: its
    connector says so in the plan (`residue_after` mode "flag")."""
    return t.residue_after.get("mode") == "flag"


def _finding(st, t, new_target: bool, erased: dict[str, int],
             conn=None) -> dict[str, Any] | None:
    base = {"request_id": st.request_id, "subject": short(st.subject_hmac),
            "connector": t.connector, "namespace": t.namespace, "name": t.name,
            "column": t.column, "new_since_erasure": new_target}
    if _erased_by_flag(t):
        if t.rows and not t.details.get("flagged"):
            return {**base, "kind": "model trained on the subject's data is not flagged",
                    "rows": t.rows, "dataset": (t.derived_from or {}).get("name"),
                    "dataset_version": (t.derived_from or {}).get("dataset_version")}
        return None
    # what is back, in the connector's words (its Presentation)
    shown = conn.presentation if conn is not None else Presentation.default(t.connector)
    kinds = shown.sweep_kinds(t.to_json())
    strict = t.residue_after.get("mode") != "keep-history"
    residue = t.residue_now if strict else []
    if not kinds:
        return None
    since = None
    if isinstance(conn, FileVersions) and t.files:
        versions = conn.file_versions(t.namespace, t.name, t.files)
        since = min(versions.values()) if versions else None
    return {**base, "kind": ", ".join(kinds), "rows": t.rows, "files": t.files[:20],
            "residue": residue[:20], "table_version_now": t.table_version,
            "erased_at_version": erased.get(t.name), "since_version": since}
