"""Issue 5: the signed proof-of-erasure PDF.

One sample lake (with MLflow, without Feast) is built for the whole module: subject 42 is
erased and reported (report A), then subject 7 (report B). Every tampering test works on a
copy of a report or of the lake, so the shared lake stays as the fixture left it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Lake

SUBJECT = "42"
OTHER_SUBJECT = "7"
EMAIL = f"user{SUBJECT}@example.com"
ALL_CHECKS = ["pdf-structure", "signature-present", "signature-intact", "signature-valid",
              "signer-trusted", "covers-whole-file", "evidence-embedded",
              "evidence-matches-ledger"]
SIGNING_ENV = ("ERASURE_SIGNING_KEY", "ERASURE_SIGNING_CERT", "ERASURE_SIGNING_ROOT",
               "ERASURE_SUBJECT_KEY", "ERASURE_CONFIG")
# "subject 42", "user_id=42", "id: 42", "customer #42", "user42", "(42)" as a key value, ...
ID_MENTION = re.compile(
    r"(?i)(?:subject|user|customer|person|reviewer|entity|identifier|\bid)"
    r"[\s_]*(?:id)?[\s:=#'\"(\[-]*" + SUBJECT + r"(?![\d])")
POPPLER = ("pdfsig", "pdftotext", "pdftoppm", "pdfdetach", "pdfinfo")


def _phone(users: int, subject: str = SUBJECT) -> str:
    # sample_lake.generate: "+44 7700 9" + the id left-padded with zeros to max(5, digits)
    return "+44 7700 9" + subject.rjust(max(5, len(str(users))), "0")


def _cli_json(lake: Lake, *args: str) -> tuple[int, dict]:
    """The CLI in-process with --json, without capsys (usable in a module fixture)."""
    from erasure.cli import run_cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run_cli(["--config", str(lake.config), *args, "--json"])
    text = out.getvalue()
    assert text.strip(), f"{args}: exit {code}, no JSON output; stderr: {err.getvalue()}"
    return code, json.loads(text)


def _tool(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=60, check=False)
    if check:
        assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def proof(tmp_path_factory):
    """Lake with subject 42 erased and reported (A), then subject 7 erased and reported (B)."""
    missing = [t for t in POPPLER if shutil.which(t) is None]
    assert not missing, f"poppler-utils tools missing: {missing}"
    from sample_lake.generate import generate

    with pytest.MonkeyPatch.context() as mp:
        for name in SIGNING_ENV:
            mp.delenv(name, raising=False)
        base = tmp_path_factory.mktemp("proof")
        info = generate(base / "lake", rows=2000, seed=11, feast=False, mlflow=True)
        lake = Lake(Path(info["out_dir"]), Path(info["config"]), info["tables"],
                    Path(info["events"]))
        code, keys = _cli_json(lake, "keys", "init")
        assert code == 0, keys

        def erase_and_report(subject: str, name: str) -> tuple[str, dict, dict, Path]:
            code, sub = _cli_json(lake, "request", "submit", "--subject-id", subject,
                                  "--requested-by", "dpo@example.com")
            assert code == 0, sub
            rid = sub["request_id"]
            code, res = _cli_json(lake, "run", rid)
            assert code == 0 and res["status"] == "completed", res
            pdf = base / name
            code, rep = _cli_json(lake, "report", rid, "--output", str(pdf))
            assert code == 0 and pdf.is_file(), rep
            return rid, res, rep, pdf

        code, plan = _cli_json(lake, "plan", "--subject-id", SUBJECT)
        assert code == 0, plan
        rid_a, run_a, rep_a, pdf_a = erase_and_report(SUBJECT, "proof.pdf")
        rid_b, _, rep_b, pdf_b = erase_and_report(OTHER_SUBJECT, "proof-b.pdf")
        yield {"lake": lake, "base": base, "users": info["users"], "keys": keys,
               "plan": plan, "rid_a": rid_a, "run_a": run_a, "rep_a": rep_a, "pdf_a": pdf_a,
               "rid_b": rid_b, "rep_b": rep_b, "pdf_b": pdf_b}


def _verify(lake: Lake, pdf: Path, capsys, *extra: str) -> tuple[int, dict]:
    code, out = lake.cli("verify-report", str(pdf), *extra, "--json", capsys=capsys)
    assert out.strip(), f"verify-report printed nothing (exit {code}): {lake.last_err}"
    return code, json.loads(out)


def _checks(result: dict) -> dict[str, bool]:
    return {c["name"]: c["ok"] for c in result["checks"]}


def _failed(result: dict) -> set[str]:
    return {c["name"] for c in result["checks"] if not c["ok"]}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    return dst


def _copy_lake(lake: Lake, dst: Path) -> Lake:
    shutil.copytree(lake.root, dst)
    return Lake(dst, dst / lake.config.name, {}, dst / lake.events.relative_to(lake.root))


def _ledger_db(lake: Lake) -> Path:
    return lake.root / ".erasure" / "ledger.db"


def _byte_ranges(data: bytes) -> list[int]:
    m = re.search(rb"/ByteRange\s*\[\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*\]", data)
    assert m, "no /ByteRange in the signed PDF"
    return [int(x) for x in m.groups()]


def _pdf_decoded(path: Path) -> str:
    """Every object of every revision, streams decoded, as one text (for needle searches)."""
    from pyhanko.pdf_utils import generic
    from pyhanko.pdf_utils.reader import PdfFileReader

    parts = []
    with open(path, "rb") as f:
        r = PdfFileReader(f, strict=False)
        for rev in range(r.xrefs.total_revisions):
            for ref in r.xrefs.explicit_refs_in_revision(rev):
                obj = r.get_object(ref)
                if isinstance(obj, generic.StreamObject):
                    parts.append(obj.data.decode("latin-1"))
                    obj = {k: v for k, v in obj.items()}
                parts.append(repr(obj))
        parts.append(repr(r.trailer))
    return "\n".join(parts)


def _evidence_of(pdf: Path, out_dir: Path) -> tuple[dict, bytes]:
    out_dir.mkdir(parents=True, exist_ok=True)
    listing = _tool("pdfdetach", "-list", str(pdf)).stdout
    assert "evidence.json" in listing and listing.startswith("1 embedded files"), listing
    _tool("pdfdetach", "-saveall", "-o", str(out_dir), str(pdf))
    raw = (out_dir / "evidence.json").read_bytes()
    return json.loads(raw), raw


def _walk(obj, key=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from _walk(v, key)
    else:
        yield key, obj


# ---- 1. a valid, whole-file signature ----------------------------------------------
def test_report_signature_is_valid_and_covers_the_whole_file(proof, capsys):
    lake, pdf = proof["lake"], proof["pdf_a"]
    sig = _tool("pdfsig", str(pdf)).stdout
    assert "Signature #1:" in sig and "Signature #2" not in sig, sig
    assert "Signature is Valid." in sig, sig
    assert "Total document signed" in sig and "Not total document signed" not in sig, sig
    assert "Signature Field Name: ProofOfErasure" in sig, sig
    br = _byte_ranges(pdf.read_bytes())
    assert br[0] == 0 and br[2] + br[3] == pdf.stat().st_size, br

    code, res = _verify(lake, pdf, capsys)
    assert code == 0, res
    assert res["ok"] is True and res["request_id"] == proof["rid_a"]
    assert [c["name"] for c in res["checks"]] == ALL_CHECKS, res
    assert all(c["ok"] for c in res["checks"]), res
    # the ledger kept growing after report A (request B ran); A is checked at its checkpoint
    assert proof["rep_b"]["ledger_checkpoint"]["entries"] > proof["rep_a"]["ledger_checkpoint"]["entries"]
    code, res_b = _verify(lake, proof["pdf_b"], capsys)
    assert code == 0 and res_b["request_id"] == proof["rid_b"], res_b
    # the root fingerprint printed by keys init is the one the signer chains to
    detail = {c["name"]: c["detail"] for c in res["checks"]}["signer-trusted"]
    assert proof["keys"]["root_fingerprint_sha256"] in detail


def test_report_does_not_verify_against_another_root(proof, capsys, tmp_path):
    from erasure.report.keys import init_keys

    other = init_keys(tmp_path / "other-keys", organisation="Somebody else")
    code, res = _verify(proof["lake"], proof["pdf_a"], capsys, "--root", other["root.pem"])
    assert code == 5, res
    assert _failed(res) == {"signer-trusted"}, res


# ---- 2. content, metadata and evidence: no plaintext identifier ----------------------
def test_report_names_request_and_datasets_but_no_identifier(proof, tmp_path):
    lake, pdf, rid = proof["lake"], proof["pdf_a"], proof["rid_a"]
    phone = _phone(proof["users"])
    assert phone == "+44 7700 900042"          # the sample lake's format for 400 users
    # the needles are real: the lake's raw table held them before the erasure
    assert ID_MENTION.search("reviewer_id = 42") and ID_MENTION.search("user42")
    assert not ID_MENTION.search("user_features 420")

    text = _tool("pdftotext", str(pdf), "-").stdout
    assert rid in text
    assert "COMPLETED" in text
    tables = lake.root / "tables"
    expected = set()
    for t in proof["plan"]["targets"]:
        expected.add(Path(t["name"]).relative_to(tables).as_posix()
                     if t["connector"] in ("delta", "parquet") else t["name"])
    assert {"raw/reviews", "clean/reviews", "features/user_features",
            "exports/user_activity.parquet"} <= expected, expected
    missing = sorted(n for n in expected if n not in text)
    assert not missing, f"datasets missing from the report text: {missing}"

    assert EMAIL not in text and phone not in text
    assert "900042" not in text.replace(" ", "")
    assert not ID_MENTION.search(text), ID_MENTION.search(text)

    # document information dictionary and XMP metadata
    info = _tool("pdfinfo", str(pdf)).stdout
    assert f"Title:           Proof of erasure {rid}" in info, info
    meta = _tool("pdfinfo", "-meta", str(pdf)).stdout
    for blob in (info, meta):
        assert EMAIL not in blob and phone not in blob
        assert not ID_MENTION.search(blob), ID_MENTION.search(blob)
    from pyhanko.pdf_utils.reader import PdfFileReader
    with open(pdf, "rb") as f:
        doc_info = PdfFileReader(f, strict=False).trailer["/Info"]
        fields = {k: str(v) for k, v in doc_info.items() if k not in ("/CreationDate", "/ModDate")}
    assert fields["/Keywords"] == rid, fields
    for k, v in fields.items():   # nothing but the request id may carry the digits 42
        assert not re.search(r"(?<![\w.])" + SUBJECT + r"(?![\w.])", v.replace(rid, "")), (k, v)

    # every object of the file, streams decoded (page content, fonts, XMP, evidence, CMS)
    decoded = _pdf_decoded(pdf)
    assert rid in decoded and proof["plan"]["subject"]["hmac"] in decoded   # the decoder works
    assert EMAIL not in decoded and phone not in decoded

    # the embedded evidence: the subject only as its HMAC
    evidence, raw = _evidence_of(pdf, tmp_path / "detached")
    assert EMAIL.encode() not in raw and phone.encode() not in raw
    assert b"900042" not in raw
    assert evidence["request"]["request_id"] == rid
    assert set(evidence["subject"]) <= {"hmac", "scheme"}, evidence["subject"]
    from erasure.subject import SubjectKeys
    keys = SubjectKeys.load(lake.root / ".erasure" / "keys" / "subject.key", create=False)
    assert evidence["subject"]["hmac"] == keys.subject_hmac(SUBJECT) == proof["plan"]["subject"]["hmac"]
    idish = {"subject_id", "user_id", "reviewer_id", "entity_id", "email", "phone", "id",
             "identifier", "subject_ids", "value", "values"}
    leaks = [(k, v) for k, v in _walk(evidence) if k in idish]
    assert not leaks, leaks
    assert not [(k, v) for k, v in _walk(evidence)
                if isinstance(v, str) and (v == SUBJECT or ID_MENTION.search(v))]
    # the PDF's evidence is byte for byte the canonical evidence the verifier rebuilds
    from erasure.evidence import build_evidence, evidence_bytes
    from erasure.ledger import Ledger, chain_key
    ledger = Ledger(_ledger_db(lake), chain_key(keys))
    try:
        rebuilt = build_evidence(ledger, rid, evidence["ledger_checkpoint"]["entries"])
    finally:
        ledger.close()
    assert evidence_bytes(rebuilt) == raw


# ---- 3. tampering ---------------------------------------------------------------------
def _flip_in_first_range(src: Path, dst: Path) -> Path:
    """Copy `src`, flipping one bit in the middle of its first content stream: inside the
    first signed byte range [0, a), well away from the signature's /Contents hex."""
    data = bytearray(src.read_bytes())
    a, len_a, b, _ = _byte_ranges(bytes(data))
    assert a == 0 and a + len_a < b        # /Contents hex runs from a + len_a to b
    m = re.search(rb"stream\r?\n", bytes(data))
    assert m and m.end() < len_a
    end = bytes(data).index(b"endstream", m.end())
    pos = (m.end() + end) // 2
    assert 0 < pos < len_a - 100
    data[pos] ^= 0x01
    dst.write_bytes(bytes(data))
    assert dst.stat().st_size == src.stat().st_size
    return dst


