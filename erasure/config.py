"""Load and validate `erasure.toml`.

Precedence, written down once: command-line `--config` > env `ERASURE_CONFIG` > `./erasure.toml`.
Relative paths inside the file resolve against the folder that holds the file.

The file is described by pydantic models (v2), checked before anything else happens. The core
sections ([ledger], [keys], [lineage], [[roots]], [[datasets]], [signing]) are modelled here;
each connector owns its own section's model in its own module, named by its plug-in and listed
by `connectors.config_sections()`; the file's model is composed from both when a config is
first loaded, and `Config.sections` holds each connector's validated section by its key. Every model forbids unknown keys and is
strict (true is not 1, "false" is not a boolean, 1 is not a string). An unknown key or table
(at any level), a value of the wrong type, an empty string and a lineage events pattern that
matches no file are each a ConfigError (exit 3) naming the file and the key path, translated
from pydantic's errors in one place (`_message`). A typo must not run with a default the
operator did not choose (`residu = "keep-history"` would purge).

This module is imported only by commands that load a config: `erasure --help` never imports
it, nor pydantic.
"""

from __future__ import annotations

import difflib
import functools
import glob
import os
import re
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping

import annotated_types
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      StringConstraints, ValidationError, ValidationInfo, create_model,
                      model_validator)
from pydantic_core import PydanticCustomError

from .errors import ConfigError

DEFAULT_CONFIG = "erasure.toml"
ResidueMode = Literal["purge", "keep-history", "rewrite-history"]
RESIDUE_MODES: tuple[str, ...] = typing.get_args(ResidueMode)
# the residue modes whose targets get a purge step after the erase (`keep-history` has none)
PURGE_MODES: tuple[str, ...] = ("purge", "rewrite-history")


# ---- the vocabulary every section's model uses -------------------------------------------
@dataclass(frozen=True)
class Must:
    """What a value must be, for the message: completes "<key> must be ..."."""
    what: str


# unknown keys forbidden; strict: a bool is not an int, an int is not a string
SECTION = ConfigDict(extra="forbid", strict=True, frozen=True)

Text = Annotated[str, StringConstraints(min_length=1), Must("a non-empty string")]
PathText = Text                          # a path, resolved against the config file's folder
Reason = Annotated[str, StringConstraints(min_length=1), Must("a non-empty string (a reason)")]
Flag = Annotated[bool, Must("true or false")]
Count = Annotated[int, annotated_types.Ge(0), Must("a non-negative integer")]


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _a_duration(v: Any) -> Any:
    """"90s", "30m", "1h", "2d" -> seconds (an int); anything else is refused as is."""
    if isinstance(v, str):
        m = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", v)
        if m:
            return int(m.group(1)) * _UNITS[m.group(2)]
    raise refuse('must be a duration such as "90s", "30m", "1h" or "2d"')


# seconds, written in the file as a string with a unit
Duration = Annotated[int, BeforeValidator(_a_duration)]


def one_of(*choices: str) -> Any:
    return Annotated[Literal[choices], Must("one of " + ", ".join(f'"{c}"' for c in choices))]


# written out (not one_of(...)) so that type checkers see a type, not a variable
Residue = Annotated[ResidueMode, Must("one of " + ", ".join(f'"{c}"' for c in RESIDUE_MODES))]


def refuse(text: str) -> PydanticCustomError:
    """A check of our own: `text` follows the key path in the message (a leading ':' is
    kept as is, anything else after a space)."""
    return PydanticCustomError("erasure_config", "{text}", {"text": text})


def base_dir(info: ValidationInfo) -> Path:
    """The config file's folder, passed as validation context by load_config."""
    ctx = info.context or {}
    return Path(ctx.get("base_dir") or Path.cwd())


def resolve_path(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p)


# ---- the core sections -----------------------------------------------------------------
def _matches_a_file(pattern: str) -> bool:
    return any(os.path.isfile(m) for m in glob.iglob(pattern, recursive=True))


def _events_pattern_matches(g: str, info: ValidationInfo) -> str:
    resolved = str(resolve_path(base_dir(info), g))
    if not _matches_a_file(resolved):
        also = f" ({resolved})" if resolved != g else ""
        raise refuse(f"'{g}' matches no file{also}")
    return g


