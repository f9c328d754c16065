"""The `erasure` command line. Heavy libraries load inside the commands that need them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional

import typer

from .errors import ExitCode

if TYPE_CHECKING:       # annotations only: --help imports nothing of the engine
    from connectors.base import ConnectorRegistry

    from .engine import Engine
    from .ledger import Ledger

EXIT_CODES = "\n\n".join([
    "Exit codes:",
    "0 ok",
    "1 internal error",
    "2 usage error",
    "3 configuration error (missing or invalid config, missing subject key)",
    "4 bad input, nothing changed (malformed events, unknown dataset or request, wrong key type)",
    "5 erasure failed (a step failed, the guard stopped it, verification failed, a dataset "
    "could not be read, the ledger does not verify)",
    "6 erased where possible, but datasets downstream of the subject are unresolved, or a "
    "part could not be scanned or verified (an object store not listed): an operator must act",
    "7 a sweep found a subject back where it had been erased (the findings say where)",
    "75 try again later (concurrent writers kept winning the commit race, or another run "
    "holds the ledger)",
])

app = typer.Typer(help="GDPR Article 17 erasure across a data lake, with lineage and evidence.\n\n"
                  + EXIT_CODES, no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)
lineage_app = typer.Typer(help="Ingest and inspect OpenLineage events.", no_args_is_help=True)
request_app = typer.Typer(help="Submit Article 17 requests.", no_args_is_help=True)
ledger_app = typer.Typer(help="Inspect the ledger.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
app.add_typer(lineage_app, name="lineage")
app.add_typer(request_app, name="request")

_state: dict = {}


@app.callback()
def _main(config: Optional[str] = typer.Option(
        None, "--config", help="Config file (env ERASURE_CONFIG; default ./erasure.toml)")):
    _state.clear()
    _state["config"] = config


def _engine() -> Engine:
    from .config import resolve_config_path
    from .engine import Engine

    if "engine" not in _state:
        _state["engine"] = Engine.from_path(resolve_config_path(_state.get("config")))
    return _state["engine"]


def _emit(obj, as_json: bool, human) -> None:
    if as_json:
        typer.echo(json.dumps(obj, indent=2, sort_keys=True, default=str))
    else:
        human(obj)


# ---- lineage ----------------------------------------------------------------------
@lineage_app.command("ingest")
def lineage_ingest(files: List[Path] = typer.Argument(..., help="Event files (JSON Lines or JSON)"),
                   lenient: bool = typer.Option(False, help="Skip malformed events instead of "
                                                "refusing their whole file"),
                   force: bool = typer.Option(False, help="Re-read files even if unchanged"),
                   as_json: bool = typer.Option(False, "--json")):
    """Validate events and add them to the persisted lineage graph (idempotent).

    In strict mode a file with any malformed event is refused whole; exit 4 then."""
    eng = _engine()
    lenient = lenient or eng.config.lenient_events
    rep = eng.ingest(list(files), lenient=lenient, force=force)

    def human(r):
        typer.echo(f"files read {r['files_read']}, unchanged {r['files_unchanged']}, "
                   f"refused {len(r['files_refused'])}; events new {r['events_new']} "
                   f"of {r['events_seen']}")
        for x in r["rejected"]:
            typer.echo(f"  rejected {x['file']}:{x['line']}: {x['reason']}", err=True)
        for w in r["warnings"][:20]:
            typer.echo(f"  warning {w}", err=True)
    _emit(rep.to_json(), as_json, human)
    if rep.files_refused or (rep.rejected and not lenient):
        raise typer.Exit(ExitCode.BAD_INPUT)


@lineage_app.command("show")
def lineage_show(as_json: bool = typer.Option(False, "--json")):
    """List datasets, jobs and the subject-key trace from the configured roots."""
    from .planning import resolve_targets

    eng = _engine()
    g = eng.graph()
    targets, unresolved, oos = resolve_targets(eng.config, g, eng.registry)
    out = {"datasets": [{"namespace": ns, "name": n, "aliases": [list(a) for a in g.aliases_of((ns, n))]}
                        for ns, n in g.datasets()],
           "jobs": [{"namespace": ns, "name": n} for ns, n in g.jobs()],
           "keyed": [{"namespace": t.namespace, "name": t.name, "column": t.column,
                      "how": t.how, "connector": t.connector.name} for t in targets],
           "unresolved": unresolved, "out_of_scope": oos}

    def human(o):
        typer.echo(f"{len(o['datasets'])} datasets, {len(o['jobs'])} jobs")
        for k in o["keyed"]:
            typer.echo(f"  key  {k['name']}.{k['column']}  ({k['how']}, {k['connector']})")
        for k in o["out_of_scope"]:
            typer.echo(f"  out of scope  {k['name']}: {k['reason']}")
        for k in o["unresolved"]:
            typer.echo(f"  UNRESOLVED  {k['namespace']}:{k['name']}: {k['reason']}")
    _emit(out, as_json, human)


# ---- plan -------------------------------------------------------------------------
def _print_plan(p: dict, registry: ConnectorRegistry) -> None:
    typer.echo(f"Dry run for subject {p['subject']['hmac'][:16]}… (HMAC); nothing was changed.")
    for t in p["targets"]:
        typer.echo(f"  {t['connector']:7} {t['name']}  [{t['column']}: {t['key_type']}, {t['how']}]")
        for line in registry.presentation(t["connector"]).plan_lines(t):   # the connector's
            typer.echo(f"          {line}")
        for why in t.get("not_verified") or []:
            typer.echo(f"          NOT VERIFIABLE: {why}")
        ra = t["residue_after"]
        if ra["mode"] == "keep-history":
            typer.echo(f"          after erasure: residue remains until {ra['until']} (keep-history)")
        else:
            typer.echo(f"          after erasure: {ra.get('note', ra['mode'])}")
    for u in p.get("exempt", []):
        typer.echo(f"  EXEMPT        {u['name']}: {u['basis']}")
    for u in p.get("deferred", []):
        typer.echo(f"  DEFERRED      {u['name']}: {u['basis']}")
    for u in p.get("held", []):
        typer.echo(f"  ON HOLD       {u['name']}: legal hold {', '.join(u['hold_ids'])}")
    if p.get("policy"):
        typer.echo(f"  policy        {p['policy']['source']} ({p['policy']['hash'][:23]}…)")
    for u in p.get("not_applicable", []):
        typer.echo(f"  not applicable {u['name']}: {u['reason']}")
    for i in p.get("identities", []):
        typer.echo(f"  identity      {i['type'] or 'untyped id'}: HMAC {i['hmac'][:16]}… "
                   f"({i['source']})")
    for u in p.get("untouched", []):
        typer.echo(f"  untouched     {u['name']}: {u['reason']}")
    for u in p["out_of_scope"]:
        typer.echo(f"  out of scope  {u['name']}: {u['reason']}")
    for u in p["unresolved"]:
        typer.echo(f"  UNRESOLVED    {u['namespace']}:{u['name']}: {u['reason']}")
    _print_abilities(p.get("connectors", {}))
    tot = p["totals"]
    typer.echo(f"Total: {tot['rows']} rows in {tot['targets']} targets, "
               f"{tot['unresolved']} unresolved, {tot.get('not_verified', 0)} not verifiable.")


def _print_abilities(by_connector: dict, indent: str = "  ") -> None:
    """What each connector with a target can and cannot do, as its plan recorded it."""
    from connectors.base import ability_lines

    for name, a in by_connector.items():
        typer.echo(f"{indent}{name} can and cannot:")
        for line in ability_lines(a):
            typer.echo(f"{indent}    {line}")


IDENTITY_HELP = ("TYPE=VALUE: an identity of a declared [[identities]] type or of a root's "
                 "type (repeatable)")


def _subject(eng, subject_id: Optional[str], identities: Optional[List[str]]):
    """The request's Subject from --subject-id and --identity (erasure/intake.py)."""
    from .identity import split_pair
    from .intake import subject_of

    return subject_of(eng, subject_id, [split_pair(x) for x in identities or []])


