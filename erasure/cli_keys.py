"""Commands for keys held in Vault / OpenBao (`erasure shred`); registered on the `erasure`
app by erasure/cli.py. Heavy libraries load inside the commands."""

from __future__ import annotations

import typer

from .cli import _emit, _engine, app


@app.command()
def shred(older_than: int = typer.Option(..., "--older-than", min=0, metavar="DAYS",
                                         help="Destroy the day keys whose day ended at least "
                                         "DAYS days ago (0: every day before today)"),
          dry_run: bool = typer.Option(False, "--dry-run", help="Say which day keys and "
                                       "requests would be shredded; destroy and record nothing"),
          as_json: bool = typer.Option(False, "--json")):
    """Crypto-shred sealed subject ids: destroy the Vault Transit day keys they were sealed
    under, for days whose requests are all finished (completed, not_found, rejected).
    Needs [keys] provider = "vault". Records one `subjects.shredded` ledger entry."""
    from .errors import ConfigError
    from .vault import VaultKeys
    from .vault import shred as shred_days

    eng = _engine()
    if eng.config.keys.provider != "vault":
        raise ConfigError('crypto-shredding needs [keys] provider = "vault" (sealed subject ids '
                          "under Transit day keys); with provider \"file\" every id is sealed "
                          "under the one subject key. Nothing was changed")
    keys = eng.keys
    if not isinstance(keys, VaultKeys):      # provider "vault" always gives VaultKeys
        raise ConfigError("crypto-shredding needs the subject keys in Vault; nothing was changed")
    out = shred_days(eng.ledger, keys, older_than, dry_run=dry_run)

    def human(o):
        verb = "would shred" if o["dry_run"] else "shredded"
        typer.echo(f"{verb} {len(o['shredded'])} day key(s) ({o['requests']} request(s)); "
                   f"days up to {o['last_day']}" + (" (dry run: nothing changed)"
                                                   if o["dry_run"] else ""))
        for k in o["shredded"]:
            typer.echo(f"  {verb} {k}")
        for s in o["skipped"]:
            typer.echo(f"  skipped  {s['key']}: {s['reason']}")
    _emit(out, as_json, human)
