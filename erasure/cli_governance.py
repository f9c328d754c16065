"""Governance commands: legal holds (`hold`), approval, rejection and extension of requests
(`request approve|reject|extend`) and `policy test`. Registered on the `erasure` app by
erasure/cli.py; heavy modules load inside the commands."""

from __future__ import annotations

from typing import List, Optional

import typer

from .cli import IDENTITY_HELP, _emit, _engine, _subject, app, request_app

hold_app = typer.Typer(help="Legal holds: freeze a person's data until released.",
                       no_args_is_help=True)
policy_app = typer.Typer(help="Exemptions as policy code ([policy]).", no_args_is_help=True)
app.add_typer(hold_app, name="hold")
app.add_typer(policy_app, name="policy")


def _known_types(eng) -> list[str]:
    cfg = eng.config
    return sorted({r.identity for r in cfg.roots} | set(cfg.identities)
                  | {x for e in cfg.enrich for x in (e.from_identity, e.to_identity)})


# ---- holds --------------------------------------------------------------------------
@hold_app.command("add")
def hold_add(subject_id: Optional[str] = typer.Option(None, "--subject-id"),
             identity: Optional[List[str]] = typer.Option(None, "--identity", help=IDENTITY_HELP),
             reason: str = typer.Option(..., "--reason", help="Why the data is held (a case "
                                        "or order reference; never the person's id)"),
             until: Optional[str] = typer.Option(None, "--until", help="Last day of the hold "
                                                 "(YYYY-MM-DD); default: until released"),
             scope: Optional[str] = typer.Option(None, "--scope", help="Datasets held: a glob "
                                                 "on the name or namespace:name (default *)"),
             as_json: bool = typer.Option(False, "--json")):
    """Place a legal hold on a person's data (stored as HMACs). Their requests wait in
    on_hold for the held datasets; sweeps do not re-erase them."""
    from .approvals import guard_texts
    from .holds import add_hold, hold_hmacs, parse_until

    eng = _engine()
    subject = _subject(eng, subject_id, identity)
    guard_texts(subject.values(), reason=reason, scope=scope)
    day = parse_until(until)
    hmacs = hold_hmacs(subject, _known_types(eng), eng.keys.subject_hmac)
    hold_id = add_hold(eng.ledger, hmacs, reason, day, scope)
    _emit({"hold_id": hold_id}, as_json, lambda o: typer.echo(o["hold_id"]))


@hold_app.command("list")
def hold_list(as_json: bool = typer.Option(False, "--json")):
    """Every hold: reason, scope, until, who placed and released it (never the person)."""
    eng = _engine()
    holds = [h.to_json() for h in eng.holds().holds.values()]

    def human(o):
        for h in o["holds"]:
            typer.echo(f"{h['hold_id']}  {h['status']:8}  scope {h['scope']}  until "
                       f"{h['until'] or '-'}  by {h['added_by']}  {h['reason']}")
            if h["released_at"]:
                typer.echo(f"    released {h['released_at']} by {h['released_by']}: "
                           f"{h['release_reason']}")
    _emit({"holds": holds}, as_json, human)


@hold_app.command("release")
def hold_release(hold_id: str = typer.Argument(...),
                 reason: str = typer.Option(..., "--reason"),
                 as_json: bool = typer.Option(False, "--json")):
    """Release a hold; the next `run` finishes the requests it kept waiting."""
    from .holds import release_hold

    eng = _engine()
    h = release_hold(eng.ledger, hold_id, reason)
    _emit({"hold_id": h.hold_id, "released": True}, as_json,
          lambda o: typer.echo(f"{o['hold_id']} released"))


# ---- approval, rejection, extension --------------------------------------------------
@request_app.command("approve")
def request_approve(request_id: str = typer.Argument(...),
                    as_json: bool = typer.Option(False, "--json")):
    """Approve a request's plan, as ERASURE_ACTOR (or the OS user). The plan is made now and
    shown; `run` erases only once `[approvals] required` actors approved the plan it makes.
    The submitter cannot approve their own request."""
    from .approvals import approve

    eng = _engine()
    out = approve(eng, request_id)

    def human(o):
        typer.echo(f"{o['request_id']}: approved by {o['approved_by']} "
                   f"({o['approvals']} of {o['required']})"
                   + (" (already approved)" if o["already_approved"] else ""))
        for t in o["plan"]["targets"]:
            typer.echo(f"  erase {t['target'].split('|')[2]}: {t['rows']} rows "
                       f"({t['residue']})")
        for x in o["plan"]["exempt"]:
            typer.echo(f"  exempt {x['dataset']}: {x['basis']}")
        for x in o["plan"]["deferred"]:
            typer.echo(f"  deferred {x['dataset']}: {x['basis']}")
        for x in o["plan"]["held"]:
            typer.echo(f"  held {x['dataset']}")
        if o["changed_since_earlier_approval"]:
            typer.echo("  the plan changed since the earlier approval (which no longer counts):")
            for line in o["changed_since_earlier_approval"]:
                typer.echo(f"    {line}")
    _emit(out, as_json, human)