def test_flipped_byte_inside_the_signed_range_breaks_the_signature(proof, capsys, tmp_path):
    pdf = _flip_in_first_range(proof["pdf_a"], tmp_path / "flipped.pdf")
    sig = _tool("pdfsig", str(pdf), check=False).stdout
    assert "Signature is Valid." not in sig, sig
    code, res = _verify(proof["lake"], pdf, capsys)
    assert code == 5, res
    assert res["ok"] is False
    assert _checks(res)["signature-intact"] is False, res
    assert "changed after signing" in next(c["detail"] for c in res["checks"]
                                           if c["name"] == "signature-intact")


def test_flipped_byte_does_not_blame_the_signer_certificate(proof, capsys, tmp_path):
    """The certificate chain is untouched by a changed content byte: signer-trusted must
    not report "does not chain to the pinned root" (an auditor would chase the wrong
    cause: a key rotation or a wrong root instead of a modified document)."""
    pdf = _flip_in_first_range(proof["pdf_a"], tmp_path / "flipped.pdf")
    code, res = _verify(proof["lake"], pdf, capsys)
    assert code == 5, res
    trusted = next(c for c in res["checks"] if c["name"] == "signer-trusted")
    assert trusted["ok"] or "does not chain to the pinned root" not in trusted["detail"], res


