"""Load and validate `erasure.toml`.

Precedence, written down once: command-line `--config` > env `ERASURE_CONFIG` > `./erasure.toml`.
Relative paths inside the file resolve against the folder that holds the file.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    feast_repos: tuple[Path, ...] = ()
    raw: dict[str, Any] = field(repr=False, default_factory=dict)

    def override_for(self, namespace: str, name: str) -> DatasetOverride | None:
        for o in self.overrides:
            if o.namespace == namespace and o.name == name:
                return o
        return None


def resolve_config_path(cli_value: str | None) -> Path:
    if cli_value:
        return Path(cli_value)
    env = os.environ.get("ERASURE_CONFIG")
    return Path(env) if env else Path(DEFAULT_CONFIG)


def _req_str(table: dict, key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: '{key}' must be a non-empty string")
    return value


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


def dataset_name_for(namespace: str, name: str, base: Path) -> str:
    """Local file datasets are named by absolute path; relative names in the config resolve to it."""
    if namespace == "file" and not name.startswith("/"):
        return str((base / name).resolve())
    return name


def load_config(path: Path) -> Config:
    if not path.is_file():
        raise ConfigError(
            f"config file not found: {path} (pass --config PATH or set ERASURE_CONFIG)"
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    base = path.resolve().parent

    ledger = raw.get("ledger", {})
    keys = raw.get("keys", {})
    lineage = raw.get("lineage", {})
    if not isinstance(ledger, dict) or not isinstance(keys, dict) or not isinstance(lineage, dict):
        raise ConfigError(f"{path}: [ledger], [keys] and [lineage] must be tables")
    ledger_path = _resolve(base, str(ledger.get("path", ".erasure/ledger.db")))
    key_path = _resolve(base, str(keys.get("path", ".erasure/keys/subject.key")))
    store = _resolve(base, str(lineage.get("store", ".erasure/lineage.db")))
    globs = lineage.get("events", [])
    if isinstance(globs, str):
        globs = [globs]
    if not isinstance(globs, list) or not all(isinstance(g, str) for g in globs):
        raise ConfigError(f"{path}: [lineage] events must be a list of glob strings")
    globs = tuple(str(_resolve(base, g)) for g in globs)

    roots_raw = raw.get("roots", [])
    if not isinstance(roots_raw, list) or not roots_raw:
        raise ConfigError(
            f"{path}: at least one [[roots]] entry (namespace, name, column) is required: "
            "it says where subject identifiers originate"
        )
    roots = []
    for i, r in enumerate(roots_raw):
        where = f"{path}: [[roots]] #{i + 1}"
        if not isinstance(r, dict):
            raise ConfigError(f"{where} must be a table")
        ns = _req_str(r, "namespace", where)
        roots.append(Root(ns, dataset_name_for(ns, _req_str(r, "name", where), base),
                          _req_str(r, "column", where)))

    overrides = []
    for i, d in enumerate(raw.get("datasets", [])):
        where = f"{path}: [[datasets]] #{i + 1}"
        ns = _req_str(d, "namespace", where)
        col, exc = d.get("column"), d.get("exclude")
        if (col is None) == (exc is None):
            raise ConfigError(f"{where}: give exactly one of 'column' or 'exclude' (a reason)")
        overrides.append(DatasetOverride(ns, dataset_name_for(ns, _req_str(d, "name", where), base),
                                         col, exc))

    delta_raw = raw.get("delta", {})
    residue = delta_raw.get("residue", "purge")
    if residue not in RESIDUE_MODES:
        raise ConfigError(f"{path}: [delta] residue must be one of {', '.join(RESIDUE_MODES)}")
    retries = delta_raw.get("max_conflict_retries", 5)
    if not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"{path}: [delta] max_conflict_retries must be a non-negative integer")
    storage = delta_raw.get("storage_options", {})
    if not isinstance(storage, dict):
        raise ConfigError(f"{path}: [delta.storage_options] must be a table of strings")
    delta = DeltaSettings(residue, retries, {str(k): str(v) for k, v in storage.items()})

    feast_repos = []
    feast_raw = raw.get("feast", [])
    if not isinstance(feast_raw, list):
        raise ConfigError(f"{path}: feast repos are [[feast]] entries, each with repo = \"...\"")
    for i, f in enumerate(feast_raw):
        where = f"{path}: [[feast]] #{i + 1}"
        repo = _resolve(base, _req_str(f, "repo", where))
        if not (repo / "feature_store.yaml").is_file():
            raise ConfigError(f"{where}: no feature_store.yaml in {repo}")
        feast_repos.append(repo)

    return Config(path=path.resolve(), base_dir=base, ledger_path=ledger_path, key_path=key_path,
                  lineage_store=store, event_globs=globs,
                  lenient_events=bool(lineage.get("lenient", False)), roots=tuple(roots),
                  overrides=tuple(overrides), delta=delta, feast_repos=tuple(feast_repos),
                  raw=raw)
