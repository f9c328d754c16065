"""Issue 10, item 1: a connector installed from a separate package (entry point) is used end
to end.

tests/data/plugin_pkg is a package of its own (`erasure-jsonl-connector`, built with setuptools)
that erases from JSON-lines files and names its `ConnectorPlugin` under the entry-point group
`erasure.connectors`. It is installed for real, with pip, into a temporary folder (no index, no
network); the `erasure` CLI then runs as a subprocess with that folder on PYTHONPATH, so the
engine finds the connector only through the installed distribution's entry point. Nothing of
the plug-in is imported into this test process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TESTDATA

PLUGIN_SRC = TESTDATA / "plugin_pkg"
ERASURE = Path(sys.executable).with_name("erasure")
SUBJECT = 2


# ---- installing packages, running the CLI --------------------------------------------------
def _pip_install(src: Path, workdir: Path) -> Path:
    """`pip install --target` of a copy of `src` (a setuptools build writes build/ and
    *.egg-info beside the sources: never into the repository). Returns the target folder."""
    copy, target = workdir / "src", workdir / "site"
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                             "__pycache__"))
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps",
                          "--no-build-isolation", "--no-index", "--target", str(target),
                          str(copy)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    assert res.returncode == 0, res.stdout + res.stderr
    return target


@pytest.fixture(scope="module")
def plugin_site(tmp_path_factory) -> Path:
    target = _pip_install(PLUGIN_SRC, tmp_path_factory.mktemp("jsonl-plugin"))
    dist = [p for p in target.iterdir() if p.name.endswith(".dist-info")]
    assert [p.name for p in dist] == ["erasure_jsonl_connector-0.1.0.dist-info"]
    assert (dist[0] / "entry_points.txt").read_text().split() == [
        "[erasure.connectors]", "jsonl", "=", "erasure_jsonl:PLUGIN"]
    return target


def _erasure(*args: str, cwd: Path, pythonpath: Path | None = None
             ) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ERASURE_"))}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([str(ERASURE), *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=120)


def _json(res: subprocess.CompletedProcess) -> dict:
    assert res.stdout.strip(), f"exit {res.returncode}, no output; stderr: {res.stderr}"
    return json.loads(res.stdout)


# ---- a small lake of JSON-lines files ------------------------------------------------------
USERS = [{"user_id": i, "email": f"user{i}@example.com", "name": f"User {i}"} for i in range(1, 7)]
ORDERS = [{"customer_id": u, "item": f"item-{u}-{k}", "qty": k + 1}
          for u in (1, 2, 3, 2, 5, 6) for k in range(2)]


def _lines(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def _event(users: Path, orders: Path) -> dict:
    """One OpenLineage COMPLETE event: a job writes orders.jsonl, whose customer_id is an
    IDENTITY copy of users.jsonl's user_id."""
    return {
        "eventType": "COMPLETE", "eventTime": "2026-01-01T00:00:00Z",
        "run": {"runId": "01890000-0000-7000-8000-000000000001"},
        "job": {"namespace": "shop", "name": "orders_from_users"},
        "inputs": [{"namespace": "jsonl", "name": str(users)}],
        "outputs": [{"namespace": "jsonl", "name": str(orders), "facets": {"columnLineage": {
            "_producer": "https://example.com/shop",
            "_schemaURL": "https://openlineage.io/spec/facets/1-2-0/ColumnLineageDatasetFacet.json",
            "fields": {"customer_id": {"inputFields": [{
                "namespace": "jsonl", "name": str(users), "field": "user_id",
                "transformations": [{"type": "DIRECT", "subtype": "IDENTITY"}]}]}}}}}],
        "producer": "https://example.com/shop",
        "schemaURL": "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"}


def _lake(root: Path, section: str = '[jsonl]\nfsync = true\n') -> tuple[Path, Path, Path]:
    """users.jsonl (the root), orders.jsonl (derived), the events and erasure.toml."""
    root.mkdir(parents=True, exist_ok=True)
    users, orders = root / "users.jsonl", root / "orders.jsonl"
    users.write_text(_lines(USERS))
    orders.write_text(_lines(ORDERS))
    (root / "events").mkdir()
    (root / "events" / "lineage.jsonl").write_text(json.dumps(_event(users, orders)) + "\n")
    cfg = root / "erasure.toml"
    cfg.write_text('[lineage]\nevents = ["events/*.jsonl"]\n\n'
                   f'[[roots]]\nnamespace = "jsonl"\nname = "{users}"\ncolumn = "user_id"\n\n'
                   + section)
    return cfg, users, orders


def _read(p: Path) -> list[dict]:
    return [json.loads(line) for line in p.read_text().splitlines()]