def test_edited_evidence_bytes_in_place_break_the_signature(proof, capsys, tmp_path):
    """Flip one byte inside the embedded evidence stream itself (same revision, no update)."""
    from pyhanko.pdf_utils.reader import PdfFileReader

    pdf = _copy(proof["pdf_a"], tmp_path / "edited.pdf")
    data = bytearray(pdf.read_bytes())
    with open(pdf, "rb") as f:
        r = PdfFileReader(f, strict=False)
        names = r.root["/Names"]["/EmbeddedFiles"]["/Names"]
        ref = names[1].get_object()["/EF"].raw_get("/F").reference
    # locate the stream by its object header "N G obj"
    m = re.search(rb"(?<!\d)%d %d obj" % (ref.idnum, ref.generation), bytes(data))
    assert m, ref
    s = re.compile(rb"stream\r?\n").search(bytes(data), m.end())
    pos = s.end() + 40
    a, len_a, b, len_b = _byte_ranges(bytes(data))
    assert pos < a + len_a or b <= pos < b + len_b, "outside the signed ranges"
    data[pos] ^= 0x01
    pdf.write_bytes(bytes(data))

    code, res = _verify(proof["lake"], pdf, capsys)
    assert code == 5, res
    assert _checks(res)["signature-intact"] is False, res


