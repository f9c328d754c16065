"""Load and validate `erasure.toml`.

Precedence, written down once: command-line `--config` > env `ERASURE_CONFIG` > `./erasure.toml`.
Relative paths inside the file resolve against the folder that holds the file.

The file is checked strictly against SCHEMA before anything else happens: an unknown key or
table (at any level), a value of the wrong type, an empty string and a lineage events pattern
that matches no file are each a ConfigError (exit 3) naming the key. A typo must not run with
a default the operator did not choose (`residu = "keep-history"` would purge).
"""

from __future__ import annotations

import difflib
import glob
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .errors import ConfigError

DEFAULT_CONFIG = "erasure.toml"
RESIDUE_MODES = ("purge", "keep-history")


@dataclass(frozen=True)
class Root:
    namespace: str
    name: str
    column: str


@dataclass(frozen=True)
class DatasetOverride:
    """An operator's word on one dataset: its subject key column, or why it is out of scope."""

    namespace: str
    name: str
    column: str | None = None
    exclude: str | None = None


@dataclass(frozen=True)
class DeltaSettings:
    residue: str = "purge"
    max_conflict_retries: int = 5
    storage_options: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class MlflowConfig:
    """`[mlflow]` as written (a relative sqlite path is resolved by the connector)."""

    tracking_uri: str
    registry_uri: str | None = None


@dataclass(frozen=True)
class Config:
    path: Path
    base_dir: Path
    ledger_path: Path
    key_path: Path
    lineage_store: Path
    event_globs: tuple[str, ...]
    lenient_events: bool
    roots: tuple[Root, ...]
    overrides: tuple[DatasetOverride, ...]
    delta: DeltaSettings
    signing_dir: Path
    feast_repos: tuple[Path, ...] = ()
    mlflow: MlflowConfig | None = None

    def override_for(self, namespace: str, name: str) -> DatasetOverride | None:
        for o in self.overrides:
            if o.namespace == namespace and o.name == name:
                return o
        return None


# ---- the schema: every key the file may hold, and what its value must be ----------------
@dataclass(frozen=True)
class Value:
    what: str                              # completes "<key> must be ..."
    ok: Callable[[Any], bool]


@dataclass(frozen=True)
class ListOf:
    """A list of values; one bare value counts as a list of one."""
    item: Value


@dataclass(frozen=True)
class Table:
    keys: Mapping[str, "Value | ListOf | Table"] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    many: bool = False                     # an array of tables, [[name]]
    values: Value | None = None            # free-form keys (storage options), each value checked


TEXT = Value("a non-empty string", lambda v: isinstance(v, str) and v != "")
PATH = TEXT
BOOL = Value("true or false", lambda v: isinstance(v, bool))
COUNT = Value("a non-negative integer",   # bool is an int subclass: true is not a count
              lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0)


def one_of(*choices: str) -> Value:
    return Value("one of " + ", ".join(f'"{c}"' for c in choices),
                 lambda v: isinstance(v, str) and v in choices)


SCHEMA = Table({
    "ledger": Table({"path": PATH}),
    "keys": Table({"path": PATH}),
    "lineage": Table({"events": ListOf(TEXT), "store": PATH, "lenient": BOOL}),
    "roots": Table({"namespace": TEXT, "name": TEXT, "column": TEXT},
                   required=("namespace", "name", "column"), many=True),
    "datasets": Table({"namespace": TEXT, "name": TEXT, "column": TEXT,
                       "exclude": Value("a non-empty string (a reason)", TEXT.ok)},
                      required=("namespace", "name"), many=True),
    "delta": Table({"residue": one_of(*RESIDUE_MODES), "max_conflict_retries": COUNT,
                    "storage_options": Table(values=TEXT)}),
    "feast": Table({"repo": PATH}, required=("repo",), many=True),
    "mlflow": Table({"tracking_uri": TEXT, "registry_uri": TEXT}, required=("tracking_uri",)),
    "signing": Table({"dir": PATH}),
})


def _header(name: str, spec) -> str:
    if isinstance(spec, Table):
        return f"[[{name}]]" if spec.many else f"[{name}]"
    return f"'{name}'"