# ---- the story -----------------------------------------------------------------------------
def test_a_connector_from_a_separate_package_erases_end_to_end(plugin_site, tmp_path):
    root = tmp_path / "lake"
    cfg, users, orders = _lake(root)
    run = lambda *a: _erasure("--config", str(cfg), *a, cwd=root, pythonpath=plugin_site)  # noqa: E731

    # the plan: both files, under the plug-in's connector, with its abilities recorded
    res = run("plan", "--subject-id", str(SUBJECT), "--json")
    assert res.returncode == 0, res.stderr
    plan = _json(res)
    got = {(t["name"], t["connector"], t["column"], t["key_type"], t["how"], t["rows"],
            tuple(t["files"])) for t in plan["targets"]}
    assert got == {(str(users), "jsonl", "user_id", "int64", "root", 1, ("users.jsonl",)),
                   (str(orders), "jsonl", "customer_id", "int64", "column_lineage", 4,
                    ("orders.jsonl",))}
    assert plan["unresolved"] == []
    assert plan["connectors"]["jsonl"]["guard"] == "exact"
    assert plan["connectors"]["jsonl"]["residue_scan"] is True
    assert plan["connectors"]["jsonl"]["batch"] is True
    assert any("JSON-lines keeps no old versions" in n
               for n in plan["connectors"]["jsonl"]["notes"])
    # the human plan names the connector on each target line
    res = run("plan", "--subject-id", str(SUBJECT))
    assert res.returncode == 0, res.stderr
    assert re.search(rf"^\s+jsonl\s+{re.escape(str(orders))}\s+\[customer_id: int64, "
                     r"column_lineage\]$", res.stdout, re.M), res.stdout
    assert users.read_text() == _lines(USERS) and orders.read_text() == _lines(ORDERS)

    # submit, run
    res = run("request", "submit", "--subject-id", str(SUBJECT),
              "--requested-by", "dpo@example.com", "--json")
    assert res.returncode == 0, res.stderr
    rid = _json(res)["request_id"]
    res = run("run", rid, "--json")
    assert res.returncode == 0, (res.stdout, res.stderr)
    out = _json(res)
    assert out["status"] == "completed"
    targets = {t["name"]: t for t in out["requests"][0]["targets"]}
    assert {n: (t["connector"], t["rows_planned"], t["rows_deleted"], t["rows_remaining"],
                t["verified"]) for n, t in targets.items()} == {
        str(users): ("jsonl", 1, 1, 0, True), str(orders): ("jsonl", 4, 4, 0, True)}

    # the subject's lines are gone; everyone else's lines are there, byte for byte, in order
    assert users.read_text() == _lines([r for r in USERS if r["user_id"] != SUBJECT])
    assert orders.read_text() == _lines([r for r in ORDERS if r["customer_id"] != SUBJECT])
    assert len(_read(users)) == 5 and len(_read(orders)) == 8
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".users")
                  or p.name.startswith(".orders")) == []      # no temporary copy left
    for f in root.rglob("*"):
        if f.is_file():
            assert f"user{SUBJECT}@example.com".encode() not in f.read_bytes(), f

    # status and a fresh plan agree: nothing of the subject is left
    res = run("status", rid, "--json")
    assert res.returncode == 0, res.stderr
    st = _json(res)
    assert st["status"] == "completed"
    assert {t["connector"] for t in st["targets"]} == {"jsonl"}
    assert all(t["steps"]["erase"] == "completed" and t["steps"]["verify"] == "completed"
               for t in st["targets"]), st["targets"]
    res = run("plan", "--subject-id", str(SUBJECT), "--json")
    assert res.returncode == 0, res.stderr
    assert [t["rows"] for t in _json(res)["targets"]] == [0, 0]

    # the signed report shows the plug-in's own presentation
    assert run("keys", "init").returncode == 0
    pdf = tmp_path / "proof.pdf"
    res = run("report", rid, "--output", str(pdf))
    assert res.returncode == 0, res.stderr
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True,
                          text=True, check=True).stdout
    flat = " ".join(text.split())
    assert rid in flat and "COMPLETED" in flat
    assert "The subject's data reached 2 JSON-lines files." in flat, flat[:600]
    assert re.search(r"^\s*JSON-lines files\s*$", text, re.M), text   # its section's title
    assert "lake/users.jsonl" in flat and "lake/orders.jsonl" in flat  # path_names: last parts
    assert "jsonl dataset" not in flat          # not the fallback for an unknown connector
    res = run("verify-report", str(pdf), "--json")
    assert res.returncode == 0 and _json(res)["ok"] is True, (res.stdout, res.stderr)