@app.command()
def plan(subject_id: Optional[str] = typer.Option(None, "--subject-id",
                                                  help="The subject's identifier (untyped)"),
         identity: Optional[List[str]] = typer.Option(None, "--identity", help=IDENTITY_HELP),
         as_json: bool = typer.Option(False, "--json")):
    """Dry run: what erasing one subject would touch. Changes nothing."""
    from .planning import plan_erasures

    from datetime import datetime, timezone

    from .governance import Governance, RequestFacts
    from .holds import request_hmacs
    from .identity import describe

    eng = _engine()
    subject = _subject(eng, subject_id, identity)   # the rules `request submit` applies
    text = subject.text()
    hm = eng.keys.subject_hmac(text)
    # the policy and holds apply as to a request received today, for no stated reason
    facts = RequestFacts(None, datetime.now(timezone.utc).date().isoformat(),
                         tuple(subject.types()), frozenset(request_hmacs(
                             hm, describe(subject, eng.keys.subject_hmac))))
    gov = Governance(eng.policy, eng.holds(), {hm: facts})
    p = plan_erasures(eng.config, eng.graph(), eng.registry, [(hm, text)],
                      hmac_of=eng.keys.subject_hmac, governance=gov)[0]
    _emit(p.to_json(), as_json, lambda d: _print_plan(d, eng.registry))


