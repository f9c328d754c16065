"""Subject keys, sealed subject ids and the report signer in Vault / OpenBao
(`[keys] provider = "vault"`; docs/vault.md).

What Vault holds, by `[keys]` name (all in the Transit engine at `mount`, except the KV secret):

- `hmac_key`: subject HMACs (`hmac = "transit"`): Transit's `hmac` endpoint, sha2-256, pinned
  to key version 1 so a rotation cannot silently change every HMAC and the ledger's chain
  key. The ledger's chain key is the Transit HMAC of its label (`_derive`), kept in memory.
  Or, with `hmac = "kv"`, the 32-byte subject master key in KV v2 at `kv_mount`/`kv_path`
  (field "key", hex), read into memory; everything is then computed as `SubjectKeys` does.
- `{seal_prefix}-YYYY-MM-DD`: one Transit key per UTC day, wrapping the data keys that seal
  that day's subject ids (envelope encryption: AES-GCM here, the data key wrapped by Transit).
  Destroying a day key (`erasure shred`) makes every id sealed that day unreadable.
- `root_key`, `signer_key`: ECDSA P-256 keys that sign the report certificates and the
  reports (erasure/report/keys.py); only public certificates are written to disk.

Credentials come from the environment only: VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID
(an AppRole login at `approle_mount`); VAULT_CACERT names a CA bundle for https. A failure
talking to Vault is a ConfigError (exit 3) naming the address, never the token, never an id.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import re
import secrets
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .errors import ConfigError, ErasureError, ErasureFailed
from .subject import SubjectKeys

HMAC_ALGORITHM = "sha2-256"
HMAC_KEY_VERSION = 1                 # pinned: a rotated key must not change existing HMACs
SEAL_MAGIC = b"EVS1"                 # a Vault-sealed subject: version marker of the blob
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_BATCH = 500                         # inputs per Transit batch request
SHRED_FINISHED = ("completed", "not_found", "rejected")
SHREDDED_KIND = "subjects.shredded"


SUBJECT_DOMAIN = b"erasure/vault-subject-hmac/v1\x00"
DERIVE_DOMAIN = b"erasure/vault-derived-key/v1\x00"


class ShreddedError(ErasureFailed):
    """A sealed subject id whose Transit day key was destroyed (`erasure shred`): it can
    never be opened again (an ErasureError; exit 5)."""


def utc_today() -> dt.date:
    """Today in UTC: the day whose key seals what is sealed now (tests replace it)."""
    return dt.datetime.now(dt.timezone.utc).date()


# ---- talking to Vault -----------------------------------------------------------------------
class Vault:
    """One authenticated hvac client and the `[keys]` section; every call goes through
    `call`, which turns Vault's and the network's errors into a ConfigError."""

    def __init__(self, section: Any):
        self.section = section
        self.url: str = section.url
        self.mount: str = section.mount
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = _login(self.section)
        return self._client

    @property
    def transit(self) -> Any:
        return self.client.secrets.transit

    def call(self, what: str, fn: Callable[..., Any], *args: Any,
             hide: Iterable[str] = (), **kwargs: Any) -> Any:
        """`fn(*args, **kwargs)`; an error becomes ConfigError "Vault at URL: WHAT: why".
        `hide`: values (subject ids) redacted from Vault's text, should it ever quote one."""
        try:
            return fn(*args, **kwargs)
        except ErasureError:
            raise
        except Exception as exc:
            raise vault_error(self.url, what, exc, hide) from None

    def post(self, what: str, path: str, body: dict, hide: Iterable[str] = ()) -> Any:
        return self.call(what, self.client.adapter.post, f"/v1/{self.mount}/{path}",
                         json=body, hide=hide)