def _one_is_a_list(v: Any) -> Any:
    return [v] if isinstance(v, str) and v else v


EventPattern = Annotated[str, StringConstraints(min_length=1), Must("a non-empty string"),
                         AfterValidator(_events_pattern_matches)]


def _a_postgres_url(v: str) -> str:
    if not re.match(r"postgres(ql)?://", v):
        raise refuse('must be a PostgreSQL URL ("postgresql://user@host:5432/db"); leave it '
                     "out for the SQLite ledger at path")
    return v


class LedgerSection(BaseModel):
    """`[ledger]`: the SQLite file `path` (the default), or a PostgreSQL database `url` for
    service deployments where several processes share the ledger (erasure/ledger_pg.py)."""
    model_config = SECTION
    path: PathText = ".erasure/ledger.db"
    url: Annotated[Text, AfterValidator(_a_postgres_url)] | None = None


class KeysSection(BaseModel):
    """`[keys]`: where the subject key lives. `provider = "file"` (the default): a 32-byte key
    in `path` (or env ERASURE_SUBJECT_KEY). `provider = "vault"`: Vault or OpenBao at `url`
    (erasure/vault.py); the token or AppRole credentials come from the environment
    (VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID), never from this file."""
    model_config = SECTION
    path: PathText = ".erasure/keys/subject.key"
    provider: one_of("file", "vault") = "file"              # type: ignore[valid-type]
    url: Text | None = None                                 # https://vault.example:8200
    mount: Text = "transit"                                 # the Transit secrets engine's mount
    # "transit": subject HMACs computed by Transit's hmac endpoint (the key never leaves
    # Vault); "kv": the 32-byte subject key read from KV v2 and used in memory only
    hmac: one_of("transit", "kv") = "transit"               # type: ignore[valid-type]
    hmac_key: Text = "erasure-subject"                      # Transit key for subject HMACs
    kv_mount: Text = "secret"                               # KV v2 mount (hmac = "kv")
    kv_path: Text = "erasure/subject-key"                   # its secret (field "key", hex)
    signer_key: Text = "erasure-signer"                     # Transit key that signs reports
    root_key: Text = "erasure-root"                         # Transit key of the report root CA
    seal_prefix: Text = "erasure-seal"                      # Transit keys wrapping sealed ids
    approle_mount: Text = "approle"

    @model_validator(mode="after")
    def _vault_needs_a_url(self) -> "KeysSection":
        if self.provider == "vault" and not self.url:
            raise refuse(': provider = "vault" needs url (the Vault or OpenBao address)')
        return self


class PolicySection(BaseModel):
    """`[policy]`: exemptions as policy code (erasure/policy.py): Rego modules in `rego` (a
    file or a folder of .rego files), evaluated in-process, or an OPA server at `opa_url`."""
    model_config = SECTION
    rego: PathText | None = None
    opa_url: Text | None = None
    timeout: Duration = 5                                   # seconds, for opa_url

    @model_validator(mode="after")
    def _one_source(self) -> "PolicySection":
        if self.rego is not None and self.opa_url is not None:
            raise refuse(": give one of 'rego' (policy files) or 'opa_url' (an OPA server)")
        return self


ROLES = ("submitter", "approver", "operator", "auditor", "lineage")


def _a_sha256(v: str) -> str:
    if not re.fullmatch(r"[0-9a-f]{64}", v):
        raise refuse("must be the hex SHA-256 of the bearer token (64 lowercase hex "
                     "characters), never the token itself")
    return v


def _an_http_url(v: str) -> str:
    if not re.match(r"https?://[^/\s]+", v):
        raise refuse("must be an http:// or https:// URL")
    return v


class ServiceToken(BaseModel):
    """`[[service.tokens]]`: one bearer token of the HTTP service, by its SHA-256; its
    `name` is the actor recorded for everything done with it."""
    model_config = SECTION
    name: Text
    sha256: Annotated[Text, AfterValidator(_a_sha256)]
    roles: Annotated[list[one_of(*ROLES)], annotated_types.MinLen(1),  # type: ignore[valid-type]
                     Must("a non-empty list of roles: " + ", ".join(ROLES))]


class ServiceWebhook(BaseModel):
    """`[[service.webhooks]]`: where status changes are POSTed, signed with `secret`."""
    model_config = SECTION
    url: Annotated[Text, AfterValidator(_an_http_url)]
    secret: Text