# ---- requests ---------------------------------------------------------------------
def _print_submitted(chunks, as_json: bool) -> int:
    """Print request ids as each chunk is committed (flushed per chunk), so a killed submit
    has printed only ids that are recorded. With --json the document is complete once the
    last chunk is printed. Returns how many ids had an open request already."""
    existing, first = 0, True
    if as_json:
        typer.echo('{\n  "requests": [', nl=False)
    for chunk in chunks:
        lines = []
        for rid, old in chunk:
            existing += old
            if as_json:
                lines.append(("\n" if first else ",\n") + "    "
                             + json.dumps({"existing": old, "request_id": rid}, sort_keys=True))
                first = False
            else:
                lines.append(rid + "\n")
        typer.echo("".join(lines), nl=False)
        sys.stdout.flush()
    if as_json:
        typer.echo("\n  ]\n}")
    return existing


@request_app.command("submit")
def request_submit(subject_id: Optional[str] = typer.Option(None, "--subject-id"),
                   identity: Optional[List[str]] = typer.Option(None, "--identity",
                                                                help=IDENTITY_HELP),
                   subjects_file: Optional[Path] = typer.Option(
                       None, "--subjects-file",
                       help="One subject per line (UTF-8): an id, or TYPE=VALUE of a declared "
                            "identity type"),
                   requested_by: Optional[str] = typer.Option(None, "--requested-by"),
                   reason: Optional[str] = typer.Option(None, "--reason"),
                   as_json: bool = typer.Option(False, "--json")):
    """Record an Article 17 request (one per subject). Prints the request id.

    Idempotent: a subject with an open request for the same reason gets that request's id."""
    from .errors import InputError
    from .requests import TextGuard, submit_many, submit_one
    from .subjects_file import SubjectsFile

    given = subject_id is not None or bool(identity)
    if given == (subjects_file is not None):
        raise InputError("give --subject-id and/or --identity, or --subjects-file")
    from .intake import check_subjects_fit_roots

    guard = TextGuard(requested_by, reason)
    if subjects_file is None:
        eng = _engine()
        text = _subject(eng, subject_id, identity).text()
        check_subjects_fit_roots(eng, [("--subject-id" if not identity else "--identity",
                                         text)], guard)
        rid, old = submit_one(eng.ledger, eng.keys, text, requested_by, reason)
        _emit({"request_id": rid, "existing": old}, as_json,
              lambda o: typer.echo(o["request_id"]))
        if old and not as_json:
            typer.echo("the subject already has an open request for this reason; "
                       "that request's id was printed", err=True)
        return
    src = SubjectsFile(subjects_file)
    eng = _engine()

    def subjects():
        """(line, subject text): `TYPE=VALUE` where TYPE is a declared identity type, else
        the line is a plain id (`a=b@example.com` is a valid address)."""
        from .identity import build_subject

        declared = eng.config.identities
        for i, s in src.ids():
            typ, sep, value = s.partition("=")
            if sep and typ in declared:
                where = f"subjects file {subjects_file} line {i}"
                s = build_subject(None, [(typ, value)], declared, [], where).text()
            yield i, s

    # pass 1: every line, every rule, typed against the roots; nothing recorded yet
    n = check_subjects_fit_roots(eng, ((f"subjects file {subjects_file} line {i}", s)
                                        for i, s in subjects()), guard)
    if not n:
        raise InputError(f"subjects file {subjects_file} holds no ids")
    # pass 2: record in chunks (one ledger transaction each), printing each when committed
    existing = _print_submitted(
        submit_many(eng.ledger, eng.keys, (s for _, s in subjects()), requested_by, reason),
        as_json)
    if existing and not as_json:
        typer.echo(f"{existing} of {n} ids already had an open request for this reason; "
                   "those requests' ids were printed", err=True)