def _incremental(src: Path, dst: Path, edit) -> Path:
    from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter

    with open(src, "rb") as f:
        w = IncrementalPdfFileWriter(f)
        edit(w)
        with open(dst, "wb") as out:
            w.write(out)
    assert dst.read_bytes().startswith(src.read_bytes())   # a real incremental update
    return dst


def test_incremental_update_after_signing_is_detected(proof, capsys, tmp_path):
    from pyhanko.pdf_utils import generic

    def overlay(w):   # a red box over page one, in a new revision
        box = generic.StreamObject(stream_data=b"q 1 0 0 rg 50 600 300 120 re f Q")
        w.add_stream_to_page(0, w.add_object(box))

    pdf = _incremental(proof["pdf_a"], tmp_path / "overlay.pdf", overlay)
    sig = _tool("pdfsig", str(pdf), check=False).stdout
    assert "Not total document signed" in sig and "Signature is Valid." in sig, sig
    code, res = _verify(proof["lake"], pdf, capsys)
    assert code == 5, res
    assert _failed(res) == {"covers-whole-file"}, res

    def retitle(w):   # only the metadata changes
        info = w.trailer["/Info"]
        info["/Title"] = generic.TextStringObject("Proof of erasure (edited)")
        w.update_container(info)

    pdf = _incremental(proof["pdf_a"], tmp_path / "retitled.pdf", retitle)
    assert "(edited)" in _tool("pdfinfo", str(pdf)).stdout
    code, res = _verify(proof["lake"], pdf, capsys)
    assert code == 5, res
    assert "covers-whole-file" in _failed(res), res