class ServiceSection(BaseModel):
    """`[service]`: the HTTP service (`erasure serve`, erasure/service/)."""
    model_config = SECTION
    tokens: list[ServiceToken] = Field(default_factory=list)
    webhooks: list[ServiceWebhook] = Field(default_factory=list)
    worker_interval: Duration | None = None     # off by default: "60s" runs pending requests
    max_body: Annotated[int, annotated_types.Ge(1024),
                        Must("an integer of at least 1024 (bytes)")] = 1_048_576
    # the login cookie's Secure flag: keep it on behind TLS (browsers also accept it on
    # http://localhost and 127.0.0.1)
    secure_cookie: Flag = True

    @model_validator(mode="after")
    def _unique_tokens(self) -> "ServiceSection":
        for what, values in (("name", [t.name for t in self.tokens]),
                             ("sha256", [t.sha256 for t in self.tokens])):
            twice = sorted({v for v in values if values.count(v) > 1})
            if twice:
                raise refuse(f"[[service.tokens]] repeats the {what} {twice[0][:16]}")
        return self


class ApprovalsSection(BaseModel):
    """`[approvals]`: how many different actors (not the submitter) must approve a request's
    plan before `run` erases anything (0: none; 2: four eyes)."""
    model_config = SECTION
    required: Count = 0


class LineageSection(BaseModel):
    model_config = SECTION
    events: Annotated[list[EventPattern], BeforeValidator(_one_is_a_list),
                      Must("a non-empty string or a list of them")] = Field(default_factory=list)
    store: PathText = ".erasure/lineage.db"
    lenient: Flag = False


class RootEntry(BaseModel):
    model_config = SECTION
    namespace: Text
    name: Text
    column: Text
    identity: Text | None = None        # the identity type the key column holds (its name)


def _a_valid_regex(pattern: str) -> str:
    import re

    try:
        re.compile(pattern)
    except re.error as exc:
        raise refuse(f"is not a valid regular expression: {exc}") from None
    return pattern


class IdentityEntry(BaseModel):
    """`[[identities]]`: a type of identifier a request may carry (erasure/identity.py)."""
    model_config = SECTION
    name: Text
    normalize: one_of("lower", "digits") | None = None    # type: ignore[valid-type]
    pattern: Annotated[Text, AfterValidator(_a_valid_regex)] | None = None


class DatasetEntry(BaseModel):
    model_config = SECTION
    namespace: Text
    name: Text
    column: Text | None = None
    exclude: Reason | None = None

    @model_validator(mode="after")
    def _column_or_exclude(self) -> "DatasetEntry":
        if (self.column is None) == (self.exclude is None):
            raise refuse(": give exactly one of 'column' or 'exclude' (a reason)")
        return self


class SigningSection(BaseModel):
    model_config = SECTION
    dir: PathText = ".erasure/signing"


class EnrichEntry(BaseModel):
    """`[[enrich]]`: a lookup table that maps one identity to another (erasure/enrich.py)."""
    model_config = SECTION
    namespace: Text
    name: Text
    from_column: Text
    to_column: Text
    from_identity: Text | None = None     # default: from_column
    to_identity: Text | None = None       # default: to_column
    max_values: Annotated[int, annotated_types.Ge(1),
                          Must("a positive integer")] = 20


STORAGE_SCHEMES = ("s3://", "s3a://", "gs://", "abfss://", "az://")


def _a_store_prefix(prefix: str) -> str:
    scheme, sep, rest = prefix.partition("://")
    if not sep or f"{scheme}://" not in STORAGE_SCHEMES or not rest.split("/")[0]:
        raise refuse("must be an object-store prefix with a bucket or container: "
                     + ", ".join(f'"{s}<bucket>[/path]"' for s in STORAGE_SCHEMES))
    return prefix


class StorageEntry(BaseModel):
    """`[[storage]]`: the options (deltalake's keys, strings) for every table and dataset
    under `prefix`; the longest matching prefix wins (connectors/objectstore.py)."""
    model_config = SECTION
    prefix: Annotated[Text, AfterValidator(_a_store_prefix)]
    options: dict[str, Text] = Field(default_factory=dict)