# ---- run & status -----------------------------------------------------------------
def _print_outcomes(o: dict) -> None:
    for r in o["requests"]:
        typer.echo(f"{r['request_id']}: {r['status'].upper()}")
        for t in r["targets"]:
            mark = ("verified" if t["verified"] else
                    "NOT verified: " + "; ".join(t["not_verified"]) if t.get("not_verified")
                    else "NOT verified")
            def v(x):
                return "-" if x is None else x
            versions = ("" if t["version_before"] is None else
                        f", versions {v(t['version_before'])}->{v(t['version_after'])}")
            typer.echo(f"  {t['connector']:7} {t['name']}: planned {t['rows_planned']}, deleted "
                       f"{v(t['rows_deleted'])}, remaining {v(t['rows_remaining'])}{versions}, {mark}")
            if t["residue"]:
                typer.echo(f"    residue kept until {t['residue_until']}: {len(t['residue'])} files")
        for u in r["unresolved"]:
            typer.echo(f"  UNRESOLVED {u['name']}: {u['reason']}")
        for n in r.get("notes", []):
            typer.echo(f"  note: {n}")
        for e in r["errors"]:
            typer.echo(f"  error: {e}", err=True)
    if o.get("connectors"):
        typer.echo("What the systems reached can and cannot do:")
        _print_abilities(o["connectors"])
    typer.echo(f"Overall: {o['status']}")


RUN_CHUNK = 5000


@app.command()
def run(request_ids: List[str] = typer.Argument(None, help="Request ids to execute"),
        pending: bool = typer.Option(False, "--pending", help="Every request not yet finished"),
        replan: bool = typer.Option(False, "--replan", help="Plan again instead of resuming "
                                    "the recorded plan (after a guard stop)"),
        as_json: bool = typer.Option(False, "--json")):
    """Execute requests: erase, purge residue, verify. Safe to re-run; resumes after a crash."""
    from .errors import InputError
    from .execution import Runner
    from .requests import pending_request_ids

    eng = _engine()
    if pending == bool(request_ids):
        raise InputError("give request ids, or --pending, not both")
    with eng.ledger.exclusive():
        ids = pending_request_ids(eng.ledger) if pending else list(request_ids)
        if not pending:        # ids from the command line; pending ones come from the ledger
            for rid in ids:
                eng.ledger.require(rid)
        outcomes = []
        can: dict = {}
        # requests run in batches of RUN_CHUNK: memory stays bounded however many are
        # pending, and each batch still erases one pass per dataset
        for i in range(0, len(ids), RUN_CHUNK):
            runner = Runner(eng)
            outcomes += runner.run(ids[i:i + RUN_CHUNK], replan=replan)
            can.update(runner.abilities)
    statuses = {o.status for o in outcomes}
    waiting = {"on_hold", "awaiting_approval", "deferred"}
    overall = ("failed" if "failed" in statuses else "incomplete" if "incomplete" in statuses
               else "waiting" if statuses & waiting
               else "not_found" if statuses == {"not_found"}
               else "completed" if outcomes else "nothing-to-do")
    out = {"status": overall, "requests": [o.to_json() for o in outcomes],
           "connectors": can}
    if len(outcomes) == 1:
        out["request_id"] = outcomes[0].request_id
    _emit(out, as_json, _print_outcomes)
    failed = [o for o in outcomes if o.status == "failed"]
    if failed and all(o.retryable for o in failed):
        raise typer.Exit(ExitCode.TRY_AGAIN)   # only lost commit races: run again later
    raise typer.Exit({"failed": ExitCode.FAILED, "incomplete": ExitCode.NEEDS_OPERATOR}
                     .get(overall, ExitCode.OK))