def vault_error(url: str, what: str, exc: BaseException, hide: Iterable[str] = ()) -> ConfigError:
    """The message for a failed Vault call: where, what, and why, in words."""
    import hvac.exceptions as hx  # type: ignore[import-untyped]
    import requests

    from .subject import redact

    if isinstance(exc, requests.exceptions.RequestException):
        why = f"unreachable ({type(exc).__name__}); is the address right and the server up?"
    elif isinstance(exc, hx.Forbidden):
        why = "permission denied: the token or AppRole lacks a policy for this path"
    elif isinstance(exc, hx.Unauthorized):
        why = "not authorized: the token or AppRole credentials are invalid or expired"
    elif isinstance(exc, hx.VaultDown):
        why = "Vault is sealed or down"
    elif isinstance(exc, hx.InvalidPath):
        why = "no such path (is the secrets engine enabled at this mount, does the key exist?)"
    elif isinstance(exc, hx.VaultError):
        errors = getattr(exc, "errors", None) or [str(exc)]
        why = "; ".join(str(e) for e in errors)
    else:
        why = f"{type(exc).__name__}: {exc}"
    values = [v for v in hide if v]
    values += [base64.b64encode(v.encode()).decode() for v in values]
    return ConfigError(f"Vault at {url}: {what} failed: {redact(why, values)[:300]}")


_CLIENTS: dict[tuple, Any] = {}


def _login(section: Any) -> Any:
    """An hvac client for `section.url`, authenticated from the environment: VAULT_TOKEN, or
    an AppRole login with VAULT_ROLE_ID and VAULT_SECRET_ID. One login per process and
    credentials."""
    import hvac

    token = os.environ.get("VAULT_TOKEN", "").strip()
    role, secret = (os.environ.get("VAULT_ROLE_ID", "").strip(),
                    os.environ.get("VAULT_SECRET_ID", "").strip())
    if not token and not (role and secret):
        raise ConfigError(f'[keys] provider = "vault" (Vault at {section.url}) needs credentials '
                          "in the environment: VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID "
                          "(AppRole)")
    ident = hashlib.sha256("\0".join((section.url, section.approle_mount, token, role, secret))
                           .encode()).hexdigest()
    cache_key = (os.getpid(), ident)
    client = _CLIENTS.get(cache_key)
    if client is not None:
        return client
    verify: Any = os.environ.get("VAULT_CACERT") or True
    client = hvac.Client(url=section.url, verify=verify, timeout=15)
    vault = Vault(section)
    if token:
        client.token = token
    else:
        vault.call(f"AppRole login at auth/{section.approle_mount}", client.auth.approle.login,
                   role_id=role, secret_id=secret, mount_point=section.approle_mount)
    _CLIENTS[cache_key] = client
    return client


def vault_for(section: Any) -> Vault:
    return Vault(section)


# ---- the sealed-subject blob ----------------------------------------------------------------
def seal_key_name(prefix: str, day: dt.date | str) -> str:
    return f"{prefix}-{day if isinstance(day, str) else day.isoformat()}"


def blob_day(blob: bytes) -> str | None:
    """The UTC day (YYYY-MM-DD) a Vault-sealed blob was sealed on; None for another blob
    (one sealed with `provider = "file"`)."""
    if len(blob) < 16 or blob[:4] != SEAL_MAGIC:
        return None
    day = blob[4:14].decode("ascii", "replace")
    return day if _DAY.fullmatch(day) else None


def _pack(day: str, wrapped: str, sealed: bytes) -> bytes:
    w = wrapped.encode("ascii")
    return SEAL_MAGIC + day.encode("ascii") + struct.pack(">H", len(w)) + w + sealed


def _unpack(blob: bytes, name: str) -> tuple[str, str, bytes]:
    day = blob_day(blob)
    if day is None:
        raise ConfigError(f"the sealed subject of {name} was not sealed with Vault (it was "
                          'sealed with [keys] provider = "file"?)')
    (n,) = struct.unpack(">H", blob[14:16])
    return day, blob[16:16 + n].decode("ascii"), blob[16 + n:]