def test_swapped_evidence_is_detected(proof, capsys, tmp_path):
    """Report A's signature, report B's evidence (new revision replacing the attachment)."""
    from pyhanko.pdf_utils import embed

    _, raw_b = _evidence_of(proof["pdf_b"], tmp_path / "b")

    def swap(w):
        spec = w.root["/Names"]["/EmbeddedFiles"]["/Names"][1].get_object()
        ef = embed.EmbeddedFileObject.from_file_data(w, data=raw_b, mime_type="application/json")
        ref = w.add_object(ef)
        spec["/EF"]["/F"] = ref
        spec["/EF"]["/UF"] = ref
        w.update_container(spec)

    pdf = _incremental(proof["pdf_a"], tmp_path / "swapped.pdf", swap)
    swapped, _ = _evidence_of(pdf, tmp_path / "swapped")
    assert swapped["request"]["request_id"] == proof["rid_b"]     # the swap took effect
    code, res = _verify(proof["lake"], pdf, capsys)
    assert code == 5, res
    assert "covers-whole-file" in _failed(res), res
    assert _checks(res)["signature-valid"] is True   # A's signature itself still holds


def _rewrite_ledger(db: Path, rid: str, rehash: bool, key: bytes | None = None) -> int:
    """Edit request `rid`'s first erase step body (rows_deleted + 1). With `rehash`, also
    recompute every hash after it under the chain `key` (an attacker holding the subject
    key) and re-anchor the head, so the forged chain is internally consistent."""
    from erasure.ledger import ANCHOR_FORMAT, GENESIS, anchor_mac, canonical, entry_hash

    con = sqlite3.connect(db, isolation_level=None)
    try:
        con.execute("DROP TRIGGER entries_no_update")
        rows = con.execute("SELECT seq, ts, request_id, kind, body, prev_hash, hash "
                           "FROM entries ORDER BY seq").fetchall()
        target = next(r for r in rows if r[2] == rid and r[3] == "step.completed"
                      and json.loads(r[4]).get("phase") == "erase")
        body = json.loads(target[4])
        body["rows_deleted"] += 1
        con.execute("BEGIN")
        con.execute("UPDATE entries SET body = ? WHERE seq = ?", (canonical(body), target[0]))
        if rehash:
            prev = GENESIS
            for seq, ts, r_id, kind, text, _, _ in con.execute(
                    "SELECT seq, ts, request_id, kind, body, prev_hash, hash FROM entries "
                    "ORDER BY seq").fetchall():
                h = entry_hash(key, prev, seq, ts, r_id, kind, text)
                con.execute("UPDATE entries SET prev_hash = ?, hash = ? WHERE seq = ?",
                            (prev, h, seq))
                prev = h
            db.with_name(db.name + ".head").write_text(canonical(
                {"format": ANCHOR_FORMAT, "seq": seq, "hash": prev,
                 "hmac": anchor_mac(key, seq, prev)}))
        con.execute("COMMIT")
        return target[0]
    finally:
        con.close()