@app.command()
def verify(request_ids: List[str] = typer.Argument(None, help="Request ids (default: all finished)"),
           as_json: bool = typer.Option(False, "--json")):
    """Verify finished erasures again: exit 5 if a subject is back anywhere the plan reached.

    Also marks MLflow retrain flags superseded when a newer model version was trained on
    data without the subject."""
    from .execution import Runner

    from .errors import InputError
    from .requests import load_state

    eng = _engine()
    with eng.ledger.exclusive():
        ids = list(request_ids) if request_ids else eng.ledger.request_ids()
        for rid in ids:
            eng.ledger.require(rid)
        if request_ids:   # asked by name: a request that has not finished cannot be verified
            open_ = [r for r in ids if not load_state(eng.ledger, r).done]
            if open_:
                raise InputError(f"request(s) not finished, nothing to verify: "
                                 f"{', '.join(open_)}; run them first (`erasure run`)")
        outcomes = Runner(eng).reverify(ids)
    statuses = {o.status for o in outcomes}
    overall = ("violated" if "violated" in statuses else
               "not_verified" if "not_verified" in statuses else "holds")
    out = {"status": overall, "requests": [o.to_json() for o in outcomes]}

    def human(o):
        for r in o["requests"]:
            typer.echo(f"{r['request_id']}: {r['status']}")
            for e in r["errors"]:
                typer.echo(f"  {e}", err=True)
            for n in r["notes"]:
                typer.echo(f"  {n}")
        typer.echo(f"Overall: {o['status']}")
    _emit(out, as_json, human)
    raise typer.Exit({"violated": ExitCode.FAILED, "not_verified": ExitCode.NEEDS_OPERATOR}
                     .get(overall, ExitCode.OK))


