"""What governs a request's plan besides the lineage: exemptions and deferrals decided by the
policy (erasure/policy.py) and the datasets a legal hold freezes (erasure/holds.py).

For each subject, the datasets the trace reaches are put to the policy (cached per input: a
batch of requests with the same reason asks once per dataset) and matched against the
subject's active holds. An exempt, deferred or held dataset is not erased now, and nothing
downstream of it is traced through it (as with `[[datasets]] exclude`); the trace is then
repeated without it, until no decision removes another dataset. Subjects whose decisions are
the same are planned together (one measurement per group; usually one group).

A plan lists them: `exempt` (with the legal basis the policy gave), `deferred` (with the
reason) and `held` (with the hold ids), and `policy` (the policy's hash and source), so the
plan recorded in the ledger carries each decision with the hash of the policy that made it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .canonical import canonical_text

if TYPE_CHECKING:
    from .config import Config
    from .holds import Hold, HoldBook
    from .lineage.graph import LineageGraph
    from .policy import Policy

DatasetId = tuple[str, str]


@dataclass(frozen=True)
class RequestFacts:
    """What the policy may know of a request (never an identity value) and the HMACs holds
    are matched by."""

    reason: str | None
    received: str                    # YYYY-MM-DD
    identity_types: tuple[str, ...]
    hmacs: frozenset[str]


@dataclass
class Decisions:
    """One subject's governed datasets: dataset -> basis (exempt, deferred) or hold ids."""

    exempt: dict[DatasetId, str] = field(default_factory=dict)
    deferred: dict[DatasetId, str] = field(default_factory=dict)
    held: dict[DatasetId, list[str]] = field(default_factory=dict)
    held_everything: list[str] = field(default_factory=list)   # hold ids covering all

    def excluded(self) -> dict[DatasetId, str]:
        """What the trace must not erase nor trace through, with the reason it says."""
        out = {ds: f"exempt by policy: {basis}" for ds, basis in self.exempt.items()}
        out.update({ds: f"deferred by policy: {basis}" for ds, basis in self.deferred.items()})
        out.update({ds: f"under legal hold {', '.join(ids)}" for ds, ids in self.held.items()})
        return out

    def key(self) -> str:
        return canonical_text([sorted([list(k), v] for k, v in self.exempt.items()),
                               sorted([list(k), v] for k, v in self.deferred.items()),
                               sorted([list(k), v] for k, v in self.held.items()),
                               self.held_everything])

    def listing(self, policy: Policy | None) -> dict[str, Any]:
        """The plan's fields for them (see the module's docstring)."""
        h = policy.hash if policy is not None else None
        return {
            "exempt": [{"namespace": ns, "name": n, "basis": b, "policy_hash": h}
                       for (ns, n), b in sorted(self.exempt.items())],
            "deferred": [{"namespace": ns, "name": n, "basis": b, "policy_hash": h}
                         for (ns, n), b in sorted(self.deferred.items())],
            "held": [{"namespace": ns, "name": n, "hold_ids": ids}
                     for (ns, n), ids in sorted(self.held.items())],
            "policy": ({"hash": policy.hash, "source": policy.source}
                       if policy is not None else None),
        }