def _unknown(where: str, key: str, value: Any, allowed: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    if not where:   # top level: say it as the operator wrote it
        if isinstance(value, dict):
            text = f"unknown table [{key}]"
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            text = f"unknown table [[{key}]]"
        else:
            text = f"unknown key '{key}'"
        hint = close and _header(close[0], allowed[close[0]])
    else:
        text = f"{where} unknown key '{key}'"
        hint = close and f"'{close[0]}'"
    known = ", ".join(_header(k, s) if not where else k for k, s in allowed.items())
    return f"{text} (did you mean {hint}?)" if hint else f"{text} (known: {known})"


def validate(raw: dict, spec: Table = SCHEMA, where: str = "", dotted: str = "") -> None:
    """Check `raw` against `spec`; raise ConfigError naming the first offending key path."""
    if spec.values is not None:
        for key, value in raw.items():
            if not spec.values.ok(value):
                raise ConfigError(f"{where} {key} must be {spec.values.what}")
        return
    for key, value in raw.items():
        if key not in spec.keys:
            raise ConfigError(_unknown(where, key, value, spec.keys))
        sub = spec.keys[key]
        path = f"{dotted}.{key}" if dotted else key
        label = f"{where} {key}" if where else key
        if isinstance(sub, Table) and sub.many:
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise ConfigError(f"{label} must be an array of tables ([[{path}]] entries)")
            for i, item in enumerate(value):
                here = f"[[{path}]] #{i + 1}"
                validate(item, sub, here, path)
                for req in sub.required:
                    if req not in item:
                        raise ConfigError(f"{here} needs '{req}' ({_what(sub.keys[req])})")
        elif isinstance(sub, Table):
            if not isinstance(value, dict):
                raise ConfigError(f"{label} must be a table ([{path}])")
            validate(value, sub, f"[{path}]", path)
            for req in sub.required:
                if req not in value:
                    raise ConfigError(f"[{path}] needs '{req}' ({_what(sub.keys[req])})")
        elif isinstance(sub, ListOf):
            items = [value] if not isinstance(value, list) else value
            if not isinstance(value, list) and not sub.item.ok(value):
                raise ConfigError(f"{label} must be {sub.item.what} or a list of them")
            for i, item in enumerate(items):
                if not sub.item.ok(item):
                    raise ConfigError(f"{label}[{i}] must be {sub.item.what}")
        elif not sub.ok(value):
            raise ConfigError(f"{label} must be {sub.what}")


def _what(spec) -> str:
    return spec.what if isinstance(spec, Value) else "a table"


# ---- loading ------------------------------------------------------------------------
def resolve_config_path(cli_value: str | None) -> Path:
    if cli_value:
        return Path(cli_value)
    env = os.environ.get("ERASURE_CONFIG")
    return Path(env) if env else Path(DEFAULT_CONFIG)


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def dataset_name_for(namespace: str, name: str, base: Path) -> str:
    """Local file datasets are named by absolute path; relative names in the config resolve to it."""
    if namespace == "file" and not name.startswith("/"):
        return str((base / name).resolve())
    return name


def _matches_a_file(pattern: str) -> bool:
    return any(os.path.isfile(m) for m in glob.iglob(pattern, recursive=True))


def load_config(path: Path) -> Config:
    """Read and check the whole file. Nothing is created or written here, and every command
    loads the config before it opens the ledger or the keys: a bad file records nothing."""
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {path} (pass --config PATH or set ERASURE_CONFIG)"
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return _build(raw, path, path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _build(raw: dict, path: Path, base: Path) -> Config:
    validate(raw)
    ledger, keys, lineage = raw.get("ledger", {}), raw.get("keys", {}), raw.get("lineage", {})

    events = lineage.get("events", [])
    events = [events] if isinstance(events, str) else events
    globs = []
    for i, g in enumerate(events):
        resolved = str(_resolve(base, g))
        if not _matches_a_file(resolved):
            also = f" ({resolved})" if resolved != g else ""
            raise ConfigError(f"[lineage] events[{i}] '{g}' matches no file{also}")
        globs.append(resolved)

    roots_raw = raw.get("roots", [])
    if not roots_raw:
        raise ConfigError(
            "at least one [[roots]] entry (namespace, name, column) is required: "
            "it says where subject identifiers originate")
    roots = tuple(Root(r["namespace"], dataset_name_for(r["namespace"], r["name"], base),
                       r["column"]) for r in roots_raw)

    overrides = []
    for i, d in enumerate(raw.get("datasets", [])):
        if ("column" in d) == ("exclude" in d):
            raise ConfigError(f"[[datasets]] #{i + 1}: give exactly one of 'column' or "
                              "'exclude' (a reason)")
        overrides.append(DatasetOverride(d["namespace"],
                                         dataset_name_for(d["namespace"], d["name"], base),
                                         d.get("column"), d.get("exclude")))

    delta_raw = raw.get("delta", {})
    delta = DeltaSettings(delta_raw.get("residue", "purge"),
                          delta_raw.get("max_conflict_retries", 5),
                          dict(delta_raw.get("storage_options", {})))

    feast_repos = []
    for i, f in enumerate(raw.get("feast", [])):
        repo = _resolve(base, f["repo"])
        if not (repo / "feature_store.yaml").is_file():
            raise ConfigError(f"[[feast]] #{i + 1} repo: no feature_store.yaml in {repo}")
        feast_repos.append(repo)

    m = raw.get("mlflow")
    mlflow = MlflowConfig(m["tracking_uri"], m.get("registry_uri")) if m is not None else None

    return Config(path=path.resolve(), base_dir=base,
                  ledger_path=_resolve(base, ledger.get("path", ".erasure/ledger.db")),
                  key_path=_resolve(base, keys.get("path", ".erasure/keys/subject.key")),
                  lineage_store=_resolve(base, lineage.get("store", ".erasure/lineage.db")),
                  event_globs=tuple(globs), lenient_events=lineage.get("lenient", False),
                  roots=roots, overrides=tuple(overrides), delta=delta,
                  signing_dir=_resolve(base, raw.get("signing", {}).get("dir",
                                                                        ".erasure/signing")),
                  feast_repos=tuple(feast_repos), mlflow=mlflow)
