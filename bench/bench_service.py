"""Benchmark: the HTTP service under load (issue 15 part 8), on loopback.

Builds the sample lake (BENCH_ROWS reviews, default 5,000; BENCH_DIR for the folder), adds a
`[service]` section with a `lineage` and a `submitter` token (the worker off: this measures
the API, not erasure), starts `erasure serve` as installed in its own process (uvicorn, one
process, its log sent to a file), and from BENCH_CLIENTS concurrent clients (default 16
threads, one keep-alive httpx.Client each) posts:

- BENCH_EVENTS (10,000) OpenLineage RunEvents to `POST /api/v1/lineage` (role lineage): the
  lake's own events, each with a run id of its own and a later eventTime, so every one is a
  new event to store;
- then BENCH_REQUESTS (1,000) requests to `POST /v1/requests` (role submitter), one subject
  each (`{"subject_id": ..., "reason": ...}`).

For each it prints the wall time, requests/s, p50 and p99 latency (each request timed in its
client, connection reuse included), the answers by HTTP status, and what was stored counted
afterwards in the stores themselves: the events in the lineage store and the
`request.submitted` entries in the ledger, against what was sent ("nothing lost": every
request answered 201 and every one stored, none twice).

The baseline ("raw") is the same uvicorn with a FastAPI endpoint that reads the body, parses
the JSON and answers 201 with a small JSON document: the HTTP stack, the framework and the
clients alone, with the same clients, concurrency and bodies, served in its own process with
the same log level. The ratio is service req/s over baseline req/s: the share of the HTTP
floor the engine's work leaves (validation, bearer check, SQLite commit per event; per
request also the subject checks, the keyed HMAC and the ledger's hash chain and anchor).
Also printed, outside the ratio: the lineage store's own `ingest_text` of the same number of
events in one process with no HTTP (its storage floor).

Prints the figures; asserts nothing about speed. BENCH_KEEP=1 keeps the lake.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

from lakes import fresh_sample_lake

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
ERASURE = str(Path(PY).with_name("erasure"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "10000"))
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "1000"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "16"))
LINEAGE_TOKEN = "bench-lineage-" + uuid.uuid4().hex
SUBMIT_TOKEN = "bench-submitter-" + uuid.uuid4().hex

ECHO_APP = """
import json, sys
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()

@app.post("/echo")
async def echo(request: Request):
    body = json.loads(await request.body())
    return JSONResponse({"ok": True, "keys": len(body)}, status_code=201)

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="info")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, proc: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    sys.exit(f"the server did not start: {log.read_text()[-2000:]}")


def blast(url: str, bodies: list[bytes], token: str | None) -> dict:
    """POST every body from CLIENTS threads; per-request latencies, answers, wall time."""
    import httpx

    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    lat: list[float] = []
    codes: dict[int, int] = {}
    answers: list[dict] = []
    errors: list[str] = []
    problems: dict[str, int] = {}       # non-2xx answers: status and problem title/detail
    lock = threading.Lock()
    nxt = iter(range(len(bodies)))
    take = threading.Lock()

    def client() -> None:
        mine, mycodes, myanswers = [], {}, []
        with httpx.Client(timeout=60, headers=headers) as c:
            while True:
                with take:
                    i = next(nxt, None)
                if i is None:
                    break
                t0 = time.perf_counter()
                try:
                    r = c.post(url, content=bodies[i])
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(type(exc).__name__)
                    continue
                mine.append(time.perf_counter() - t0)
                mycodes[r.status_code] = mycodes.get(r.status_code, 0) + 1
                if r.status_code == 201:
                    myanswers.append(r.json())
                elif r.status_code >= 300:
                    try:
                        p = r.json()
                        what = f"{r.status_code} {p.get('title')}: {p.get('detail')}"[:200]
                    except ValueError:
                        what = f"{r.status_code} {r.text[:150]}"
                    with lock:
                        problems[what] = problems.get(what, 0) + 1
        with lock:
            lat.extend(mine)
            answers.extend(myanswers)
            for k, v in mycodes.items():
                codes[k] = codes.get(k, 0) + v

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat.sort()
    return {"wall": wall, "n": len(bodies), "rps": len(bodies) / wall, "codes": codes,
            "errors": errors, "answers": answers, "problems": problems,
            "p50": statistics.median(lat) * 1000 if lat else float("nan"),
            "p99": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else float("nan")}