class Governance:
    """The policy and the holds, applied to the subjects of one planning pass."""

    def __init__(self, policy: Policy | None, holds: HoldBook | None,
                 facts: dict[str, RequestFacts]):
        self.policy = policy
        self.holds = holds
        self.facts = facts
        self._memo: dict[str, Decisions] = {}
        # per subject, the identities enrichment derived (as a plan records them), when
        # they were looked up for the holds (planning.governed)
        self.derived: dict[str, list[dict[str, Any]]] = {}

    @property
    def active(self) -> bool:
        return self.policy is not None or bool(self.holds and self.holds.holds)

    def learn(self, hm: str, hmacs: set[str]) -> None:
        """More HMACs the subject `hm` is known by (identities enrichment derived): holds
        on them hold the subject too, before anything is erased."""
        f = self.facts.get(hm) or RequestFacts(None, "", (), frozenset({hm}))
        if not hmacs <= f.hmacs:
            self.facts[hm] = RequestFacts(f.reason, f.received, f.identity_types,
                                          f.hmacs | frozenset(hmacs))
            self._memo.clear()

    def holds_on(self, hm: str) -> list[Hold]:
        f = self.facts.get(hm)
        if self.holds is None or f is None:
            return []
        return self.holds.active_for(set(f.hmacs))

    def decide(self, config: Config, graph: LineageGraph, hm: str) -> Decisions:
        """The subject's decisions over the datasets the trace reaches (see the module)."""
        from .policy import dataset_input, policy_input, request_input

        f = self.facts.get(hm) or RequestFacts(None, "", (), frozenset({hm}))
        holds = self.holds_on(hm)
        req = request_input(f.reason, f.received, list(f.identity_types))
        memo_key = canonical_text([req, sorted(h.hold_id for h in holds)])
        known = self._memo.get(memo_key)
        if known is not None:
            return known
        d = Decisions(held_everything=sorted(h.hold_id for h in holds
                                             if h.covers_everything()))
        if d.held_everything:
            self._memo[memo_key] = d
            return d
        hold_json = [h.policy_json() for h in holds]
        decided: set[DatasetId] = set()
        while True:
            reached = reached_datasets(config, graph, d.excluded())
            new = False
            for ds in reached:
                if ds in decided:
                    continue
                decided.add(ds)
                ids = [h.hold_id for h in holds if h.covers(*ds)]
                if ids:
                    d.held[ds] = ids
                    new = True
                    continue
                if self.policy is None:
                    continue
                dec = self.policy.decide(policy_input(dataset_input(graph, *ds), req, hold_json))
                if dec.action == "exempt":
                    d.exempt[ds] = dec.basis
                    new = True
                elif dec.action == "defer":
                    d.deferred[ds] = dec.basis
                    new = True
            if not new:
                break
        # only what is still reached: a dataset behind an exempt one is not listed
        final = set(reached_datasets(config, graph, d.excluded()))
        for m in (d.exempt, d.deferred, d.held):
            for ds in [x for x in m if x not in final]:
                del m[ds]
        self._memo[memo_key] = d
        return d


def reached_datasets(config: Config, graph: LineageGraph,
                     excluded: dict[DatasetId, str]) -> list[DatasetId]:
    """Every dataset the trace from the roots reaches, the excluded ones where it stops
    included: keyed, unresolved and excluded (roots first, in trace order)."""
    from .lineage.graph import trace_subject_keys

    trace = trace_subject_keys(graph, *trace_args(config, graph, excluded))
    out = [k.dataset for k in trace.keyed]
    out += [ds for ds in trace.unresolved if ds not in out]
    roots = [graph.canonical((r.namespace, r.name)) for r in config.roots]
    out += [ds for ds in list(trace.out_of_scope) + roots if ds in excluded and ds not in out]
    return list(dict.fromkeys(out))


def trace_args(config: Config, graph: LineageGraph, excluded: dict[DatasetId, str] | None
               ) -> tuple[list[tuple[DatasetId, str, str]],
                          dict[DatasetId, tuple[str | None, str | None]]]:
    """The roots and overrides to trace with: the config's, with `excluded` datasets
    excluded (a root among them is not traced from at all)."""
    overrides: dict[DatasetId, tuple[str | None, str | None]] = {
        graph.canonical((o.namespace, o.name)): (o.column, o.exclude) for o in config.overrides}
    for ds, why in (excluded or {}).items():
        overrides[graph.canonical(ds)] = (None, why)
    roots = [(graph.canonical((r.namespace, r.name)), r.column, r.identity)
             for r in config.roots]
    roots = [r for r in roots if r[0] not in (excluded or {})]
    return roots, overrides


def facts_of(state: Any) -> RequestFacts:
    """A request's facts from its state (erasure/requests.py RequestState)."""
    from .holds import request_hmacs

    return RequestFacts(state.reason, (state.received_at or "")[:10],
                        tuple(state.identity_types), frozenset(request_hmacs(
                            state.subject_hmac, state.identities)))