# ---- the keys -------------------------------------------------------------------------------
@dataclass(frozen=True)
class VaultKeys(SubjectKeys):
    """What the engine uses from `SubjectKeys` (subject_hmac, subject_hmacs, seal, unseal,
    _derive), with the keys in Vault. `master` is the KV subject key with `hmac = "kv"`
    (then HMACs and derived keys are SubjectKeys' own), empty with `hmac = "transit"`."""

    vault: Any = field(default=None, compare=False)
    # in memory only: HMACs already asked for, data keys by day, unwrapped data keys
    _hmacs: dict = field(default_factory=dict, init=False, compare=False)
    _seal_keys: dict = field(default_factory=dict, init=False, compare=False)
    _opened: dict = field(default_factory=dict, init=False, compare=False)

    def __repr__(self) -> str:
        return f"VaultKeys(url={self.vault.url!r}, hmac={self.vault.section.hmac!r})"

    @classmethod
    def open(cls, section: Any, create: bool = True) -> "VaultKeys":
        """Log in and check the subject key exists; create it when `create` (a new ledger):
        the Transit HMAC key, or the KV secret (32 random bytes, written only if absent)."""
        vault = vault_for(section)
        if section.hmac == "kv":
            return cls(_kv_master(vault, create), vault)
        keys = cls(b"", vault)
        keys._ensure_hmac_key(create)
        return keys

    @property
    def transit_hmac(self) -> bool:
        return self.vault.section.hmac == "transit"

    def _ensure_hmac_key(self, create: bool) -> None:
        import hvac.exceptions as hx

        s, t = self.vault.section, self.vault.transit
        try:
            t.read_key(s.hmac_key, mount_point=s.mount)
            return
        except hx.InvalidPath:
            pass
        except Exception as exc:
            raise vault_error(self.vault.url, f"reading Transit key {s.hmac_key}", exc) from None
        if not create:
            raise ConfigError(f"Vault at {self.vault.url}: the Transit key {s.hmac_key} (subject "
                              "HMACs) does not exist, but the ledger holds entries: a new key "
                              "could neither match their HMACs nor verify the chain")
        self.vault.call(f"creating Transit key {s.hmac_key}", t.create_key, s.hmac_key,
                        mount_point=s.mount)

    # -- HMACs: one Transit key, two domains. A subject's HMAC and a derived key (the ledger's
    # chain key, the idempotency MAC key) are HMACs of inputs that can never be equal: a
    # subject id that spells a label ("erasure/ledger-chain/v1") must not give the chain key
    # in its plan, status or API response.
    def subject_hmac(self, subject_id: str) -> str:
        if not self.transit_hmac:
            return super().subject_hmac(subject_id)
        return self.subject_hmacs([subject_id])[0]

    def subject_hmacs(self, texts: list[str]) -> list[str]:
        if not self.transit_hmac:
            return super().subject_hmacs(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._hmacs))
        for i in range(0, len(missing), _BATCH):
            part = missing[i:i + _BATCH]
            for text, mac in zip(part, self._transit_hmacs(
                    [SUBJECT_DOMAIN + t.encode("utf-8") for t in part], hide=part)):
                self._hmacs[text] = mac.hex()
        return [self._hmacs[t] for t in texts]

    def _transit_hmacs(self, inputs: list[bytes], hide: Iterable[str] = ()) -> list[bytes]:
        s = self.vault.section
        res = self.vault.post(
            f"HMAC with Transit key {s.hmac_key}", f"hmac/{s.hmac_key}/{HMAC_ALGORITHM}",
            {"key_version": HMAC_KEY_VERSION,
             "batch_input": [{"input": base64.b64encode(b).decode()} for b in inputs]}, hide)
        results = (res or {}).get("data", {}).get("batch_results") or []
        if len(results) != len(inputs):
            raise ConfigError(f"Vault at {self.vault.url}: HMAC with Transit key {s.hmac_key} "
                              f"returned {len(results)} results for {len(inputs)} inputs")
        out = []
        for r in results:
            if r.get("error") or not r.get("hmac"):
                raise ConfigError(f"Vault at {self.vault.url}: HMAC with Transit key "
                                  f"{s.hmac_key} failed: {str(r.get('error'))[:200]}")
            out.append(_unprefix(r["hmac"]))
        return out

    def _derive(self, label: bytes) -> bytes:
        if not self.transit_hmac:
            return super()._derive(label)
        key = self._derived.get(label)
        if key is None:
            key = self._derived[label] = self._transit_hmacs([DERIVE_DOMAIN + label])[0]
        return key

    # -- sealing: envelope encryption under the day's Transit key
    def seal(self, subject_id: str, request_id: str) -> bytes:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        day = utc_today().isoformat()
        got = self._seal_keys.get(day)
        if got is None:
            got = self._seal_keys[day] = self._new_data_key(day)
        plain, wrapped = got
        nonce = secrets.token_bytes(12)
        return _pack(day, wrapped, nonce + AESGCM(plain).encrypt(
            nonce, subject_id.encode("utf-8"), request_id.encode()))

    def _new_data_key(self, day: str) -> tuple[bytes, str]:
        """A data key for today (plaintext, wrapped), the day's Transit key created first
        when it does not exist (not exportable; deletion allowed, so `shred` can destroy it)."""
        import hvac.exceptions as hx

        s, t = self.vault.section, self.vault.transit
        name = seal_key_name(s.seal_prefix, day)
        try:
            res = t.generate_data_key(name, key_type="plaintext", mount_point=s.mount)
        except (hx.InvalidRequest, hx.InvalidPath):
            self.vault.call(f"creating Transit key {name}", t.create_key, name,
                            exportable=False, mount_point=s.mount)
            self.vault.call(f"configuring Transit key {name}", t.update_key_configuration,
                            name, deletion_allowed=True, mount_point=s.mount)
            res = self.vault.call(f"a data key from Transit key {name}", t.generate_data_key,
                                  name, key_type="plaintext", mount_point=s.mount)
        except Exception as exc:
            raise vault_error(self.vault.url, f"a data key from Transit key {name}", exc) from None
        data = res["data"]
        return base64.b64decode(data["plaintext"]), data["ciphertext"]

    def unseal(self, blob: bytes, request_id: str) -> str:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        day, wrapped, sealed = _unpack(blob, request_id)
        plain = self._opened.get((day, wrapped))
        if plain is None:
            plain = self._opened[(day, wrapped)] = self._unwrap(day, wrapped, request_id)
        try:
            return AESGCM(plain).decrypt(sealed[:12], sealed[12:],
                                         request_id.encode()).decode("utf-8")
        except InvalidTag as exc:
            raise ConfigError(f"cannot decrypt the subject of {request_id}: the sealed blob "
                              "does not match its data key (altered, or stored under another "
                              "name)") from exc

    def _unwrap(self, day: str, wrapped: str, name: str) -> bytes:
        import hvac.exceptions as hx

        s = self.vault.section
        key = seal_key_name(s.seal_prefix, day)
        try:
            res = self.vault.transit.decrypt_data(key, ciphertext=wrapped, mount_point=s.mount)
        except (hx.InvalidRequest, hx.InvalidPath) as exc:
            text = " ".join(str(e) for e in (getattr(exc, "errors", None) or [exc]))
            if isinstance(exc, hx.InvalidPath) or "not found" in text:
                raise ShreddedError(
                    f"the subject of {name} was crypto-shredded: its Transit key {key} "
                    f"(Vault at {self.vault.url}) no longer exists, so the sealed id can never "
                    "be opened again") from None
            raise vault_error(self.vault.url, f"unwrapping a data key with {key}", exc) from None
        except Exception as exc:
            raise vault_error(self.vault.url, f"unwrapping a data key with {key}", exc) from None
        return base64.b64decode(res["data"]["plaintext"])

    # -- day keys, for `erasure shred`
    def day_keys(self) -> dict[str, str]:
        """{day: Transit key name} of every `{seal_prefix}-YYYY-MM-DD` key in the mount."""
        import hvac.exceptions as hx

        s = self.vault.section
        try:
            names = self.vault.transit.list_keys(mount_point=s.mount)["data"]["keys"]
        except hx.InvalidPath:        # no key at all
            return {}
        except Exception as exc:
            raise vault_error(self.vault.url, "listing Transit keys", exc) from None
        pattern = re.compile(re.escape(s.seal_prefix) + r"-(\d{4}-\d{2}-\d{2})")
        out = {}
        for n in names:
            m = pattern.fullmatch(n)
            if m:
                out[m.group(1)] = n
        return out

    def destroy_day_key(self, name: str) -> None:
        s, t = self.vault.section, self.vault.transit
        self.vault.call(f"allowing deletion of Transit key {name}", t.update_key_configuration,
                        name, deletion_allowed=True, mount_point=s.mount)
        self.vault.call(f"deleting Transit key {name}", t.delete_key, name, mount_point=s.mount)