class CoreFile(BaseModel):
    """The core sections; `file_model()` adds each connector's."""
    model_config = SECTION
    ledger: LedgerSection = LedgerSection()
    keys: KeysSection = KeysSection()
    lineage: LineageSection = LineageSection()
    roots: list[RootEntry] = Field(default_factory=list)
    datasets: list[DatasetEntry] = Field(default_factory=list)
    identities: list[IdentityEntry] = Field(default_factory=list)
    enrich: list[EnrichEntry] = Field(default_factory=list)
    storage: list[StorageEntry] = Field(default_factory=list)
    signing: SigningSection = SigningSection()
    policy: PolicySection = PolicySection()
    approvals: ApprovalsSection = ApprovalsSection()
    service: ServiceSection = ServiceSection()

    @model_validator(mode="after")
    def _a_root(self) -> "CoreFile":
        if not self.roots:
            raise refuse("at least one [[roots]] entry (namespace, name, column) is required: "
                         "it says where subject identifiers originate")
        names = [i.name for i in self.identities]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise refuse(f"[[identities]] declares {', '.join(twice)} more than once")
        prefixes = [s.prefix.rstrip("/") for s in self.storage]
        twice = sorted({p for p in prefixes if prefixes.count(p) > 1})
        if twice:
            raise refuse(f"[[storage]] names the prefix {', '.join(twice)} more than once")
        return self


@functools.cache
def file_model() -> type[BaseModel]:
    """The whole file: the core sections plus each connector's own (connectors/__init__.py)."""
    from connectors import config_sections

    fields: dict[str, Any] = {name: (annotation, Field(default_factory=factory))
                              for name, (annotation, factory) in config_sections().items()}
    return create_model("ErasureFile", __base__=CoreFile, **fields)


# ---- the typed config the engine uses --------------------------------------------------
@dataclass(frozen=True)
class Root:
    namespace: str
    name: str
    column: str
    identity: str = ""      # the identity type its key column holds (default: the column)

    def __post_init__(self) -> None:
        if not self.identity:
            object.__setattr__(self, "identity", self.column)


@dataclass(frozen=True)
class Enrichment:
    """One `[[enrich]]` entry, resolved: look `from_identity` values up in `from_column` of
    the dataset and take `to_column` as `to_identity` values."""

    namespace: str
    name: str
    from_column: str
    to_column: str
    from_identity: str
    to_identity: str
    max_values: int = 20


@dataclass(frozen=True)
class DatasetOverride:
    """An operator's word on one dataset: its subject key column, or why it is out of scope."""

    namespace: str
    name: str
    column: str | None = None
    exclude: str | None = None


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
    signing_dir: Path
    # each connector's section by its key in the file ("delta" for [delta]), as its own model
    # validated it (the section's default when the file has none)
    sections: Mapping[str, Any] = field(default_factory=dict)
    # the declared identity types by name ([[identities]]); root identities need none
    identities: Mapping[str, Any] = field(default_factory=dict)
    enrich: tuple[Enrichment, ...] = ()
    # `[[storage]]` entries (prefix, options), in the file's order
    storage: tuple[Any, ...] = ()
    # `[keys]` as validated (provider, Vault address and key names); `key_path` is its path
    keys: Any = field(default_factory=KeysSection)
    # `[policy]`: `rego` resolved to an absolute path (None when not set), `opa_url`, `timeout`
    policy: Any = field(default_factory=PolicySection)
    # `[approvals] required`: approvals by distinct actors a request needs before it runs
    approvals_required: int = 0
    # `[service]` as validated: tokens (by SHA-256), webhooks, worker interval, limits
    service: Any = field(default_factory=ServiceSection)
    # `[ledger] url`: a PostgreSQL ledger instead of the SQLite file at ledger_path
    ledger_url: str | None = None

    def has_ledger(self) -> bool:
        """Whether a ledger may exist already: a PostgreSQL ledger is looked for in its
        database; a SQLite ledger exists once its file does (and is not created here)."""
        return self.ledger_url is not None or self.ledger_path.exists()

    def section(self, key: str) -> Any:
        return self.sections.get(key)

    def override_for(self, namespace: str, name: str) -> DatasetOverride | None:
        for o in self.overrides:
            if o.namespace == namespace and o.name == name:
                return o
        return None