def line(what: str, r: dict) -> str:
    codes = ", ".join(f"{k}: {v:,}" for k, v in sorted(r["codes"].items()))
    errs = f", {len(r['errors'])} transport errors" if r["errors"] else ""
    return (f"{what}: {r['n']:,} from {CLIENTS} clients in {r['wall']:.2f} s, "
            f"{r['rps']:,.0f} req/s, p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms "
            f"(HTTP {codes}{errs})"
            + "".join(f"\n    {n:,} x {what}" for what, n in sorted(r["problems"].items())))


def verdict(stored: int, r: dict, sent: int) -> str:
    """"nothing lost" when every 201 is stored once and every request was answered 201;
    otherwise what went wrong (an answer other than 201 is refused, not lost: its client
    knows, and nothing was stored for it)."""
    ok = r["codes"].get(201, 0)
    if stored != ok:
        return f"LOST OR EXTRA ({stored:,} stored for {ok:,} answered 201)"
    if ok == sent:
        return "nothing lost"
    return (f"every 201 stored, none twice; {sent - ok:,} refused (answered non-201 or no "
            "answer; nothing stored for them, a client would retry)")


def event_bodies(events_dir: Path, n: int) -> list[bytes]:
    """`n` distinct RunEvents: the lake's events in turn, each with a new run id and time."""
    templates = [json.loads(x) for f in sorted(events_dir.glob("*.jsonl"))
                 for x in f.read_text().splitlines() if x.strip()]
    templates = [t for t in templates if "run" in t and "job" in t]
    out = []
    for i in range(n):
        e = json.loads(json.dumps(templates[i % len(templates)]))
        e["run"]["runId"] = str(uuid.uuid4())
        e["eventTime"] = f"2026-12-01T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}." \
                         f"{i % 1000:03d}Z"
        out.append(json.dumps(e).encode())
    return out


def count(db: Path, sql: str) -> int:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return int(c.execute(sql).fetchone()[0])
    finally:
        c.close()