def _unprefix(value: str) -> bytes:
    """Transit's "vault:v1:<base64>" as bytes."""
    parts = value.split(":", 2)
    return base64.b64decode(parts[2] if len(parts) == 3 and parts[0] == "vault" else value)


def _kv_master(vault: Vault, create: bool) -> bytes:
    """The 32-byte subject key from KV v2 (field "key", hex); written (only if absent: cas=0)
    when `create` and there is none."""
    import hvac.exceptions as hx

    s = vault.section
    kv = vault.client.secrets.kv.v2
    where = f"KV secret {s.kv_mount}/{s.kv_path}"
    try:
        res = kv.read_secret_version(path=s.kv_path, mount_point=s.kv_mount,
                                     raise_on_deleted_version=True)
        text = str((res["data"]["data"] or {}).get("key", ""))
    except hx.InvalidPath:
        if not create:
            raise ConfigError(f"Vault at {vault.url}: the subject key ({where}) does not exist, "
                              "but the ledger holds entries: a new key could neither open their "
                              "sealed ids, match their HMACs nor verify the chain") from None
        master = secrets.token_bytes(32)
        vault.call(f"writing {where}", kv.create_or_update_secret, path=s.kv_path,
                   secret={"key": master.hex()}, cas=0, mount_point=s.kv_mount)
        return master
    except Exception as exc:
        raise vault_error(vault.url, f"reading {where}", exc) from None
    try:
        master = bytes.fromhex(text.strip())
    except ValueError:
        master = b""
    if len(master) != 32:
        raise ConfigError(f"Vault at {vault.url}: {where} field 'key' is not 64 hex characters "
                          "(a 32-byte key)")
    return master


