"""Issue 10, item 9: Feast and MLflow are extras; the core installs without them.

The core-only environment is a real virtual environment holding exactly the distributions the
core's requirements pull in (linked from this test environment, so no index is needed): no
Feast, no MLflow, no demo or test libraries. The real CLI runs in it: a Delta-only config
plans, and a config naming a connector whose extra is missing is exit 3 with the pip command.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
import venv
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
EXTRAS = PROJECT["optional-dependencies"]
NOT_CORE = ("feast", "mlflow", "redis", "scikit-learn", "psycopg2-binary", "numpy",
            "openlineage-python", "pyyaml")


def _names(reqs: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in reqs}


def _expanded(extra: str) -> set[str]:
    """Every distribution an extra installs, its references to this project's extras followed."""
    names = set()
    for r in EXTRAS[extra]:
        req = Requirement(r)
        if canonicalize_name(req.name) == "erasure":
            for e in req.extras:
                names |= _expanded(e)
        else:
            names.add(canonicalize_name(req.name))
    return names


# ---- pyproject and Makefile ----------------------------------------------------------------
def test_core_dependencies_leave_out_the_extras_and_demo_and_test_libraries():
    core = _names(PROJECT["dependencies"])
    assert {"typer", "networkx", "deltalake", "pyarrow", "cryptography", "reportlab",
            "pyhanko"} <= core
    assert not core & set(NOT_CORE)


def _imports(files: list[Path]) -> set[str]:
    """The third-party top-level modules these files import (lazy imports too)."""
    found = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names
            and m not in ("erasure", "connectors")}


def _unprovided(modules: set[str], allowed: set[str]) -> set[str]:
    """The modules none of whose installed distributions is in `allowed`."""
    owners = metadata.packages_distributions()
    return {m for m in modules
            if not {canonicalize_name(d) for d in owners.get(m, [])} & allowed}


def test_every_import_of_the_engine_is_installed_by_the_core_or_its_connector_extra():
    """Static, over every code path: the core imports only what the core installs (directly
    or through a core dependency); the Feast and MLflow connectors add only their extras;
    each core dependency is imported by the engine (none is there for the demo or tests)."""
    code = sorted((REPO / "erasure").rglob("*.py")) + sorted((REPO / "connectors").rglob("*.py"))
    feast_code = [f for f in code if f.is_relative_to(REPO / "connectors" / "feast")]
    mlflow_code = [REPO / "connectors" / "mlflow.py"]
    sql_code = [REPO / "connectors" / "sql.py"]
    spark_code = [REPO / "connectors" / "spark.py"]
    policy_code = [REPO / "erasure" / "policy.py"]
    vault_code = [REPO / "erasure" / "vault.py"]
    service_code = [f for f in code if f.is_relative_to(REPO / "erasure" / "service")]
    postgres_code = [REPO / "erasure" / "ledger_pg.py"]
    core_code = [f for f in code if f not in feast_code + mlflow_code + sql_code + spark_code
                 + policy_code + vault_code + service_code + postgres_code]
    by_core = {canonicalize_name(d.metadata["Name"]) for d in _closure()}
    assert _unprovided(_imports(core_code), by_core) == set()
    assert _unprovided(_imports(feast_code), by_core | _expanded("feast")) == set()
    assert _unprovided(_imports(mlflow_code), by_core | _expanded("mlflow")) == set()
    assert _unprovided(_imports(sql_code), by_core | _expanded("sql")) == set()
    assert _unprovided(_imports(spark_code), by_core | _expanded("spark")) == set()
    assert _unprovided(_imports(policy_code), by_core | _expanded("policy")) == set()
    assert _unprovided(_imports(vault_code), by_core | _expanded("vault")) == set()
    assert "regopy" in _imports(policy_code) and "hvac" in _imports(vault_code)
    assert _unprovided(_imports(service_code), by_core | _expanded("service")) == set()
    assert "fastapi" in _imports(service_code)
    assert _unprovided(_imports(postgres_code), by_core | _expanded("postgres")) == set()
    assert "psycopg2" in _imports(postgres_code)
    assert "pyspark" in _imports(spark_code)
    assert {"feast", "yaml"} <= _imports(feast_code) and "mlflow" in _imports(mlflow_code)
    assert "sqlalchemy" in _imports(sql_code)
    owners = metadata.packages_distributions()
    used = {canonicalize_name(d) for m in _imports(code) for d in owners.get(m, [])}
    assert _names(PROJECT["dependencies"]) - used == set()