@app.command()
def sweep(as_json: bool = typer.Option(False, "--json"),
          fix: bool = typer.Option(False, "--fix", help="Re-erase every subject found"),
          every: Optional[str] = typer.Option(None, "--every", help="Stay running: one pass per "
                                              "interval (30s, 15m, 24h, 7d)"),
          max_passes: Optional[int] = typer.Option(None, "--max-passes", help="With --every: "
                                                   "stop after this many passes"),
          report_path: Optional[Path] = typer.Option(None, "--report", help="Also write the "
                                                     "sweep report as JSON to this file")):
    """One pass over every finished erasure: is any subject back anywhere? Exit 7 on findings."""
    import time as _time

    from .errors import InputError
    from .requests import FINISHED
    from .sweep import EXIT_FINDINGS, EXIT_NOT_VERIFIED, run_sweep

    interval = None
    if every:
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        try:
            interval = int(every[:-1]) * units[every[-1]]
        except (KeyError, ValueError):
            raise InputError(f"--every {every!r}: use a number and s, m, h or d (24h)") from None
    worst, passes = 0, 0
    while True:
        eng = _engine()
        with eng.ledger.exclusive():
            res = run_sweep(eng, fix=fix)
        out = res.to_json()
        if report_path:
            report_path.write_text(json.dumps(out, indent=2, sort_keys=True, default=str))

        def human(o):
            typer.echo(f"sweep {o['swept_at']}: {o['requests_checked']} requests, "
                       f"{o['subjects']} subjects, {len(o['targets_scanned'])} targets scanned "
                       f"in {o['seconds']}s: {o['status'].upper()}")
            for f in o["findings"]:
                typer.echo(f"  FOUND {f['request_id']} {f['subject']}: {f['name']}: {f['kind']}"
                           + (f", {f['rows']} rows" if f.get("rows") else "")
                           + (f", since version {f['since_version']}"
                              if f.get("since_version") is not None else ""))
            for m in o["open_model_flags"]:
                typer.echo(f"  open retrain flag: {m['model_version']} ({m['request_id']})")
            for x in o["fixed"]:
                typer.echo(f"  re-erased: {x['request_id']} {x['status']}")
            for x in o["not_verified"]:
                typer.echo(f"  NOT VERIFIED {x['name']}: {'; '.join(x['reasons'])}")
            for x in o["held"]:
                typer.echo(f"  not swept: {x['request_id']} {x['subject']} is under legal "
                           f"hold {', '.join(x['hold_ids'])} (never re-erased while held)")
            if o["shredded"]:
                typer.echo(f"  not swept: {len(o['shredded'])} requests whose subject ids were "
                           "crypto-shredded (`erasure shred`): nothing is left to look for")
        _emit(out, as_json, human)
        code = EXIT_FINDINGS if res.findings and not (
            fix and res.fixed and all(x["status"] in FINISHED for x in res.fixed)) else 0
        if not code and res.not_verified:
            code = EXIT_NOT_VERIFIED
        worst = max(worst, code)
        passes += 1
        if interval is None or (max_passes is not None and passes >= max_passes):
            break
        _state.pop("engine").close()
        _time.sleep(interval)
    raise typer.Exit(worst)


@app.command()
def schedule(kind: str = typer.Argument(..., help="cron, systemd or airflow"),
             at: str = typer.Option("03:17", help="Daily time, HH:MM")):
    """Print a ready-to-install schedule that runs the sweep every day."""
    from .errors import InputError
    from .schedules import render

    eng = _engine()
    try:
        typer.echo(render(kind, eng.config.path, at))
    except ValueError as exc:
        raise InputError(str(exc)) from None


@app.command()
def status(request_id: Optional[str] = typer.Argument(None),
           as_json: bool = typer.Option(False, "--json")):
    """Show one request, or all requests, as the ledger records them."""
    from .requests import load_state

    eng = _engine()
    ids = [request_id] if request_id else eng.ledger.request_ids()
    holds = eng.holds()
    required = eng.config.approvals_required
    states = []
    for r in ids:
        st = load_state(eng.ledger, r)
        js = st.to_json()
        # on_hold, awaiting_approval: as the holds and [approvals] say now
        js["status"] = st.effective_status(required, holds)
        js["governance"] = st.governance_json(holds)
        js["approvals_required"] = required
        states.append(js)
    out = states[0] if request_id else {"requests": states}

    def human(o):
        for s in ([o] if request_id else o["requests"]):
            typer.echo(f"{s['request_id']}  {s['status']:10}  received {s['received_at']}  "
                       f"deadline {s['deadline']}  subject {s['subject']['hmac'][:12]}…")
            g = s["governance"]
            who = [f"submitted by {g['submitted_by'] or '-'}"]
            if s["approvals_required"] or g["approved_by"]:
                who.append(f"approved by {', '.join(g['approved_by']) or '-'} "
                           f"({len(g['approved_by'])} of {s['approvals_required']})")
            if g["ran_by"]:
                who.append(f"ran by {g['ran_by']}")
            typer.echo("    " + "; ".join(who))
            if g["rejected"]:
                typer.echo(f"    rejected by {g['rejected']['actor']}: {g['rejected']['reason']}")
            for x in g["extensions"]:
                typer.echo(f"    extended by {x['actor']} from {x['deadline_before']}: "
                           f"{x['reason']}")
            for h in g.get("holds", []):
                typer.echo(f"    hold {h['hold_id']} ({h['status']}, scope {h['scope']}) placed "
                           f"by {h['added_by']}" + (f", released by {h['released_by']}"
                                                    if h["released_by"] else ""))
            for x in g["exempt"]:
                typer.echo(f"    exempt {x['name']}: {x['basis']}")
            for x in g["deferred"]:
                typer.echo(f"    deferred {x['name']}: {x['basis']}")
            if g["approval_stale"]:
                typer.echo("    the plan changed since it was approved:")
                for line in g["approval_stale"]["diff"]:
                    typer.echo(f"      {line}")
            for t in s["targets"]:
                typer.echo(f"    {t['name']}: " + ", ".join(f"{k} {v}" for k, v in t["steps"].items()))
                for why in t.get("not_verified") or []:
                    typer.echo(f"      not verified: {why}")
            if request_id:
                _print_abilities(s.get("connectors", {}), "    ")
    _emit(out, as_json, human)