# ---- signing with Transit (erasure/report/keys.py and sign.py use it) ------------------------
_TRANSIT_HASH = {"sha256": "sha2-256", "sha384": "sha2-384", "sha512": "sha2-512"}


class TransitSigning:
    """ECDSA signatures made by Transit keys (`signer_key`, `root_key`): DER-encoded, as
    `cryptography`'s `sign(data, ECDSA(SHA256()))` gives them; the data is hashed here and
    Transit signs the digest (prehashed)."""

    def __init__(self, section: Any):
        self.section = section
        self.vault = vault_for(section)
        self._versions: dict[tuple[str, bytes], int] = {}

    def ensure_key(self, name: str) -> str:
        """Create the ecdsa-p256 key `name` when missing; its latest public key (PEM)."""
        t, s = self.vault.transit, self.section
        res = self.vault.call(f"creating Transit key {name}", t.create_key, name,
                              key_type="ecdsa-p256", exportable=False, mount_point=s.mount)
        data = res.get("data") if isinstance(res, dict) else None
        if not data or "keys" not in data:      # Vault answers 204 for a key that exists
            data = self.vault.call(f"reading Transit key {name}", t.read_key, name,
                                   mount_point=s.mount)["data"]
        if data.get("type") != "ecdsa-p256":
            raise ConfigError(f"Vault at {self.vault.url}: Transit key {name} is of type "
                              f"{data.get('type')}, not ecdsa-p256")
        return data["keys"][str(data["latest_version"])]["public_key"]

    def key_version(self, name: str, public_der: bytes) -> int:
        """The version of Transit key `name` whose public key is `public_der` (a certificate's
        SubjectPublicKeyInfo): a rotated key must not sign under a certificate it is not."""
        from cryptography.hazmat.primitives import serialization

        cached = self._versions.get((name, public_der))
        if cached is not None:
            return cached
        data = self.vault.call(f"reading Transit key {name}", self.vault.transit.read_key, name,
                               mount_point=self.section.mount)["data"]
        for version, info in (data.get("keys") or {}).items():
            pem = info.get("public_key") if isinstance(info, dict) else None
            if pem and serialization.load_pem_public_key(pem.encode()).public_bytes(
                    serialization.Encoding.DER,
                    serialization.PublicFormat.SubjectPublicKeyInfo) == public_der:
                self._versions[(name, public_der)] = int(version)
                return int(version)
        raise ConfigError(f"Vault at {self.vault.url}: no version of Transit key {name} matches "
                          "the certificate's public key; run `erasure keys init --force`")

    def sign(self, name: str, data: bytes, digest_algorithm: str = "sha256",
             version: int | None = None) -> bytes:
        algo = digest_algorithm.lower()
        if algo not in _TRANSIT_HASH:
            raise ConfigError(f"Transit signing supports {', '.join(_TRANSIT_HASH)}, not {algo}")
        digest = hashlib.new(algo, data).digest()
        res = self.vault.call(
            f"signing with Transit key {name}", self.vault.transit.sign_data, name,
            hash_input=base64.b64encode(digest).decode(), key_version=version,
            hash_algorithm=_TRANSIT_HASH[algo], prehashed=True, marshaling_algorithm="asn1",
            mount_point=self.section.mount)
        return _unprefix(res["data"]["signature"])