# ---- pydantic's errors, said as the operator wrote the file ------------------------------
@dataclass
class _Spot:
    """Where a loc points in the file: its label ("[[datasets]] #2 exclude"), what kind of
    thing the model expects there, and what the value must be."""
    label: str = ""
    kind: str = "table"                 # table, many, item, map, list, value
    dotted: str = ""                    # delta.storage_options
    header: str = ""                    # the table that holds it: [delta], [[roots]] #1
    model: Any = None                   # the model of a table or an item
    inner: Any = None                   # the value type of a map or a list
    must: str = ""
    parent: "_Spot | None" = None


def _strip(annotation: Any) -> tuple[Any, list[Any]]:
    """The type under Annotated and Optional, and the Annotated metadata."""
    meta: list[Any] = []
    while True:
        if typing.get_origin(annotation) is Annotated:
            annotation, *more = typing.get_args(annotation)
            meta += more
            continue
        args = typing.get_args(annotation)
        if type(None) in args and len(args) == 2:
            annotation = next(a for a in args if a is not type(None))
            continue
        return annotation, meta


def _is_model(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel)


def _must(meta: list[Any]) -> str:
    return next((m.what for m in meta if isinstance(m, Must)), "valid")


def _kind_of(annotation: Any, meta: list[Any]) -> tuple[str, Any, Any, str]:
    """(kind, model, inner, must) of a field's annotation."""
    if _is_model(annotation):
        return "table", annotation, None, ""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        item = _strip(args[0])[0]
        if _is_model(item):
            return "many", item, None, ""
        return "list", None, args[0], _must(meta)
    if origin is dict:
        return "map", None, args[1], ""
    return "value", None, None, _must(meta)


def _spot(model: type[BaseModel], loc: tuple[Any, ...]) -> _Spot:
    here = _Spot(model=model)
    for step in loc:
        parent = here
        if here.kind in ("table", "item") and isinstance(step, str):
            field = here.model.model_fields.get(step)
            dotted = f"{here.dotted}.{step}" if here.dotted else step
            label = f"{here.header} {step}" if here.header else step
            if field is None:
                return _Spot(label, "unknown", dotted, here.header, parent=parent)
            annotation, meta = _strip(field.annotation)
            kind, sub, inner, must = _kind_of(annotation, list(field.metadata) + meta)
            here = _Spot(label, kind, dotted, here.header, sub, inner, must, parent)
        elif here.kind == "many" and isinstance(step, int):
            header = f"[[{here.dotted}]] #{step + 1}"
            here = _Spot(header, "item", here.dotted, header, here.model, parent=parent)
        elif here.kind == "map" and isinstance(step, str):
            annotation, meta = _strip(here.inner)
            # a map inside a [[x]] entry is named by the entry: "[[storage]] #2 options"
            header = here.label if (here.header or "").startswith("[[") else f"[{here.dotted}]"
            here = _Spot(f"{header} {step}", "value", f"{here.dotted}.{step}", header,
                         must=_must(meta), parent=parent)
        elif here.kind == "list" and isinstance(step, int):
            annotation, meta = _strip(here.inner)
            here = _Spot(f"{here.label}[{step}]", "value", here.dotted, here.header,
                         must=_must(meta), parent=parent)
        else:                           # a loc step the models do not explain: say where we are
            break
        if here.kind == "table":
            here.header = f"[{here.dotted}]"
    return here


def _header(name: str, field_annotation: Any) -> str:
    kind = _kind_of(*_strip(field_annotation))[0]
    return {"table": f"[{name}]", "many": f"[[{name}]]"}.get(kind, f"'{name}'")


def _unknown(spot: _Spot, key: str, value: Any) -> str:
    fields = spot.parent.model.model_fields if spot.parent and spot.parent.model else {}
    close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
    where = spot.header
    if not where:   # top level: say it as the operator wrote it
        if isinstance(value, dict):
            text = f"unknown table [{key}]"
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            text = f"unknown table [[{key}]]"
        else:
            text = f"unknown key '{key}'"
        hint = close and _header(close[0], fields[close[0]].annotation)
        known = ", ".join(_header(k, f.annotation) for k, f in fields.items())
    else:
        text = f"{where} unknown key '{key}'"
        hint = close and f"'{close[0]}'"
        known = ", ".join(fields)
    return f"{text} (did you mean {hint}?)" if hint else f"{text} (known: {known})"