@request_app.command("reject")
def request_reject(request_id: str = typer.Argument(...),
                   reason: str = typer.Option(..., "--reason", help="Why (Art. 12(4): the "
                                              "person is told why and of their remedies)"),
                   as_json: bool = typer.Option(False, "--json")):
    """Reject a request (e.g. the identity could not be confirmed, or Art. 17(3) applies to
    all of it). A rejected request is never run. One that has started erasing cannot be."""
    from .approvals import reject

    eng = _engine()
    reject(eng, request_id, reason)
    _emit({"request_id": request_id, "status": "rejected"}, as_json,
          lambda o: typer.echo(f"{o['request_id']}: rejected"))


@request_app.command("extend")
def request_extend(request_id: str = typer.Argument(...),
                   reason: str = typer.Option(..., "--reason", help="Why (complexity, number "
                                              "of requests: Art. 12(3))"),
                   months: int = typer.Option(2, "--months", help="1 or 2"),
                   as_json: bool = typer.Option(False, "--json")):
    """Extend a request's deadline by up to two months, once, before it passes (Art. 12(3))."""
    from .approvals import extend

    eng = _engine()
    body = extend(eng, request_id, reason, months)
    _emit({"request_id": request_id, "deadline": body["deadline"],
           "deadline_before": body["deadline_before"]}, as_json,
          lambda o: typer.echo(f"{o['request_id']}: deadline {o['deadline_before']} -> "
                               f"{o['deadline']}"))


# ---- policy ---------------------------------------------------------------------------
@policy_app.command("test")
def policy_test(subject_id: Optional[str] = typer.Option(None, "--subject-id"),
                identity: Optional[List[str]] = typer.Option(None, "--identity",
                                                             help=IDENTITY_HELP),
                reason: Optional[str] = typer.Option(None, "--reason",
                                                     help="The request's reason, as submitted"),
                as_json: bool = typer.Option(False, "--json")):
    """Print the policy's decision for every dataset the subject's data reaches, without
    counting rows or planning anything else. Changes nothing."""
    from datetime import datetime, timezone

    from .errors import ConfigError
    from .governance import Governance, RequestFacts, reached_datasets
    from .holds import request_hmacs
    from .identity import describe

    eng = _engine()
    if eng.policy is None:
        raise ConfigError("no [policy] is configured (rego = \"policy/\" or opa_url)")
    subject = _subject(eng, subject_id, identity)
    hm = eng.keys.subject_hmac(subject.text())
    ids = describe(subject, eng.keys.subject_hmac)
    facts = RequestFacts(reason, datetime.now(timezone.utc).date().isoformat(),
                         tuple(subject.types()), frozenset(request_hmacs(hm, ids)))
    gov = Governance(eng.policy, eng.holds(), {hm: facts})
    graph = eng.graph()
    d = gov.decide(eng.config, graph, hm)
    rows = []
    if d.held_everything:
        rows.append({"namespace": "*", "name": "*", "action": "held",
                     "basis": "legal hold " + ", ".join(d.held_everything)})
    else:
        for ns, name in reached_datasets(eng.config, graph, d.excluded()):
            ds = (ns, name)
            action, basis = ("exempt", d.exempt[ds]) if ds in d.exempt else (
                ("defer", d.deferred[ds]) if ds in d.deferred else (
                    ("held", "legal hold " + ", ".join(d.held[ds])) if ds in d.held
                    else ("erase", "")))
            rows.append({"namespace": ns, "name": name, "action": action, "basis": basis})
    out = {"policy": {"hash": eng.policy.hash, "source": eng.policy.source},
           "subject": {"hmac": hm}, "decisions": rows}

    def human(o):
        typer.echo(f"policy {o['policy']['source']} ({o['policy']['hash'][:23]}…)")
        for r in o["decisions"]:
            typer.echo(f"  {r['action']:7} {r['name']}" + (f": {r['basis']}" if r["basis"] else ""))
    _emit(out, as_json, human)