def serve(config: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([ERASURE, "--config", str(config), "serve", "--port", str(port)],
                            stdout=open(log, "ab"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    wait_up(base + "/openapi.json", proc, log)
    return proc, base


def main() -> None:
    base, rows, info, gen_s = fresh_sample_lake("bench_lake_service", 5000)
    lake = Path(info["out_dir"])
    config = Path(info["config"])
    sha = {t: hashlib.sha256(t.encode()).hexdigest() for t in (LINEAGE_TOKEN, SUBMIT_TOKEN)}
    config.write_text(config.read_text() + f"""
[service]
max_body = 1048576

[[service.tokens]]
name = "bench-lineage"
sha256 = "{sha[LINEAGE_TOKEN]}"
roles = ["lineage"]

[[service.tokens]]
name = "bench-portal"
sha256 = "{sha[SUBMIT_TOKEN]}"
roles = ["submitter"]
""")
    print(f"lake: {rows:,} reviews (generated in {gen_s:.1f} s); {CLIENTS} client threads, "
          f"loopback, one uvicorn process each side")
    # the subject key and an empty ledger exist before the clock starts (a first submit would
    # create the key)
    subprocess.run([ERASURE, "--config", str(config), "ledger", "verify"], capture_output=True,
                   check=True)
    bodies = event_bodies(lake / "events", EVENTS)
    store = lake / ".erasure" / "lineage.db"
    ledger = lake / ".erasure" / "ledger.db"

    # ---- the service ------------------------------------------------------------------------
    log = base / "serve.log"
    proc, url = serve(config, log)
    try:
        import httpx

        # one event first, so the lineage store exists for the count before
        r = httpx.post(url + "/api/v1/lineage", content=event_bodies(lake / "events", 1)[0],
                       headers={"Authorization": f"Bearer {LINEAGE_TOKEN}",
                                "Content-Type": "application/json"}, timeout=30)
        if r.status_code == 404:
            sys.exit("POST /api/v1/lineage is not there yet (erasure/service/api.py)")
        # and one request: a deployed service's ledger has entries and its head anchor
        # (concurrent first appends to an empty ledger can race its first anchor write)
        r = httpx.post(url + "/v1/requests", json={"subject_id": str(REQUESTS + 1),
                                                   "reason": "bench: warm-up"},
                       headers={"Authorization": f"Bearer {SUBMIT_TOKEN}"}, timeout=30)
        if r.status_code != 201:
            sys.exit(f"POST /v1/requests: {r.status_code} {r.text[:300]}")
        events_before = count(store, "SELECT count(*) FROM events")
        ev = blast(url + "/api/v1/lineage", bodies, LINEAGE_TOKEN)
        events_after = count(store, "SELECT count(*) FROM events")

        subjects = list(range(1, REQUESTS + 1))
        reqs = [json.dumps({"subject_id": str(s), "reason": "bench: customer asked to be "
                            "forgotten"}).encode() for s in subjects]
        submitted_before = count(ledger, "SELECT count(*) FROM entries "
                                 "WHERE kind = 'request.submitted'") if ledger.exists() else 0
        rq = blast(url + "/v1/requests", reqs, SUBMIT_TOKEN)
        submitted_after = count(ledger, "SELECT count(*) FROM entries "
                                "WHERE kind = 'request.submitted'")
    finally:
        proc.terminate()
        proc.wait(60)

    # ---- the baseline: plain uvicorn + FastAPI echo endpoint ---------------------------------
    port = free_port()
    elog = base / "echo.log"
    echo = subprocess.Popen([PY, "-c", ECHO_APP, str(port)], stdout=open(elog, "ab"),
                            stderr=subprocess.STDOUT)
    try:
        wait_up(f"http://127.0.0.1:{port}/openapi.json", echo, elog)
        raw_ev = blast(f"http://127.0.0.1:{port}/echo", bodies, None)
        raw_rq = blast(f"http://127.0.0.1:{port}/echo", reqs, None)
    finally:
        echo.terminate()
        echo.wait(60)

    # ---- the lineage store's own ingest, no HTTP ---------------------------------------------
    sys.path.insert(0, str(ROOT))
    from erasure.lineage.store import LineageStore

    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    try:
        st = LineageStore(tmp / "lineage.db")
        texts = [b.decode() for b in bodies]
        t0 = time.perf_counter()
        for t in texts:
            st.ingest_text(t)
        direct = time.perf_counter() - t0
        st.close()
    finally:
        shutil.rmtree(tmp)

    stored_ev = events_after - events_before
    rids = {a["request_id"] for a in rq["answers"]}
    stored_rq = submitted_after - submitted_before
    print(line("POST /api/v1/lineage (service)", ev))
    print(f"  stored: {stored_ev:,} new events in the lineage store; {ev['codes'].get(201, 0):,} "
          f"answered 201, of {EVENTS:,} sent: " + verdict(stored_ev, ev, EVENTS))
    print(line("  baseline: uvicorn + FastAPI endpoint parsing the JSON, answering 201", raw_ev))
    print(f"  ratio service/baseline (req/s): {ev['rps'] / raw_ev['rps']:.2f}x; "
          f"the store's own ingest_text without HTTP, one thread: {EVENTS / direct:,.0f} events/s")
    print(line("POST /v1/requests (service)", rq))
    print(f"  stored: {stored_rq:,} request.submitted entries in the ledger; "
          f"{rq['codes'].get(201, 0):,} answered 201 with {len(rids):,} distinct request ids, of "
          f"{REQUESTS:,} sent: " + verdict(stored_rq if len(rids) == stored_rq else -1, rq,
                                          REQUESTS))
    print(line("  baseline: uvicorn + FastAPI endpoint parsing the JSON, answering 201", raw_rq))
    print(f"  ratio service/baseline (req/s): {rq['rps'] / raw_rq['rps']:.2f}x")
    verify = subprocess.run([ERASURE, "--config", str(config), "ledger", "verify"],
                            capture_output=True, text=True)
    print(f"erasure ledger verify afterwards: {verify.stdout.strip() or verify.stderr.strip()}")
    if not os.environ.get("BENCH_KEEP"):
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