def test_extras_feast_mlflow_all_demo_test_exist_with_their_pins():
    pins = {canonicalize_name(Requirement(r).name): str(Requirement(r).specifier)
            for e in EXTRAS.values() for r in e}
    assert _expanded("feast") == {"feast", "redis", "pyyaml"}
    assert _expanded("mlflow") == {"mlflow"}
    assert _expanded("sql") == {"sqlalchemy", "psycopg2-binary"}
    assert _expanded("spark") == {"pyspark-client"}
    assert _expanded("policy") == {"regopy"}
    assert _expanded("vault") == {"hvac", "requests"}
    assert _expanded("all") == (_expanded("feast") | _expanded("mlflow") | _expanded("sql")
                                | _expanded("spark") | _expanded("policy") | _expanded("vault")
                                | _expanded("service") | _expanded("postgres"))
    assert "pysail" in _expanded("test")
    assert {"scikit-learn", "numpy", "openlineage-python"} | _expanded("all") <= _expanded("demo")
    assert {"psycopg2-binary", "pytest"} | _expanded("demo") <= _expanded("test")
    # feast[delta] would pin deltalake<1.0: plain feast
    assert not Requirement(next(r for r in EXTRAS["feast"] if r.startswith("feast"))).extras
    assert set(pins["feast"].split(",")) == {">=0.67", "<0.68"}
    assert set(pins["mlflow"].split(",")) == {">=3.17", "<3.18"}
    deltalake = next(Requirement(r) for r in PROJECT["dependencies"] if r.startswith("deltalake"))
    assert "<1.7" in str(deltalake.specifier)


def test_make_demo_and_make_test_install_every_extra():
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^\$\(STAMP\): pyproject\.toml$", makefile, re.M)
    installs = re.findall(r"pip install --quiet -e '\.\[([a-z,]+)\]'", makefile)
    stamp_rule = makefile.split("$(STAMP): pyproject.toml", 1)[1].split("\n\n", 1)[0]
    assert "pip install --quiet -e '.[all,test,demo]'" in stamp_rule
    for extras in installs:
        assert set(extras.split(",")) <= set(EXTRAS), extras
    assert re.search(r"^demo: \$\(STAMP\)", makefile, re.M)
    assert re.search(r"^test: \$\(STAMP\)", makefile, re.M)


# ---- the check itself ----------------------------------------------------------------------
def test_require_names_the_pip_command_and_is_a_config_error():
    from connectors import extras
    from erasure.errors import ConfigError, ExitCode

    missing = extras.Extra("[[feast]]", "feast_not_installed_xyz", "erasure[feast]")
    with pytest.raises(ConfigError) as err:
        extras.require(missing)
    assert str(err.value) == ("[[feast]] is configured but feast_not_installed_xyz is not "
                              "installed: pip install 'erasure[feast]'")
    assert err.value.exit_code == ExitCode.CONFIG == 3
    assert "feast_not_installed_xyz" not in sys.modules


def test_the_extras_table_names_real_modules_and_real_extras():
    """In this environment (everything installed) every checked module is found, and each
    `erasure[...]` in a message is an extra pyproject declares."""
    from connectors import extras

    for extra in (extras.FEAST, extras.MLFLOW, extras.MLFLOW_POSTGRES, extras.SQL,
                  extras.SQL_POSTGRES):
        assert extras.installed(extra.module), extra
        extras.require(extra)
        m = re.fullmatch(r"erasure\[(\w+)\]", extra.install)
        if m:
            assert m.group(1) in EXTRAS
        else:   # not ours to install: a distribution the test extra pins
            assert canonicalize_name(extra.install) in _expanded("test")


def test_building_the_registry_imports_neither_feast_nor_mlflow(tmp_path):
    lake = _delta_lake(tmp_path)
    (lake / "feature_repo").mkdir()
    (lake / "feature_repo" / "feature_store.yaml").write_text("project: p\n")
    cfg = _config(lake, '[[feast]]\nrepo = "feature_repo"\n\n'
                        '[mlflow]\ntracking_uri = "postgresql://nobody@127.0.0.1:5432/test"\n')
    code = ("import sys\n"
            "from erasure.config import load_config\n"
            "from connectors import default_registry\n"
            f"reg = default_registry(load_config(__import__('pathlib').Path({str(cfg)!r})))\n"
            "print(sorted(c.name for c in reg.connectors),"
            " [m for m in ('feast', 'mlflow', 'psycopg2') if m in sys.modules])")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=REPO, check=True)
    assert res.stdout.strip() == "['delta', 'feast', 'mlflow', 'parquet'] []"