def test_without_the_package_the_same_config_is_refused(plugin_site, tmp_path):
    """The connector comes from the installed package and from nowhere else."""
    root = tmp_path / "lake"
    cfg, users, _ = _lake(root)
    # its section is unknown without it (exit 3, docs/cli.md: configuration error)
    res = _erasure("--config", str(cfg), "plan", "--subject-id", str(SUBJECT), cwd=root)
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert "unknown table [jsonl]" in res.stderr
    # and without the section, the root's namespace has no connector (exit 4: unknown dataset,
    # "a root that does not exist, has no connector or lacks its column"), nothing recorded
    cfg.write_text(cfg.read_text().replace("[jsonl]\nfsync = true\n", ""))
    for args in (("plan", "--subject-id", str(SUBJECT)),
                 ("request", "submit", "--subject-id", str(SUBJECT))):
        res = _erasure("--config", str(cfg), *args, cwd=root)
        assert res.returncode == 4, (args, res.stdout, res.stderr)
        assert res.stderr.strip() == (f"error: root dataset jsonl:{users} was not found or no "
                                      "connector handles it"), res.stderr
    assert not (root / ".erasure" / "ledger.db").exists()
    assert users.read_text() == _lines(USERS)
    # the same config, the package on the path: planned (its section is optional)
    res = _erasure("--config", str(cfg), "plan", "--subject-id", str(SUBJECT), "--json",
                   cwd=root, pythonpath=plugin_site)
    assert res.returncode == 0, res.stderr
    assert {t["connector"] for t in _json(res)["targets"]} == {"jsonl"}


def test_the_plugins_section_reaches_its_connector(plugin_site, tmp_path):
    root = tmp_path / "lake"
    cfg, _, _ = _lake(root, '[jsonl]\nfsync = false\n')
    code = ("from pathlib import Path\n"
            "from erasure.config import load_config\n"
            "from connectors import default_registry, plugins\n"
            f"reg = default_registry(load_config(Path({str(cfg)!r})))\n"
            "conn = reg.get('jsonl')\n"
            "print(type(conn).__module__, conn.settings.fsync, list(plugins()).count('jsonl'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ERASURE_"))}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=root, env={**env, "PYTHONPATH": str(plugin_site)}, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["erasure_jsonl", "False", "1"]


@pytest.mark.parametrize("section, message", [
    ('[jsonl]\nfsync = true\nfsnyc = false\n', "[jsonl] unknown key 'fsnyc' (did you mean 'fsync'?)"),
    ('[jsonl]\nsafe_rename = true\n', "[jsonl] unknown key 'safe_rename' (known: fsync)"),
    ('[jsonl]\nfsync = "yes"\n', "[jsonl] fsync must be true or false"),
])
def test_a_bad_key_in_the_plugins_section_is_exit_3(plugin_site, tmp_path, section, message):
    root = tmp_path / "lake"
    cfg, users, _ = _lake(root, section)
    res = _erasure("--config", str(cfg), "plan", "--subject-id", str(SUBJECT), cwd=root,
                   pythonpath=plugin_site)
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert res.stderr.strip() == f"error: {cfg}: {message}"
    assert not (root / ".erasure").exists()
    assert users.read_text() == _lines(USERS)


# ---- broken plug-ins -----------------------------------------------------------------------
BROKEN = {
    # the entry point names something that is not a ConnectorPlugin
    "not-a-plugin": ("erasure_broken:PLUGIN", 'PLUGIN = {"name": "broken"}\n',
                     "is a dict, not a connectors.base.ConnectorPlugin"),
    # importing the plug-in's module fails (a library it needs is missing)
    "import-fails": ("erasure_broken:PLUGIN",
                     "import erasure_broken_needs_this_missing_library  # noqa: F401\n",
                     "cannot be loaded: ModuleNotFoundError: No module named "
                     "'erasure_broken_needs_this_missing_library'"),
    # the module imports, the name it points at is not there
    "no-such-name": ("erasure_broken:PLUGN", "from erasure_jsonl import PLUGIN  # noqa: F401\n",
                     "cannot be loaded: AttributeError: module 'erasure_broken' has no "
                     "attribute 'PLUGN'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_entry_point_is_exit_3_naming_it(plugin_site, tmp_path, case):
    ref, module, problem = BROKEN[case]
    src = tmp_path / "broken"
    (src / "erasure_broken").mkdir(parents=True)
    (src / "erasure_broken" / "__init__.py").write_text(module)
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "erasure-broken-connector"\nversion = "0.1.0"\n'
        f'[project.entry-points."erasure.connectors"]\nbroken = "{ref}"\n'
        '[tool.setuptools]\npackages = ["erasure_broken"]\n')
    broken_site = _pip_install(src, tmp_path / "pip")
    root = tmp_path / "lake"
    cfg, users, _ = _lake(root)
    path = Path(f"{broken_site}{os.pathsep}{plugin_site}")
    for args in (("plan", "--subject-id", str(SUBJECT)),
                 ("request", "submit", "--subject-id", str(SUBJECT))):
        res = _erasure("--config", str(cfg), *args, cwd=root, pythonpath=path)
        assert res.returncode == 3, (case, args, res.stdout, res.stderr)
        assert res.stderr.strip() == (f"error: {cfg}: connector plug-in 'broken' "
                                      f"(erasure.connectors entry point {ref}) {problem}")
        assert "Traceback" not in res.stderr
    assert not (root / ".erasure").exists()
    assert users.read_text() == _lines(USERS)
    # the good plug-in alone, same config: works
    res = _erasure("--config", str(cfg), "plan", "--subject-id", str(SUBJECT), cwd=root,
                   pythonpath=plugin_site)
    assert res.returncode == 0, res.stderr