def test_report_does_not_match_a_different_ledger(proof, capsys, tmp_path):
    lake, pdf = proof["lake"], proof["pdf_a"]
    # (i) a forged ledger: A's erase step edited and the whole chain re-hashed and
    # re-anchored by someone holding the subject key, so the keyed chain itself is
    # consistent; the report's signed checkpoint hash gives it away
    from erasure.ledger import Ledger, chain_key
    from erasure.subject import SubjectKeys

    forged = _copy_lake(lake, tmp_path / "forged")
    key = chain_key(SubjectKeys.load(forged.root / ".erasure" / "keys" / "subject.key",
                                     create=False))
    _rewrite_ledger(_ledger_db(forged), proof["rid_a"], rehash=True, key=key)
    ledger = Ledger(_ledger_db(forged), key)
    try:
        assert ledger.verify_chain()[0] is True      # the forgery is internally consistent
    finally:
        ledger.close()
    code, res = _verify(forged, pdf, capsys)
    assert code == 5, res
    assert _failed(res) == {"evidence-matches-ledger"}, res

    # (ii) another lake's ledger, which never saw request A
    other = _copy_lake(lake, tmp_path / "other")
    for p in (other.root / ".erasure").glob("ledger.db*"):
        p.unlink()
    code, out = other.cli("request", "submit", "--subject-id", SUBJECT, "--json", capsys=capsys)
    assert code == 0, (out, other.last_err)
    assert json.loads(out)["request_id"] != proof["rid_a"]
    code, res = _verify(other, pdf, capsys)
    assert code == 5, res
    assert _failed(res) == {"evidence-matches-ledger"}, res
    assert res["checks"][-1]["name"] == "evidence-matches-ledger"


# ---- 4. a broken ledger -------------------------------------------------------------------
def test_edited_ledger_row_fails_ledger_verify_and_report_refuses(proof, capsys, tmp_path):
    lake = _copy_lake(proof["lake"], tmp_path / "broken")
    code, out = lake.cli("ledger", "verify", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["ok"] is True, out      # the copy starts sound
    seq = _rewrite_ledger(_ledger_db(lake), proof["rid_a"], rehash=False)

    code, out = lake.cli("ledger", "verify", "--json", capsys=capsys)
    assert code == 5, out
    res = json.loads(out)
    assert res["ok"] is False and f"entry {seq} " in res["problem"], res

    for rid in (proof["rid_a"], proof["rid_b"]):
        dst = tmp_path / f"refused-{rid}.pdf"
        code, out = lake.cli("report", rid, "--output", str(dst), capsys=capsys)
        assert code == 5, (code, out, lake.last_err)
        assert "ledger does not verify" in lake.last_err, lake.last_err
        assert not dst.exists()
        assert not list(tmp_path.glob(f"refused-{rid}.pdf*")), list(tmp_path.iterdir())

    # and a report made before the edit no longer matches the (broken) ledger
    code, res = _verify(lake, proof["pdf_a"], capsys)
    assert code == 5 and _failed(res) == {"evidence-matches-ledger"}, res


# ---- 5. rendering ----------------------------------------------------------------------------
def test_page_one_renders(proof, tmp_path):
    prefix = tmp_path / "page"
    _tool("pdftoppm", "-png", "-r", "50", "-f", "1", "-l", "1", str(proof["pdf_a"]), str(prefix))
    pngs = sorted(tmp_path.glob("page*.png"))
    assert len(pngs) == 1, pngs
    png = pngs[0].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(png) > 8 * 1024, len(png)
    # not a blank page: a greyscale render has a real share of dark pixels
    _tool("pdftoppm", "-gray", "-r", "50", "-f", "1", "-l", "1", str(proof["pdf_a"]),
          str(tmp_path / "grey"))
    pgm = next(tmp_path.glob("grey*.pgm")).read_bytes()
    header = re.match(rb"P5\s+(\d+)\s+(\d+)\s+(\d+)\s", pgm)
    w, h = int(header.group(1)), int(header.group(2))
    pixels = pgm[header.end():]
    assert len(pixels) == w * h
    dark = sum(1 for p in pixels if p < 128)
    assert dark > 0.01 * w * h, (dark, w * h)


# ---- 6. the CLI stays light ------------------------------------------------------------------
def test_help_imports_no_pdf_libraries():
    code = (
        "import json, sys\n"
        "from erasure.cli import run_cli\n"
        "rcs = [run_cli(a) for a in (['--help'], ['report', '--help'],"
        " ['verify-report', '--help'], ['keys', 'init', '--help'])]\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in"
        " ('reportlab', 'pyhanko', 'pyhanko_certvalidator'))\n"
        "print('RESULT ' + json.dumps({'rcs': rcs, 'heavy': heavy}))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False,
                          timeout=60, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr
    line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")][-1]
    res = json.loads(line[len("RESULT "):])
    assert res["rcs"] == [0, 0, 0, 0], proc.stdout
    assert res["heavy"] == [], res["heavy"]
    assert "verify-report" in proc.stdout and "--output" in proc.stdout