# ---- a real environment with the core alone ------------------------------------------------
def _closure() -> list[metadata.Distribution]:
    """The installed distributions the core's requirements pull in, transitively."""
    found: dict[str, metadata.Distribution] = {}
    seen: set[tuple[str, str]] = set()
    todo = [(Requirement(r), "") for r in PROJECT["dependencies"]]
    while todo:
        req, _ = todo.pop()
        name = canonicalize_name(req.name)
        wanted = {""} | set(req.extras)
        if all((name, e) in seen for e in wanted):
            continue
        seen |= {(name, e) for e in wanted}
        dist = found.setdefault(name, metadata.distribution(req.name))
        for r in dist.requires or []:
            sub = Requirement(r)
            if sub.marker is None or any(sub.marker.evaluate({"extra": e}) for e in wanted):
                todo.append((sub, ""))
    return list(found.values())


@pytest.fixture(scope="module")
def core_python(tmp_path_factory) -> Path:
    """A venv with the core's distributions and this repository, and nothing else."""
    root = tmp_path_factory.mktemp("core-venv")
    venv.create(root, with_pip=False, symlinks=True)
    python = root / "bin" / "python"
    site = Path(subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip())
    for dist in _closure():
        base = Path(dist.locate_file(""))
        for top in {f.parts[0] for f in dist.files or ()}:
            if top in ("..", "__pycache__") or top.endswith(".pth"):
                continue
            if (base / top).exists() and not (site / top).exists():
                (site / top).symlink_to(base / top)
    (site / "erasure-repository.pth").write_text(str(REPO) + "\n")
    return python


def _run(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    code = "import sys; from erasure.cli import main; sys.argv[0] = 'erasure'; main()"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "ERASURE_"))}
    return subprocess.run([str(python), "-c", code, *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=120)


def _delta_lake(tmp_path: Path) -> Path:
    import pyarrow as pa
    from deltalake import write_deltalake

    lake = tmp_path / "lake"
    lake.mkdir()
    write_deltalake(str(lake / "users"), pa.table({"user_id": [1, 2, 3],
                                                   "email": ["a@x", "b@x", "c@x"]}))
    return lake


def _config(lake: Path, extra: str = "") -> Path:
    cfg = lake / "erasure.toml"
    cfg.write_text('[[roots]]\nnamespace = "file"\nname = "users"\ncolumn = "user_id"\n\n'
                   + extra)
    return cfg


def test_the_core_environment_really_lacks_the_extras(core_python, tmp_path):
    probe = ("import importlib.util as u; print([m for m in ('feast', 'mlflow', 'sklearn', "
             "'psycopg2', 'redis', 'numpy', 'openlineage', 'deltalake', 'pyarrow', 'typer', "
             "'reportlab', 'pyhanko', 'erasure', 'connectors') if u.find_spec(m)])")
    res = subprocess.run([str(core_python), "-c", probe], capture_output=True, text=True,
                         cwd=tmp_path, check=True)
    assert res.stdout.strip() == ("['deltalake', 'pyarrow', 'typer', 'reportlab', 'pyhanko', "
                                  "'erasure', 'connectors']")


def test_core_alone_plans_a_delta_erasure(core_python, tmp_path):
    lake = _delta_lake(tmp_path)
    cfg = _config(lake)
    assert _run(core_python, "--help", cwd=lake).returncode == 0
    res = _run(core_python, "--config", str(cfg), "plan", "--subject-id", "2", "--json",
               cwd=lake)
    assert res.returncode == 0, res.stderr
    assert "users" in res.stdout


@pytest.mark.parametrize("section, message", [
    ('[[feast]]\nrepo = "feature_repo"\n',
     "[[feast]] is configured but feast is not installed: pip install 'erasure[feast]'"),
    ('[mlflow]\ntracking_uri = "sqlite:///mlflow.db"\n',
     "[mlflow] is configured but mlflow is not installed: pip install 'erasure[mlflow]'"),
    ('[[sql]]\nnamespace = "crm"\nurl = "sqlite:///crm.db"\n',
     "[[sql]] is configured but sqlalchemy is not installed: pip install 'erasure[sql]'"),
])
def test_a_configured_connector_without_its_extra_is_exit_3(core_python, tmp_path, section,
                                                           message):
    lake = _delta_lake(tmp_path)
    (lake / "feature_repo").mkdir()
    (lake / "feature_repo" / "feature_store.yaml").write_text("project: p\n")
    cfg = _config(lake, section)
    res = _run(core_python, "--config", str(cfg), "plan", "--subject-id", "2", cwd=lake)
    assert res.returncode == 3, (res.stdout, res.stderr)
    assert res.stderr.strip() == f"error: {message}"
    assert not (lake / ".erasure" / "ledger.db").exists()
    assert not (lake / "mlflow.db").exists()