keys_app = typer.Typer(help="Signing keys for proof reports.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


@keys_app.command("init")
def keys_init(force: bool = typer.Option(False, help="Replace existing keys"),
              organisation: str = typer.Option("Erasure engine (project-local)",
                                               help="Organisation name in the certificates"),
              as_json: bool = typer.Option(False, "--json")):
    """Create the project-local root CA and signer certificate (EC P-256). With [keys]
    provider = "vault" both keys are Transit keys and only the public certificates are
    written."""
    from .report.keys import init_keys, init_vault_keys, signing_files

    eng = _engine()
    files = signing_files(eng.config)
    if files.transit is not None:
        out = init_vault_keys(files, eng.config.keys, organisation, force)
        _emit(out, as_json, lambda o: typer.echo(
            f"signing keys in Vault ({o['root_key']}, {o['signer_key']}); public certificates "
            f"in {o['directory']}\nroot fingerprint (SHA-256): {o['root_fingerprint_sha256']}"
            "\npublish the fingerprint"))
        return
    out = init_keys(files.key.parent, organisation, force)
    _emit(out, as_json, lambda o: typer.echo(
        f"signing keys in {o['directory']}\nroot fingerprint (SHA-256): "
        f"{o['root_fingerprint_sha256']}\nkeep root.key offline; publish the fingerprint"))


@app.command()
def report(request_id: str = typer.Argument(...),
           output: Path = typer.Option(..., "--output", "-o", help="Where to write the PDF"),
           as_json: bool = typer.Option(False, "--json")):
    """Write a signed proof-of-erasure PDF. Refuses if the ledger does not verify."""
    from .report import write_report

    eng = _engine()
    out = write_report(eng, request_id, output)
    _emit(out, as_json, lambda o: typer.echo(
        f"signed report {o['report']} (ledger checkpoint {o['ledger_checkpoint']['entries']} "
        f"entries)"))


@app.command("verify-report")
def verify_report_cmd(path: Path = typer.Argument(...),
                      root: Optional[Path] = typer.Option(
                          None, help="Root certificate to pin (default: the configured one)"),
                      as_json: bool = typer.Option(False, "--json")):
    """Check a report: signature, whole-file coverage, pinned root, evidence vs ledger.
    Exit 0 only if every check passes; otherwise 5, naming the failed check.

    Works without a configuration given --root (the PDF and its signature are checked,
    not the ledger); without either it exits 3."""
    import os

    from .config import resolve_config_path
    from .errors import ConfigError
    from .evidence import build_evidence
    from .report.keys import signing_files
    from .report.sign import verify_report

    rebuild, root_pem = None, root
    named = _state.get("config") or os.environ.get("ERASURE_CONFIG")
    if named or resolve_config_path(None).is_file():
        eng = _engine()        # a configuration that was named, or found, must load (exit 3)
        root_pem = root or signing_files(eng.config).root
        if eng.config.has_ledger():
            def rebuild(ev):
                return build_evidence(eng.ledger, ev["request"]["request_id"],
                                      ev["ledger_checkpoint"]["entries"])
    if root_pem is None:
        raise ConfigError("no root certificate to pin the signature to: give --root ROOT.pem "
                          "(the organisation's root; compare its fingerprint with the published "
                          "one), or run where the configuration is (--config, ERASURE_CONFIG or "
                          "./erasure.toml)")
    if not root_pem.is_file():
        raise ConfigError(f"root certificate not found at {root_pem}: give --root ROOT.pem")
    rep = verify_report(path, root_pem, rebuild)

    def human(o):
        for c in o["checks"]:
            mark = "skip" if c.get("skipped") else "ok  " if c["ok"] else "FAIL"
            typer.echo(f"  {mark} {c['name']}: {c['detail']}")
        typer.echo("report verifies" if o["ok"] else "report does NOT verify")
    _emit(rep.to_json(), as_json, human)
    if not rep.ok:
        raise typer.Exit(ExitCode.FAILED)


@ledger_app.command("verify")
def ledger_verify(as_json: bool = typer.Option(False, "--json")):
    """Recompute the ledger's keyed hash chain and check it reaches its signed head anchor;
    exit 5 naming the first entry that does not match, or the truncation."""
    from .errors import ErasureFailed
    from .evidence import verify_checkpoints
    from .report.keys import signing_files

    eng = _engine()
    cert = signing_files(eng.config).cert
    ledger: Ledger | None
    problem: str | None
    try:
        ledger = eng.ledger
    except ErasureFailed as exc:     # a ledger in a format that cannot be verified
        ledger, ok, n, problem = None, False, 0, str(exc)
    else:
        ok, n, problem = ledger.verify_chain()
    seq, head = ledger.head() if ledger is not None else (0, None)
    cp_problems = (verify_checkpoints(ledger, cert if cert.is_file() else None)
                   if ok and ledger is not None else [])
    if cp_problems:
        ok, problem = False, cp_problems[0]
    out = {"ok": ok, "entries": n, "head": {"seq": seq, "hash": head}, "problem": problem,
           "signed_checkpoints_checked": cert.is_file()}
    _emit(out, as_json, lambda o: typer.echo(
        f"ledger OK: {o['entries']} entries, head {o['head']['hash'][:16]}…" if o["ok"]
        else f"ledger BROKEN: {o['problem']}"))
    if not ok:
        raise typer.Exit(ExitCode.FAILED)


@app.command()
def serve(host: str = typer.Option("127.0.0.1", help="Address to listen on"),
          port: int = typer.Option(8080, help="Port")):
    """Run the HTTP service: request API, OpenLineage endpoint, worker, dashboard
    (docs/service.md). Stops on Ctrl-C or SIGTERM."""
    import importlib.util

    from .config import resolve_config_path
    from .errors import ConfigError

    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        raise ConfigError("the service needs fastapi and uvicorn: pip install 'erasure[service]'")
    from .service.app import serve as serve_app

    serve_app(resolve_config_path(_state.get("config")), host, port)


# commands kept in their own modules, registered on `app` when they are imported
from . import cli_governance, cli_keys  # noqa: E402,F401


def run_cli(argv: list[str] | None = None) -> int:
    """Run one command and return its exit code (what `main` exits with)."""
    import warnings

    from .errors import ErasureError, subject_args

    # libraries' deprecation chatter (feast switches it on process-wide) is not for operators
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    try:
        rv = app(args=argv, standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    except ErasureError as exc:
        typer.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        typer.echo("aborted", err=True)
        return ExitCode.INTERNAL
    except Exception as exc:   # usage errors (typer's click) and the unexpected
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            return code
        from .subject import redact

        text = redact(str(exc), subject_args(list(argv or sys.argv[1:])))
        typer.echo(f"internal error: {type(exc).__name__}: {text}", err=True)
        return ExitCode.INTERNAL
    finally:
        eng = _state.pop("engine", None)
        if eng is not None:
            eng.close()


def main() -> None:
    sys.exit(run_cli())


if __name__ == "__main__":
    main()