# ---- crypto-shredding -----------------------------------------------------------------------
def shredded_request_ids(ledger: Any) -> set[str]:
    """Every request whose sealed subject id (or plan subject) was crypto-shredded: their
    ids can no longer be opened, so nothing can be checked for them by id."""
    out: set[str] = set()
    for e in ledger.entries_of_kind(SHREDDED_KIND):
        out.update(e.body.get("requests") or [])
    return out


def shred(ledger: Any, keys: VaultKeys, older_than: int, today: dt.date | None = None,
          dry_run: bool = False) -> dict:
    """Destroy the day keys whose day ended at least `older_than` days ago (day <= today -
    older_than - 1: `0` is every day before today; today's key, still sealing, never) and
    whose sealed ids all belong to finished requests (completed, not_found or rejected);
    forget those sealed rows; record one `subjects.shredded` entry. Days blocked by a request
    that is not finished are skipped, with the reason. Holds the ledger's run lock, and does
    its reading, destroying and recording inside one ledger transaction, so no submit or run
    seals or reads under a day key while it goes. `dry_run`: the same choice of days,
    said and not done (no key destroyed, no row forgotten, nothing recorded)."""
    from .requests import load_states

    if older_than < 0:
        raise ConfigError("--older-than must be 0 or more days")
    today = today or utc_today()
    last = (today - dt.timedelta(days=older_than + 1)).isoformat()
    shredded: list[str] = []
    skipped: list[dict[str, str]] = []
    requests: set[str] = set()
    with ledger.exclusive(), ledger.transaction():
        by_day: dict[str, list[str]] = {}
        for name, blob in ledger.db.execute("SELECT request_id, sealed FROM sealed_subjects"):
            day = blob_day(bytes(blob))
            if day is not None:
                by_day.setdefault(day, []).append(name)
        forget: list[str] = []
        for day, key in sorted(keys.day_keys().items()):
            if day > last:
                continue
            names = sorted(by_day.get(day, []))
            rids = sorted({n.split("#", 1)[0] for n in names})
            states = load_states(ledger, rids) if rids else {}
            blocking = [r for r in rids if states[r].status not in SHRED_FINISHED]
            if blocking:
                shown = ", ".join(f"{r} ({states[r].status})" for r in blocking[:5])
                more = f" and {len(blocking) - 5} more" if len(blocking) > 5 else ""
                skipped.append({"key": key, "reason": f"{len(blocking)} request(s) sealed that "
                                f"day are not finished: {shown}{more}"})
                continue
            if not dry_run:
                try:
                    keys.destroy_day_key(key)
                except ConfigError as exc:
                    skipped.append({"key": key, "reason": str(exc)})
                    continue
            shredded.append(key)
            forget.extend(names)
            requests.update(rids)
        if forget and not dry_run:
            ledger.forget_sealed(forget)
        if (shredded or skipped) and not dry_run:
            ledger.append(None, SHREDDED_KIND, {
                "keys": shredded, "requests": sorted(requests), "older_than_days": older_than,
                "skipped": skipped})
    return {"shredded": shredded, "requests": len(requests), "skipped": skipped,
            "older_than_days": older_than, "last_day": last, "dry_run": dry_run}