def _message(model: type[BaseModel], error: Any) -> str:
    """One pydantic error as the operator reads it: the key path as written in the file."""
    loc, kind = tuple(error["loc"]), error["type"]
    spot = _spot(model, loc)
    if kind == "erasure_config":
        text = error["ctx"]["text"]
        if not spot.label:
            return text
        return spot.label + (text if text.startswith(":") else " " + text)
    if kind == "extra_forbidden" or spot.kind == "unknown":
        return _unknown(spot, str(loc[-1]), error.get("input"))
    if kind == "missing":
        where = spot.header or "the file"
        what = spot.must or ("a table" if spot.kind in ("table", "many") else "a value")
        return f"{where} needs '{loc[-1]}' ({what})"
    if spot.kind == "item":                      # [[x]] entry that is not a table
        spot = spot.parent or spot
    if spot.kind == "many":
        return f"{spot.label} must be an array of tables ([[{spot.dotted}]] entries)"
    if spot.kind in ("table", "map"):
        return f"{spot.label} must be a table ([{spot.dotted}])"
    return f"{spot.label} must be {spot.must or 'valid: ' + error['msg']}"


def _position(raw: Any, loc: tuple[Any, ...]) -> tuple[float, ...]:
    """Where a loc is in the file, to report the first problem first (as the file reads)."""
    out: list[float] = []
    node = raw
    for step in loc:
        if isinstance(node, dict) and step in node:
            out.append(list(node).index(step))
            node = node[step]
        elif isinstance(node, list) and isinstance(step, int) and step < len(node):
            out.append(step)
            node = node[step]
        else:
            out.append(float("inf"))
            break
    return tuple(out) + (float("inf"),) if not loc else tuple(out)


def check(raw: dict, base: Path | None = None) -> BaseModel:
    """Validate the parsed file against the models; raise ConfigError naming the first
    offending key path (in the file's order)."""
    model = file_model()
    try:
        return model.model_validate(raw, context={"base_dir": base})
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: _position(raw, tuple(e["loc"])))
        raise ConfigError(_message(model, errors[0])) from None


# ---- loading ------------------------------------------------------------------------
def resolve_config_path(cli_value: str | None) -> Path:
    if cli_value:
        return Path(cli_value)
    env = os.environ.get("ERASURE_CONFIG")
    return Path(env) if env else Path(DEFAULT_CONFIG)


def dataset_name_for(namespace: str, name: str, base: Path) -> str:
    """Local file datasets are named by absolute path; relative names in the config resolve to it."""
    if namespace == "file" and not name.startswith("/"):
        return str((base / name).resolve())
    return name


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
    from connectors import config_sections

    from .identity import IdentityType

    f: Any = check(raw, base)
    roots = tuple(Root(r.namespace, dataset_name_for(r.namespace, r.name, base), r.column,
                       r.identity or r.column) for r in f.roots)
    overrides = tuple(DatasetOverride(d.namespace, dataset_name_for(d.namespace, d.name, base),
                                      d.column, d.exclude) for d in f.datasets)
    return Config(path=path.resolve(), base_dir=base,
                  ledger_path=resolve_path(base, f.ledger.path),
                  key_path=resolve_path(base, f.keys.path),
                  lineage_store=resolve_path(base, f.lineage.store),
                  event_globs=tuple(str(resolve_path(base, g)) for g in f.lineage.events),
                  lenient_events=f.lineage.lenient,
                  roots=roots, overrides=overrides,
                  signing_dir=resolve_path(base, f.signing.dir),
                  sections={key: getattr(f, key) for key in config_sections()},
                  identities={i.name: IdentityType(i.name, i.normalize, i.pattern)
                              for i in f.identities},
                  enrich=tuple(Enrichment(e.namespace,
                                          dataset_name_for(e.namespace, e.name, base),
                                          e.from_column, e.to_column,
                                          e.from_identity or e.from_column,
                                          e.to_identity or e.to_column, e.max_values)
                               for e in f.enrich),
                  storage=tuple(f.storage),
                  keys=f.keys,
                  policy=f.policy.model_copy(update={"rego": str(resolve_path(base, f.policy.rego))})
                  if f.policy.rego else f.policy,
                  approvals_required=f.approvals.required,
                  service=f.service,
                  ledger_url=f.ledger.url)
