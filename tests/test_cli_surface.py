"""The CLI's promises: a light --help, documented exit codes, clear errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HEAVY = ("feast", "mlflow", "reportlab", "pyarrow", "deltalake", "networkx", "openlineage")


def test_help_imports_no_heavy_library():
    code = ("import sys, contextlib, io\n"
            "from erasure.cli import run_cli\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    rc = run_cli(['--help'])\n"
            f"print(rc, [m for m in {HEAVY!r} if m in sys.modules], 'Exit codes' in out.getvalue())")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.split("\n")[0] == "0 [] True"


def test_missing_config_is_exit_3(tmp_path, capsys):
    from erasure.cli import run_cli

    assert run_cli(["--config", str(tmp_path / "nope.toml"), "status"]) == 3
    assert "config file not found" in capsys.readouterr().err


def test_config_without_roots_is_exit_3(tmp_path, capsys):
    from erasure.cli import run_cli

    cfg = tmp_path / "erasure.toml"
    cfg.write_text("[ledger]\npath = 'l.db'\n")
    assert run_cli(["--config", str(cfg), "status"]) == 3
    assert "[[roots]]" in capsys.readouterr().err


def test_invalid_toml_is_exit_3(tmp_path, capsys):
    from erasure.cli import run_cli

    cfg = tmp_path / "erasure.toml"
    cfg.write_text("[ledger\n")
    assert run_cli(["--config", str(cfg), "status"]) == 3


def test_unknown_root_table_is_exit_4(tmp_path, capsys):
    from erasure.cli import run_cli

    cfg = tmp_path / "erasure.toml"
    cfg.write_text('[[roots]]\nnamespace = "file"\nname = "missing/table"\ncolumn = "id"\n')
    assert run_cli(["--config", str(cfg), "plan", "--subject-id", "1"]) == 4
    assert "missing/table" in capsys.readouterr().err
    assert not (tmp_path / ".erasure" / "ledger.db").exists()


def test_lineage_ingest_reports_rejects_and_is_idempotent(lake, capsys):
    bad = lake.root / "bad.jsonl"
    bad.write_text(lake.events.read_text().splitlines()[0] + "\n{\"run\": {}}\n")
    code, out = lake.cli("lineage", "ingest", str(bad), "--json", capsys=capsys)
    rep = json.loads(out)
    assert code == 4 and rep["files_refused"] == [str(bad)] and rep["events_new"] == 0
    assert rep["rejected"][0]["line"] == 2
    code, out = lake.cli("lineage", "ingest", str(bad), "--lenient", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["events_seen"] == 1
    code, out = lake.cli("lineage", "ingest", str(lake.events), "--json", capsys=capsys)
    first = json.loads(out)
    code, out = lake.cli("lineage", "ingest", str(lake.events), "--json", capsys=capsys)
    second = json.loads(out)
    assert code == 0 and second["files_unchanged"] == 1 and second["events_new"] == 0
    assert first["files_read"] + first["files_unchanged"] == 1


def test_unreadable_table_is_a_recorded_failure_not_a_crash(tmp_path, capsys):
    """The delta-rs `checkpoints` test table lost data files to an old VACUUM: reading fails."""
    import shutil

    from erasure.cli import run_cli

    from conftest import TESTDATA

    src = TESTDATA / "delta-rs-tables" / "checkpoints"
    table = tmp_path / "checkpoints"
    shutil.copytree(src, table)
    for p in [table, *table.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    cfg = tmp_path / "erasure.toml"
    cfg.write_text('[[roots]]\nnamespace = "file"\nname = "checkpoints"\ncolumn = "value"\n')
    # "x" is inside the files' statistics, so the reader must open the missing files
    assert run_cli(["--config", str(cfg), "plan", "--subject-id", "x"]) == 5
    err = capsys.readouterr().err
    assert "cannot read with the delta connector" in err and "not found" in err
    assert run_cli(["--config", str(cfg), "request", "submit", "--subject-id", "x",
                    "--json"]) == 0
    rid = json.loads(capsys.readouterr().out)["request_id"]
    assert run_cli(["--config", str(cfg), "run", rid, "--json"]) == 5
    out = json.loads(capsys.readouterr().out)
    assert out["status"] == "failed" and "plan failed" in out["requests"][0]["errors"][0]


def test_missing_subject_key_with_existing_requests_is_exit_3(lake, capsys):
    code, out = lake.cli("request", "submit", "--subject-id", "42", "--json", capsys=capsys)
    rid = json.loads(out)["request_id"]
    (lake.root / ".erasure" / "keys" / "subject.key").unlink()
    assert lake.cli("run", rid, capsys=capsys)[0] == 3
    assert "does not exist" in lake.last_err
    assert not (lake.root / ".erasure" / "keys" / "subject.key").exists()


def test_ledger_verify_names_the_edited_entry(lake, capsys):
    import sqlite3

    lake.cli("request", "submit", "--subject-id", "42", capsys=capsys)
    lake.cli("request", "submit", "--subject-id", "43", capsys=capsys)
    code, out = lake.cli("ledger", "verify", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["ok"] is True
    db = sqlite3.connect(lake.root / ".erasure" / "ledger.db")
    db.execute("DROP TRIGGER entries_no_update")
    db.execute("UPDATE entries SET body = replace(body, 'received_at', 'received_At') WHERE seq = 1")
    db.commit()
    db.close()
    code, out = lake.cli("ledger", "verify", "--json", capsys=capsys)
    assert code == 5 and json.loads(out)["problem"] == "entry 1 does not match its hash"


def test_every_exit_code_is_in_help_and_docs():
    """One enum of exit codes; `--help` and docs/cli.md list each of them."""
    import re

    from erasure.cli import EXIT_CODES
    from erasure.errors import ExitCode

    docs = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text(encoding="utf-8")
    documented = {int(m) for m in re.findall(r"^\| (\d+) \|", docs, re.M)}
    in_help = {int(m) for m in re.findall(r"^(\d+) ", EXIT_CODES, re.M)}
    codes = {int(c) for c in ExitCode}
    assert documented == codes, documented ^ codes
    assert in_help == codes, in_help ^ codes
