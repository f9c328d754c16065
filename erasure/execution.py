"""Execute planned erasures: erase -> purge -> verify per dataset, recorded step by step.

Idempotent and resumable: a completed step is never repeated; a step that was started but
not recorded as completed (the process died) is re-checked and finished on the next run.
Many requests run together in one pass per dataset; each keeps its own steps and evidence.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, cast

from connectors.base import (EraseResult, ErasesInTransaction, ProvenanceAware,
                             ProvenanceContext, Purges, PurgesAgainstPlan,
                             TracesAttempts, Versioned, VerifiesItself, count_target)

from .config import PURGE_MODES
from .errors import ConnectorError, GuardTripped, InputError, RetryableError, translated
from .planning import Target, _union, key_values, plan_erasures
from .requests import RequestState, load_states
from .subject import redact_paths, short

if TYPE_CHECKING:
    from connectors.base import Connector

    from .engine import Engine

log = logging.getLogger("erasure.run")
PLAN_SUBJECT = "#plan"     # the sealed subject of a request's latest plan: <request>#plan


def subject_text(engine: Engine, rid: str) -> str:
    """The subject of a request as its latest plan saw it (with the identities enrichment
    derived), or as it was submitted when no plan has been recorded."""
    return subject_texts(engine, [rid])[rid]


def subject_texts(engine: Engine, rids: list[str]) -> dict[str, str]:
    """`subject_text` of each request, the sealed ids read with a few queries."""
    names = [n for rid in rids for n in (rid + PLAN_SUBJECT, rid)]
    sealed = engine.ledger.sealed_many(names)
    out = {}
    for rid in rids:
        blob = sealed.get(rid + PLAN_SUBJECT)
        if blob is not None:
            out[rid] = engine.keys.unseal(blob, rid + PLAN_SUBJECT)
        elif rid in sealed:
            out[rid] = engine.keys.unseal(sealed[rid], rid)
        else:                                   # says which request has none
            out[rid] = engine.keys.unseal(engine.ledger.sealed_subject(rid), rid)
    return out
PHASES = ("erase", "purge", "verify")


@dataclass
class Member:
    """One request's part in erasing one target: the key values its identities address the
    target with (one, or every spelling of a normalized identity)."""
    request_id: str
    subject_hmac: str
    target: Target
    values: tuple[Any, ...]


def flat(members: list[Member]) -> list[Any]:
    """Every distinct key value of the members, in order."""
    return list(dict.fromkeys(v for m in members for v in m.values))


@dataclass
class Outcome:
    request_id: str
    status: str
    targets: list[dict[str, Any]] = field(default_factory=list)
    unresolved: list[dict[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    retryable: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"request_id": self.request_id, "status": self.status, "targets": self.targets,
                "unresolved": self.unresolved, "errors": self.errors, "notes": self.notes,
                "retryable": self.retryable}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Runner:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.ledger = engine.ledger
        self.config = engine.config
        self.batch = "run-" + uuid.uuid4().hex[:16]
        self.failed: dict[str, list[str]] = {}
        self.waiting: dict[str, Outcome] = {}   # requests set aside: held, not approved
        self.governance: Any = None             # policy and holds (set by `run`)
        self.unverified: dict[str, list[str]] = {}   # request -> parts not verified, with why
        self.terminal: set[str] = set()    # failed requests that a plain retry will not fix
        # what each connector reached can and cannot do, as the run's plans recorded it
        self.abilities: dict[str, dict[str, Any]] = {}

    # ---- governance -------------------------------------------------------------
    def _gate(self, states: dict[str, RequestState]) -> None:
        """Set aside, before anything is planned, the requests that must wait: a legal hold
        on all of the subject's data, or fewer approvals (by anyone but the submitter) than
        `[approvals] required`. Each gets its outcome now; nothing is recorded."""
        required = self.config.approvals_required
        for rid, st in list(states.items()):
            held = [h.hold_id for h in self.governance.holds_on(st.subject_hmac)
                    if h.covers_everything()]
            if held:
                self.waiting[rid] = Outcome(rid, "on_hold", notes=[
                    f"under legal hold {', '.join(held)}: nothing was planned or erased; "
                    "`erasure hold release` lets the next run finish it"])
            elif required and self._needs_plan(st) and \
                    len(st.approvers_of_any_plan()) < required:
                self.waiting[rid] = Outcome(rid, "awaiting_approval", notes=[
                    f"{len(st.approvers())} of {required} approvals: nothing was erased; "
                    "approve with `erasure request approve " + rid + "`"])
            else:
                continue
            del states[rid]

    def _approved(self, st: RequestState, plan: Any) -> bool:
        """Whether enough actors approved this very plan (its view's digest); if not, the
        request waits, and the change since the plan they approved is recorded once."""
        from .approvals import plan_view, view_diff, view_digest

        required = self.config.approvals_required
        rid = st.request_id
        if not required:
            return True
        view = plan_view(plan.to_json())
        digest = view_digest(view)
        if len(st.approvers(digest)) >= required:
            return True
        seen = max(st.approvals, key=lambda a: a["seq"], default=None)
        diff = view_diff(seen["view"] or {}, view) if seen else []
        if st.stale is None or st.stale.get("current") != digest:
            body = {"approved": seen["plan_digest"] if seen else None, "current": digest,
                    "diff": diff, "batch": self.batch}
            e = self.ledger.append(rid, "request.approval_stale", body)
            st.apply("request.approval_stale", body, e.seq, e.ts)
        self.waiting[rid] = Outcome(rid, "awaiting_approval", notes=[
            f"the plan changed since it was approved ({len(st.approvers(digest))} of "
            f"{required} approvals of the current plan); approve it again:"] + diff)
        return False

    def _needs_plan(self, st: RequestState) -> bool:
        """A request is planned (again) when its recorded plan does not stand for what may
        be erased now: it has none; its last run left part of it waiting for a hold or the
        policy; `[approvals]` is required and that plan is not the one approved (approvals
        configured after it was recorded, say); the policy changed since (another hash);
        or a legal hold is on the subject now (its datasets must be left out). A request
        resumed after a crash otherwise keeps its plan."""
        if st.plan is None or st.status in ("on_hold", "deferred"):
            return True
        required = self.config.approvals_required
        if required:
            from .approvals import plan_view, view_digest

            if len(st.approvers(view_digest(plan_view(st.plan.to_json())))) < required:
                return True
        gov = self.governance
        policy = gov.policy if gov is not None else self.engine.policy
        if (st.plan.policy or {}).get("hash") != (policy.hash if policy is not None else None):
            return True
        return gov is not None and bool(gov.holds_on(st.subject_hmac))

    # ---- planning ---------------------------------------------------------------
    def _plan(self, states: dict[str, RequestState], raw: dict[str, str], replan: bool) -> None:
        todo = [rid for rid, st in states.items() if self._needs_plan(st) or replan]
        if not todo:
            return
        graph = self.engine.graph()
        registry = self.engine.registry
        subjects = [(states[r].subject_hmac, raw[r]) for r in todo]
        gov = self.governance or self.engine.governance(states.values())
        try:
            plans = plan_erasures(self.config, graph, registry, subjects,
                                  hmac_of=self.engine.keys.subject_hmac, governance=gov)
            pairs = list(zip(todo, plans))
        except ConnectorError as exc:
            for rid in todo:
                self._fail(rid, f"plan failed: {exc}")
            return
        except InputError:
            pairs = []
            for rid in todo:   # isolate the bad subject; the others go ahead
                try:
                    pairs.append((rid, plan_erasures(
                        self.config, graph, registry, [(states[rid].subject_hmac, raw[rid])],
                        hmac_of=self.engine.keys.subject_hmac, governance=gov)[0]))
                except InputError as exc:
                    self._fail(rid, f"plan refused: {exc}")
        with self.ledger.transaction():   # one durable commit (and head anchor) for the batch
            for rid, plan in pairs:
                if not self._approved(states[rid], plan):
                    del states[rid]
                    continue
                body = {"plan": plan.to_json(), "batch": self.batch}
                self.ledger.append(rid, "plan.recorded", body)
                # derived identities (enrichment) are sealed with the plan: a resumed run,
                # verify and the sweep use them even once the lookup table is erased
                self.ledger.seal_plan_subject(rid, self.engine.keys.seal(
                    plan.subject_text, rid + PLAN_SUBJECT))
                raw[rid] = plan.subject_text
                states[rid].apply("plan.recorded", body)    # as the ledger now folds it

    def _members(self, states: dict[str, RequestState], raw: dict[str, str]
                 ) -> dict[str, list[Member]]:
        """Per planned target, the requests with the key values their identities address it
        with now (`planning.key_values`, as the plan derived them: the spellings of a
        normalized identity are listed again). A request whose identities no longer address a
        planned target, or that finds a spelling the plan did not count, fails alone: re-plan."""
        todo = {rid: st for rid, st in states.items()
                if rid not in self.failed and st.plan is not None}
        targets: dict[str, Target] = {}
        for st in todo.values():
            for t in st.plan.targets if st.plan else []:
                targets.setdefault(t.key, t)
        index = {k: i for i, k in enumerate(targets)}
        pairs = [(t, self.engine.registry.get(t.connector)) for t in targets.values()]
        subjects = {st.subject_hmac: raw[rid] for rid, st in todo.items()}
        try:
            values, _, _ = key_values(self.config, pairs, list(subjects.items()))
        except InputError:     # isolate the subject that addresses none of them
            values = {}
            for hm, text in subjects.items():
                try:
                    values.update(key_values(self.config, pairs, [(hm, text)])[0])
                except InputError as exc:
                    for rid in [r for r, st in todo.items() if st.subject_hmac == hm]:
                        self._fail(rid, str(exc))
        hmac_of = self.engine.keys.subject_hmac
        groups: dict[str, list[Member]] = {}
        for rid, st in todo.items():
            if rid in self.failed or st.plan is None:
                continue
            for t in st.plan.targets:
                vs = values.get((index[t.key], st.subject_hmac))
                if not vs:
                    self._fail(rid, f"{t.name}: the request's identities no longer address "
                                    "it; re-plan with `erasure run --replan`")
                    continue
                if t.values:
                    planned = {x["hmac"] for x in t.values}
                    new = [v for v in vs if hmac_of(f"{t.identity}\x1f{v}") not in planned]
                    if new:
                        self._fail(rid, f"{t.name}: {len(new)} spelling(s) of the subject's "
                                        f"{t.identity} the plan did not count are there now; "
                                        "re-plan with `erasure run --replan`")
                        continue
                groups.setdefault(t.key, []).append(Member(rid, st.subject_hmac, t, tuple(vs)))
        return groups

    def subject_text(self, rid: str) -> str:
        """The request's subject as its recorded plan saw it (derived identities included),
        or as submitted before a plan exists."""
        return subject_text(self.engine, rid)

    def _fail(self, rid: str, error: str, retryable: bool = False) -> None:
        self.failed.setdefault(rid, []).append(error)
        if not retryable:
            self.terminal.add(rid)

    # ---- one dataset --------------------------------------------------------------
    @staticmethod
    def _body(t: Target, phase: str, **body) -> dict[str, Any]:
        """A step entry's body for target `t`."""
        return {"target": t.key, "phase": phase, "namespace": t.namespace, "name": t.name,
                **body}

    def _record_each(self, items: list[tuple[Member, str, dict[str, Any]]]) -> None:
        """A step entry (kind, body) per member, in one transaction (all or none). Members
        whose bodies are equal are given one body object, made canonical once
        (`Ledger.append_many`); each request still gets its own entry."""
        self.ledger.append_many((m.request_id, kind, full) for m, kind, full in items)
        for m, kind, full in items:
            # keep the in-memory state in step with the ledger (as `fold` reads it back)
            self.states[m.request_id].apply(kind, full)

    def _record(self, kind: str, m: Member, phase: str, **body) -> None:
        self._record_each([(m, kind, self._body(m.target, phase, **body))])

    def _record_all(self, kind: str, members: list[Member], phase: str, **body) -> None:
        """The same step entry for every member (of one target)."""
        full = self._body(members[0].target, phase, **body)
        self._record_each([(m, kind, full) for m in members])

    @staticmethod
    def _context(conn: Connector, members: list[Member]) -> ProvenanceContext:
        """What a connector that records provenance (MLflow flags) needs besides the keys."""
        if not conn.capabilities.provenance_context:
            return {}
        requests: dict[Any, list[str]] = {}
        planned: dict[Any, int] = {}
        for m in members:
            for v in m.values:
                requests.setdefault(v, []).append(m.request_id)
                planned[v] = max(planned.get(v, 0), m.target.rows)
        return {"derived": members[0].target.derived_from, "requests": requests,
                "planned": planned}

    def _erased_versions(self, members: list[Member]) -> dict[str, int]:
        """Per dataset, the first version without these subjects: what a retrained model
        must have read to be clean."""
        out: dict[str, int] = {}
        for m in members:
            for name, v in self.states[m.request_id].erased_versions().items():
                out[name] = max(out.get(name, 0), v)
        return out

    def _erase(self, conn, members: list[Member]) -> None:
        t = members[0].target
        pending = [m for m in members
                   if (self.states[m.request_id].step(t.key, "erase") or {}).get("state") != "completed"]
        if not pending:
            return
        # tags of every earlier attempt (crashed or stopped): their commits count as deleted
        earlier_tags = sorted(set().union(*(self.states[m.request_id].tags.get((t.key, "erase"), set())
                                            for m in pending)))
        values = flat(pending)
        # planned rows per member's key values (two requests of one subject count once)
        planned_by_value: dict[Any, int] = {}
        for m in pending:
            planned_by_value[m.values] = max(planned_by_value.get(m.values, 0), m.target.rows)
        planned = sum(planned_by_value.values())
        plan_version = min(m.target.table_version or 0 for m in pending)
        versioned = conn if isinstance(conn, Versioned) else None
        version = versioned.table_version(t.namespace, t.name) if versioned else None
        self._record_all("step.started", pending, "erase", tag=self.batch,
                         table_version=version)
        traceable = isinstance(conn, TracesAttempts)
        already = (conn.rows_deleted_by_tags(t.namespace, t.name, earlier_tags)
                   if earlier_tags and isinstance(conn, TracesAttempts) else 0)
        ctx = self._context(conn, pending)
        live = conn.live_rows(t.namespace, t.name, t.column, values, **ctx)
        guard = conn.capabilities.guard

        def written_since(upto: int | None = None) -> int:
            """The guard's tolerance: rows others wrote since the plan (versioned only)."""
            if guard == "versioned" and versioned is not None:
                return versioned.rows_written_since(t.namespace, t.name, plan_version, upto=upto)
            return 0

        allowed = written_since()
        # a connector that cannot trace an interrupted attempt (a Parquet file rewritten just
        # before a crash) may legitimately find fewer rows than planned on resume
        shortfall_ok = bool(earlier_tags) and not traceable

        present = sum(live.values())

        def off(found: int, tolerance: int, deleted: bool = False) -> bool:
            if guard == "subject-keys":
                # the subject's keys may have been rewritten since the plan, so the plan is no
                # bound; but a delete can remove no more than the subject's keys present
                # just before it
                return deleted and found > present
            diff = found + already - planned
            return diff > tolerance or (diff < -tolerance and not shortfall_ok)

        if off(sum(live.values()), allowed):
            raise GuardTripped(
                f"{t.name}: {sum(live.values()) + already} rows match now but {planned} were "
                f"planned and only {allowed} rows were written since the plan (version "
                f"{plan_version}); nothing was deleted. Re-plan with `erasure run --replan` "
                "after checking the table")
        res = self._call_erase(conn, t, values, ctx, allowed, already, planned, shortfall_ok,
                               present)
        # what others wrote between the plan and the version our delete read (not our own
        # rewrite, which re-adds every surviving row of the files it touched)
        allowed = written_since(upto=res.version_before)
        if off(res.rows_deleted, allowed, deleted=True):
            where = (f"the rows can still be restored from version {res.version_before}"
                     if res.version_before is not None else
                     "the connector keeps no earlier version to restore them from")
            raise GuardTripped(
                f"{t.name}: the delete removed {res.rows_deleted + already} rows against "
                f"{planned} planned (tolerance {allowed}); purge withheld, {where}")
        live_by_member = {m.values: sum(live.get(v, 0) for v in m.values) for m in pending}
        earlier = self._earlier_by_value(planned_by_value, live_by_member, already,
                                         bool(earlier_tags), traceable)
        # one body per distinct (rows planned, live before, deleted earlier): the rest is
        # the batch's
        bodies: dict[tuple[int, int, int], dict[str, Any]] = {}
        items = []
        for m in pending:
            mine = earlier.get(m.values, 0)
            before = live_by_member[m.values] + mine
            full = bodies.get((m.target.rows, before, mine))
            if full is None:
                full = bodies[(m.target.rows, before, mine)] = self._body(
                    t, "erase", tag=self.batch, rows_planned=m.target.rows,
                    rows_live_before=before, rows_deleted=before,
                    subject_rows_deleted_earlier_attempt=mine,
                    earlier_attempt_traced=traceable if earlier_tags else None,
                    batch_rows_deleted=res.rows_deleted, batch_subjects=len(planned_by_value),
                    rows_deleted_earlier_attempt=already, rows_written_since_plan=allowed,
                    version_before=res.version_before, version_after=res.version_after,
                    files_removed=res.files_removed, files_added=res.files_added,
                    conflicts_retried=res.conflicts_retried)
            items.append((m, "step.completed", full))
        self._record_each(items)

    def _call_erase(self, conn: Connector, t: Target, values: list[Any], ctx: ProvenanceContext,
                    allowed: int, already: int, planned: int, shortfall_ok: bool,
                    present: int) -> EraseResult:
        """The erase itself: in the connector's own transaction with the guard's bounds where
        it can (`ErasesInTransaction`), one call per subject where it cannot batch."""
        if isinstance(conn, ErasesInTransaction) and not ctx:
            low = 0 if shortfall_ok or conn.capabilities.guard == "subject-keys" else max(
                planned - already - allowed, 0)
            high = present if conn.capabilities.guard == "subject-keys" else (
                planned - already + allowed)
            return conn.erase_within(t.namespace, t.name, t.column, values, self.batch,
                                     low, high)

        def erase(vals: list[Any]) -> EraseResult:
            if ctx:
                return cast(ProvenanceAware, conn).erase(t.namespace, t.name, t.column, vals,
                                                         self.batch, **ctx)
            return conn.erase(t.namespace, t.name, t.column, vals, self.batch)

        if conn.capabilities.batch or len(values) <= 1:
            return erase(values)
        parts = [erase([v]) for v in values]
        return EraseResult(rows_deleted=sum(p.rows_deleted for p in parts),
                           version_before=parts[0].version_before,
                           version_after=parts[-1].version_after,
                           files_removed=sum(p.files_removed for p in parts),
                           files_added=sum(p.files_added for p in parts),
                           conflicts_retried=sum(p.conflicts_retried for p in parts))

    @staticmethod
    def _earlier_by_value(planned: dict[Any, int], live: dict[Any, int], already: int,
                          resumed: bool, traceable: bool) -> dict[Any, int]:
        """Per key, the rows an interrupted earlier attempt of ours deleted, so the evidence
        of a resumed run counts them (the rows were live when the request was planned).
        Traceable connectors give the batch total from their commit tags; it is shared out
        by what each key is missing against its plan. Others (a rewritten Parquet file) have
        no trace: the shortfall against the plan is all we know, and it is said so."""
        if not resumed:
            return {}
        out: dict[Any, int] = {}
        left = already if traceable else sum(planned.values())
        for v, n in planned.items():
            share = min(max(n - live.get(v, 0), 0), left)
            if share:
                out[v] = share
                left -= share
        return out

    def _purge(self, conn, members: list[Member]) -> None:
        t = members[0].target
        if t.residue_after.get("mode") not in PURGE_MODES or not isinstance(conn, Purges):
            return
        pending = [m for m in members
                   if (self.states[m.request_id].step(t.key, "purge") or {}).get("state") != "completed"]
        if not pending:
            return
        erased = sum((self.states[m.request_id].step(t.key, "erase") or {}).get("rows_deleted", 0)
                     or 0 for m in pending)
        if not erased and not any(m.target.rows or m.target.residue_now for m in pending):
            # the table never held these subjects: nothing to purge, its history is kept
            self._record_all("step.completed", pending, "purge", tag=self.batch, skipped=True,
                             reason="no rows and no residue of the subject were found")
            return
        # the audit record of the table's history must outlive the log cleanup
        self.ledger.append(None, "table.history", {
            "target": t.key, "requests": [m.request_id for m in pending], "batch": self.batch,
            "history": conn.history(t.namespace, t.name)})
        self._record_all("step.started", pending, "purge", tag=self.batch)
        if isinstance(conn, PurgesAgainstPlan):
            # what the dry run recorded of the target (the connector's facts, no key)
            planned = next((m.target.details for m in pending if m.target.details), {})
            res = conn.purge_planned(t.namespace, t.name, t.column, flat(pending), self.batch,
                                     planned)
        else:
            res = conn.purge(t.namespace, t.name, t.column, flat(pending), self.batch)
        self._record_all("step.completed", pending, "purge", tag=self.batch, **res.evidence())

    def _verify(self, conn: Connector, members: list[Member], phase: str = "verify") -> None:
        t = members[0].target
        pending = [m for m in members
                   if phase == "reverify"
                   or (self.states[m.request_id].step(t.key, "verify") or {}).get("state") != "completed"]
        if not pending:
            return
        values = flat(pending)
        if isinstance(conn, VerifiesItself):   # its own proof (MLflow: the flag)
            found = conn.verify(t.namespace, t.name, t.column, values,
                                **self._context(conn, pending),
                                erased_versions=self._erased_versions(pending))
            flagged: dict[str, Any] = dict(
                verified_at=_now(), rows_remaining=0, residue=[],
                residue_mode=t.residue_after.get("mode"), residue_until=None)
            self._record_verifications(phase, [
                (m, _union(found.get(v, []) for v in m.values), flagged) for m in pending])
            return
        counted = count_target(conn, t.namespace, t.name, t.column, values, True, t.derived_from)
        unchecked = list(counted.not_verified)
        # residue is tolerated only where the plan said it would remain (keep-history)
        strict = t.residue_after.get("mode") != "keep-history"
        common: dict[str, Any] = dict(
            table_version=counted.version, verified_at=_now(),
            residue_mode=t.residue_after.get("mode"), not_verified=unchecked)
        clean = dict(rows_remaining=0, live_files=[], residue=[], residue_until=None, **common)
        checks: list[tuple[Member, list[str], dict[str, Any]]] = []
        for m in pending:
            rows = sum(counted.rows.get(v, 0) for v in m.values)
            live_files = redact_paths(_union(counted.files.get(v, []) for v in m.values),
                                      m.values)
            residue = redact_paths(_union(counted.residue.get(v, []) for v in m.values),
                                   m.values)
            if not rows and not live_files and not residue:
                checks.append((m, [], clean))     # the usual case: one body for all of them
                continue
            problems = []
            if rows:
                problems.append(f"{rows} rows still readable")
            if live_files:
                problems.append(f"{len(live_files)} live files still hold the subject's rows")
            if strict and residue:
                problems.append(f"residue in {len(residue)} files: {', '.join(residue[:3])}")
            until = (conn.residue_after(t.namespace, t.name, t.residue_after.get("mode"))
                     .get("until") if residue else None)
            checks.append((m, problems, dict(rows_remaining=rows, live_files=live_files,
                                             residue=residue, residue_until=until, **common)))
        self._record_verifications(phase, checks)

    def _record_verifications(self, phase: str,
                              checks: list[tuple[Member, list[str], dict[str, Any]]]) -> None:
        """Each member's verification (its problems, its evidence), recorded in one
        transaction: failed, "not verified" or "ok". Members given the same evidence object
        share one body per outcome."""
        items: list[tuple[Member, str, dict[str, Any]]] = []
        shared: dict[tuple[int, str], dict[str, Any]] = {}
        for m, problems, body in checks:
            if problems:
                msg = (f"{m.target.name}: verification failed for {short(m.subject_hmac)}: "
                       + "; ".join(problems))
                items.append((m, "step.failed", self._body(m.target, phase, error=msg, **body)))
                self._fail(m.request_id, msg)
                continue
            # what could be read is clean, but a part could not be looked at: never "ok"
            result = "not verified" if body.get("not_verified") else "ok"
            full = shared.get((id(body), m.target.key))
            if full is None:
                full = shared[(id(body), m.target.key)] = self._body(
                    m.target, phase, result=result, **body)
            items.append((m, "step.completed", full))
            if body.get("not_verified"):
                self.unverified.setdefault(m.request_id, []).extend(
                    f"{m.target.name}: not verified: {why}" for why in body["not_verified"])
        self._record_each(items)

    # ---- the whole run -------------------------------------------------------------
    def run(self, request_ids: list[str], replan: bool = False) -> list[Outcome]:
        states = load_states(self.ledger, request_ids)     # a few queries, not one per request
        active = {rid: st for rid, st in states.items() if not st.closed}
        self.states = dict(active)
        # policy and holds: requests held for everything or not approved wait, unplanned
        self.governance = self.engine.governance(active.values())
        self._gate(active)
        raw = subject_texts(self.engine, list(active))
        if active:
            self._plan(active, raw, replan)
        groups = self._members(active, raw)
        order = {t.key: i for st in active.values() if st.plan for i, t in enumerate(st.plan.targets)}
        for st in active.values():
            if st.plan is not None:
                self.abilities.update(st.plan.connectors)
        erase_order = {c.name: c.capabilities.erase_order for c in self.engine.registry.connectors}
        for members in sorted(groups.values(), key=lambda ms: (
                erase_order.get(ms[0].target.connector, 0), order.get(ms[0].target.key, 0))):
            members = [m for m in members if m.request_id not in self.failed]
            if not members:
                continue
            t = members[0].target
            conn = self.engine.registry.get(t.connector)
            try:
                self._erase(conn, members)
                self._purge(conn, members)
                self._verify(conn, members)
            except Exception as exc:   # one boundary: connector errors become failed steps
                msg = str(translated(exc, f"{t.name}: {t.connector} connector error",
                                     flat(members)))
                phase = "erase"
                with self.ledger.transaction():
                    for m in members:
                        st = self.states[m.request_id]
                        open_steps = [ph for ph in PHASES
                                      if (st.step(t.key, ph) or {}).get("state") == "started"]
                        phase = open_steps[-1] if open_steps else phase
                        self._record("step.failed", m, phase, error=msg,
                                     retryable=isinstance(exc, RetryableError))
                        self._fail(m.request_id, msg, retryable=isinstance(exc, RetryableError))
                log.error("%s", msg)
        with self.ledger.transaction():
            return [self.waiting[rid] if rid in self.waiting else self._finish(rid, states[rid])
                    for rid in states]

    def _finish(self, rid: str, before: RequestState) -> Outcome:
        if before.closed:
            st = before
            return Outcome(rid, st.status, self._targets(st), st.plan.unresolved if st.plan else [],
                           notes=["already finished; nothing was repeated"
                                  if st.done else "rejected; nothing was erased"])
        # every entry of this run was folded into the state as it was appended: it is what
        # reading the request back from the ledger gives (tests/test_reliability_core.py)
        st = self.states[rid]
        unresolved = st.plan.unresolved if st.plan else []
        if rid in self.failed:
            failed = {"error": "; ".join(self.failed[rid]), "batch": self.batch}
            self.ledger.append(rid, "request.failed", failed)
            st.apply("request.failed", failed)
            return Outcome(rid, "failed", self._targets(st), unresolved, self.failed[rid],
                           retryable=rid not in self.terminal)
        # a request that did not fail here has its plan in the ledger (recorded before erasing)
        assert st.plan is not None, f"request {rid} finished without a recorded plan"
        unchecked = [n for t in st.plan.targets
                     for n in ((st.step(t.key, "verify") or {}).get("not_verified") or [])]
        waiting = st.plan.waiting()
        if waiting is not None:
            # erased where it may; a hold or the policy keeps the rest for a later run
            body = {"status": waiting, "batch": self.batch, "targets": len(st.plan.targets),
                    "held": len(st.plan.held), "deferred": len(st.plan.deferred)}
            self.ledger.append(rid, "request.waiting", body)
            st.apply("request.waiting", body)
            parts = ([f"{x['name']}: under legal hold {', '.join(x['hold_ids'])}"
                      for x in st.plan.held]
                     + [f"{x['name']}: deferred by policy: {x['basis']}"
                        for x in st.plan.deferred])
            return Outcome(rid, waiting, self._targets(st), unresolved, [],
                           [f"waiting ({waiting}); the next run plans it again: " + p
                            for p in parts] + list(self.unverified.get(rid, [])))
        if unresolved or unchecked:
            status = "incomplete"       # erased where it could, but an operator must look
        elif st.plan.found_nothing() and not st.erased_any:
            status = "not_found"        # no row or trace anywhere: a real answer (Art. 12)
        else:
            status = "completed"
        done = {"status": status, "batch": self.batch, "targets": len(st.plan.targets),
                "unresolved": len(unresolved), "not_verified": len(unchecked)}
        self.ledger.append(rid, "request.completed", done)
        st.apply("request.completed", done)
        notes = list(self.unverified.get(rid, []))
        if status == "not_found":
            notes.append("no data of the subject was found in any dataset the lineage reaches; "
                         "nothing needed erasing")
        return Outcome(rid, status, self._targets(st), unresolved, [], notes)

    @staticmethod
    def _targets(st: RequestState) -> list[dict[str, Any]]:
        out = []
        for t in (st.plan.targets if st.plan else []):
            er = st.step(t.key, "erase") or {}
            ve = st.step(t.key, "verify") or {}
            out.append({"namespace": t.namespace, "name": t.name, "connector": t.connector,
                        "column": t.column, "rows_planned": t.rows,
                        "rows_deleted": er.get("rows_deleted"),
                        "version_before": er.get("version_before"),
                        "version_after": er.get("version_after"),
                        "verified": ve.get("state") == "completed" and not ve.get("not_verified"),
                        "not_verified": ve.get("not_verified") or [],
                        "rows_remaining": ve.get("rows_remaining"),
                        "residue": ve.get("residue", []),
                        "residue_until": ve.get("residue_until")})
        return out


    def reverify(self, request_ids: list[str]) -> list[Outcome]:
        """Verify finished requests again (nothing is erased): the subject must still be gone
        everywhere the plan reached; MLflow flags are checked and marked superseded when a
        clean retrained version exists. Each check is recorded as a `reverify` step."""
        self.states = load_states(self.ledger, request_ids)
        done = {rid: st for rid, st in self.states.items() if st.done and st.plan is not None}
        raw = subject_texts(self.engine, list(done))
        groups = self._members(done, raw)
        for members in groups.values():
            conn = self.engine.registry.get(members[0].target.connector)
            try:
                self._verify(conn, members, phase="reverify")
            except Exception as exc:   # the same boundary as the run's
                for m in members:
                    self._fail(m.request_id, str(translated(
                        exc, f"{m.target.name}: reverify could not run", list(m.values), 300)))
        out = []
        for rid, st in self.states.items():
            if not st.done:
                out.append(Outcome(rid, "not_finished", notes=[
                    f"the request is {st.status}: it has not finished, so there is nothing "
                    "to re-verify; run it first"]))
            elif rid in self.failed:
                out.append(Outcome(rid, "violated", errors=self.failed[rid]))
            elif rid in self.unverified:
                out.append(Outcome(rid, "not_verified", notes=self.unverified[rid]))
            else:
                n = len(st.plan.targets) if st.plan else 0
                out.append(Outcome(rid, "holds", notes=[f"{n} targets re-verified"]))
        return out
