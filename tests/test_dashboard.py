"""The privacy office's dashboard (issue 15 part 7), in a real headless Chromium.

The service runs with uvicorn on 127.0.0.1 over the generated sample lake; Debian's chromium
(/usr/bin/chromium, `make system-deps`) is driven with Playwright's Python package. The
requests are made through the CLI as the operators would: a portal submits two, a DPO
approves one ([approvals] required = 1), the catalog tags the export "finance" so the Rego
policy exempts it, legal places a hold on the other subject, ops runs the approved one. The
browser signs in, reads the list and a request's page, downloads the report, and
`erasure verify-report` checks the PDF. Screenshots are checked for their size, for not
being blank, and for the overdue marker being red. Nothing is mocked.

Time cannot be moved, so no request is overdue on the live service; the overdue rendering
is checked on the same ledger's states rendered with a fixed "now" after their deadline
(dashboard.index_body takes `now`), shown in the same browser."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import secrets
import shutil
import socket
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from conftest import Lake, postgres_ledger
from test_governance import FINANCE_BASIS, catalog_tags, install_policy

from erasure.cli import run_cli

SUBJECT, OTHER = "317", "283"      # two reviewers of the sample lake (seed 11, 400 users)
SIGNING_ENV = ("ERASURE_SIGNING_KEY", "ERASURE_SIGNING_CERT", "ERASURE_SIGNING_ROOT",
               "ERASURE_SUBJECT_KEY", "ERASURE_CONFIG", "ERASURE_ACTOR")
WIDTH, HEIGHT = 1366, 768          # a laptop screen
CSP = "default-src 'self'; style-src 'unsafe-inline'"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def site(tmp_path_factory, request):
    """The lake, its ledger with the two requests, the service on a free port, a browser;
    once with the SQLite ledger, once with the ledger on the machine's PostgreSQL."""
    import uvicorn
    from playwright.sync_api import sync_playwright

    from erasure.service.app import create_app
    from sample_lake.generate import generate

    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is not installed (make system-deps)"
    base_dir = tmp_path_factory.mktemp("dashboard")
    with pytest.MonkeyPatch.context() as mp:
        for name in SIGNING_ENV:
            mp.delenv(name, raising=False)
        info = generate(base_dir / "lake", rows=2000, seed=11, feast=False, mlflow=False)
        lake = Lake(Path(info["out_dir"]), Path(info["config"]), info["tables"],
                    Path(info["events"]))
        stack = contextlib.ExitStack()
        if request.param == "postgresql":
            stack.enter_context(postgres_ledger(lake))
        tokens = {"auditor": secrets.token_urlsafe(24), "submitter": secrets.token_urlsafe(24)}
        lake.config.write_text(lake.config.read_text() + "\n[approvals]\nrequired = 1\n" + "".join(
            f'\n[[service.tokens]]\nname = "{name}"\n'
            f'sha256 = "{hashlib.sha256(tok.encode()).hexdigest()}"\nroles = ["{role}"]\n'
            for role, tok, name in (("auditor", tokens["auditor"], "office-auditor"),
                                    ("submitter", tokens["submitter"], "portal-api"))))
        install_policy(lake)
        catalog_tags(lake, "finance")

        def cli(actor: str, *args: str) -> dict:
            """run_cli as `actor`, its JSON output (pytest's capsys is per test)."""
            mp.setenv("ERASURE_ACTOR", actor)
            out, err = io.StringIO(), io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = run_cli(["--config", str(lake.config), *args, "--json"])
            assert code == 0, (args, err.getvalue())
            return json.loads(out.getvalue())

        cli("admin", "keys", "init")
        rid_a = cli("portal", "request", "submit", "--subject-id", SUBJECT,
                    "--requested-by", "privacy portal", "--reason", "web form")["request_id"]
        rid_b = cli("portal", "request", "submit", "--subject-id", OTHER,
                    "--requested-by", "privacy portal", "--reason", "web form")["request_id"]
        cli("dpo", "request", "approve", rid_a)
        hold = cli("legal", "hold", "add", "--subject-id", OTHER, "--reason",
                   "litigation, case 2026-17")
        ran = cli("ops", "run", rid_a)
        assert ran["status"] == "completed", ran
        st_a, st_b = cli("ops", "status", rid_a), cli("ops", "status", rid_b)
        assert st_a["status"] == "completed" and st_b["status"] == "on_hold"
        assert all(t["rows_planned"] > 0 for t in st_a["targets"]), st_a["targets"]

        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(lake.config), host="127.0.0.1",
                                               port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(url + "/login", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.05)
        pw = sync_playwright().start()
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox"])
        pages: dict[str, str] = {}      # every page's HTML the browser saw, by name
        try:
            yield {"lake": lake, "url": url, "tokens": tokens, "browser": browser,
                   "rid_a": rid_a, "rid_b": rid_b, "status_a": st_a, "status_b": st_b,
                   "hold": hold, "pages": pages, "shots": base_dir}
        finally:
            browser.close()
            pw.stop()
            server.should_exit = True
            thread.join(10)
            stack.close()


def new_page(site):
    context = site["browser"].new_context(viewport={"width": WIDTH, "height": HEIGHT},
                                          accept_downloads=True)
    return context, context.new_page()


def sign_in(site, page, token: str):
    """Fill the login form with `token` and submit it; the response to the POST."""
    with page.expect_response(lambda r: r.url.endswith("/login")
                              and r.request.method == "POST") as posted:
        page.fill("#token", token)
        page.click("button[type=submit]")
    page.wait_for_load_state()
    return posted.value


def png_pixels(path: Path):
    from PIL import Image

    img = Image.open(path).convert("RGB")
    return img


def assert_not_blank(img) -> None:
    from PIL import ImageStat

    stat = ImageStat.Stat(img.convert("L"))
    assert stat.stddev[0] > 12, f"the screenshot looks blank (stddev {stat.stddev[0]:.1f})"
    colours = img.convert("RGB").getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50, "the screenshot has almost no distinct colours"


def rgb(img) -> list[tuple[int, int, int]]:
    data = img.convert("RGB").tobytes()
    return list(zip(data[0::3], data[1::3], data[2::3]))


def red_pixels(img) -> int:
    """Pixels that are clearly red text (#b00020 and its anti-aliasing)."""
    return sum(1 for r, g, b in rgb(img) if r > 140 and g < 90 and b < 110 and r - g > 80)


# ---- signing in ------------------------------------------------------------------------------
def test_without_a_token_every_page_redirects_to_the_login_form(site):
    context, page = new_page(site)
    try:
        for path in ("/", f"/requests/{site['rid_a']}",
                     f"/requests/{site['rid_a']}/report.pdf"):
            r = httpx.get(site["url"] + path, follow_redirects=False)
            assert (r.status_code, r.headers["location"]) == (303, "/login"), path
        response = page.goto(site["url"] + "/")
        assert page.url == site["url"] + "/login"
        assert response.request.redirected_from is not None
        assert response.request.redirected_from.response().status == 303
        assert page.locator("form.login #token").is_visible()
        site["pages"]["login"] = page.content()
    finally:
        context.close()


def test_a_wrong_token_and_a_submitters_token_cannot_sign_in(site):
    context, page = new_page(site)
    try:
        page.goto(site["url"] + "/login")
        posted = sign_in(site, page, "not-a-token-" + secrets.token_hex(8))
        assert posted.status == 401
        assert page.locator(".error").inner_text() == "Unknown token."
        assert page.url == site["url"] + "/login"

        posted = sign_in(site, page, site["tokens"]["submitter"])
        assert posted.status == 403
        error = page.locator(".error").inner_text()
        assert "portal-api" in error and "auditor or operator" in error, error
        assert context.cookies() == []
        # still not signed in
        page.goto(site["url"] + "/")
        assert page.url == site["url"] + "/login"
        # a submitter's token as a bearer on a page: known, but not allowed
        r = httpx.get(site["url"] + "/", headers={
            "Authorization": f"Bearer {site['tokens']['submitter']}"})
        assert r.status_code == 403 and "auditor or operator" in r.text
    finally:
        context.close()


def test_a_chunked_sign_in_body_is_cut_off_at_its_limit(site):
    """The sign-in form is read with a small limit however it is sent: a chunked body (no
    Content-Length, so the app's check does not apply) of 20 MB is refused, not read."""
    def chunks():
        yield b"token="
        for _ in range(20 * 64):
            yield b"x" * 16384
    r = httpx.post(site["url"] + "/login", content=chunks(),
                   headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)
    assert r.status_code == 413 and "too large" in r.text


def test_the_login_cookie_is_httponly_samesite_strict_and_secure(site):
    r = httpx.post(site["url"] + "/login", data={"token": site["tokens"]["auditor"]},
                   follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/")
    cookie = r.headers["set-cookie"]
    attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
    assert cookie.startswith(f"erasure_token={site['tokens']['auditor']};")
    assert {"httponly", "secure", "samesite", "path"} <= attrs, cookie
    assert re.search(r"(?i)samesite=strict", cookie) and re.search(r"(?i)path=/(;|$)", cookie)
    # a form posted from another site does not sign anyone in
    r = httpx.post(site["url"] + "/login", data={"token": site["tokens"]["auditor"]},
                   headers={"Sec-Fetch-Site": "cross-site"}, follow_redirects=False)
    assert r.status_code == 403 and "set-cookie" not in r.headers
    # the cookie is for the dashboard's GET pages: a POST with it changes nothing here
    r = httpx.post(site["url"] + "/", cookies={"erasure_token": site["tokens"]["auditor"]})
    assert r.status_code == 405


# ---- the list, a request, its report -------------------------------------------------------
def test_the_auditor_sees_both_requests_with_deadline_and_days_left(site):
    from erasure.service.dashboard import when

    context, page = new_page(site)
    try:
        page.goto(site["url"] + "/login")
        sign_in(site, page, site["tokens"]["auditor"])
        assert page.url == site["url"] + "/"
        (cookie,) = context.cookies()
        assert (cookie["name"], cookie["value"]) == ("erasure_token", site["tokens"]["auditor"])
        assert (cookie["httpOnly"], cookie["secure"], cookie["sameSite"]) == (True, True, "Strict")
        assert page.evaluate("document.cookie") == ""        # HttpOnly: no script sees it

        response = page.reload()
        assert response.headers["content-security-policy"].startswith(CSP)
        assert response.headers["x-frame-options"] == "DENY"
        site["pages"]["index"] = page.content()

        rows = page.locator("table.requests tbody tr")
        assert rows.count() == 2
        a = page.locator(f'tr[id="{site["rid_a"]}"] td')
        b = page.locator(f'tr[id="{site["rid_b"]}"] td')
        cells_a = [a.nth(i).inner_text().strip() for i in range(a.count())]
        cells_b = [b.nth(i).inner_text().strip() for i in range(b.count())]
        # Request, Subject, Received, Deadline, Days left, Status, Submitted, Approved, Ran, Report
        assert cells_a[0] == site["rid_a"] and cells_b[0] == site["rid_b"]
        assert cells_a[1] == site["status_a"]["subject"]["hmac"][:12] + "…"
        assert cells_a[3] == when(site["status_a"]["deadline"])
        assert cells_b[3] == when(site["status_b"]["deadline"])
        assert cells_a[4:] == ["closed", "completed", "portal", "dpo (1 of 1)", "ops", "PDF"]
        left = (datetime.fromisoformat(site["status_b"]["deadline"]).astimezone(timezone.utc)
                .date() - datetime.now(timezone.utc).date()).days
        assert 27 <= left <= 31
        assert cells_b[4:] == [f"{left} days left", "on hold", "portal", "- (0 of 1)", "-",
                               "when finished"]
        assert "overdue" not in page.inner_text("table.requests")
        assert "2 requests: 1 open, 0 overdue" in page.inner_text(".summary")

        # readable on a laptop screen: nothing wider than the window, the table in view
        assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
        box = page.locator("table.requests").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= WIDTH and box["y"] < HEIGHT / 2
        shot = site["shots"] / "list.png"
        page.screenshot(path=str(shot))
        img = png_pixels(shot)
        assert img.size == (WIDTH, HEIGHT)
        assert_not_blank(img)
    finally:
        context.close()


def test_the_completed_requests_page_shows_its_datasets_exemption_and_lineage(site):
    lake, rid = site["lake"], site["rid_a"]
    context, page = new_page(site)
    try:
        page.goto(site["url"] + "/login")
        sign_in(site, page, site["tokens"]["auditor"])
        page.click(f'a[href="/requests/{rid}"]')
        page.wait_for_load_state()
        assert page.url == f"{site['url']}/requests/{rid}"
        site["pages"]["request_a"] = page.content()
        assert page.locator("h1").inner_text() == f"Request {rid}"
        facts = page.inner_text("dl.facts")
        assert "completed" in facts and "privacy portal" in facts and "web form" in facts

        # steps per dataset: the three erased datasets, each erased, purged, verified
        table = page.locator("table.datasets tbody tr")
        steps = {}
        for i in range(table.count()):
            cells = table.nth(i).locator("td")
            steps[cells.nth(0).inner_text()] = [cells.nth(j).inner_text() for j in (4, 5, 6)]
        assert set(steps) == {"raw/reviews", "clean/reviews", "features/user_features"}, steps
        for name, s in steps.items():
            assert s[0] == "completed" and s[2] == "completed", (name, s)
        # the exemption with its basis; who acted
        kept = page.inner_text("table.kept")
        assert "exempt" in kept and "exports/user_activity.parquet" in kept
        assert FINANCE_BASIS in kept
        acted = page.inner_text("h2:has-text('Who acted') + table")
        for who in ("portal", "dpo", "ops"):
            assert who in acted
        assert "No legal hold covers this subject." in page.inner_text("main")

        # the lineage picture: the root, the datasets derived from it, the exempt export
        svg = page.locator("svg.lineage")
        assert svg.is_visible()
        marks = {page.locator("svg.lineage g.node").nth(i).get_attribute("data-name"):
                 page.locator("svg.lineage g.node").nth(i).get_attribute("data-mark")
                 for i in range(page.locator("svg.lineage g.node").count())}
        tables = lake.tables
        assert marks == {tables["raw/reviews"]: "erased", tables["clean/reviews"]: "erased",
                         tables["features/user_features"]: "erased",
                         tables["exports/user_activity"]: "exempt",
                         tables["agg/daily_ratings"]: "out of scope"}, marks
        assert "agg/daily_ratings" in page.inner_text("table.out-of-scope")
        assert page.locator("svg.lineage path.edge").count() >= 2
        texts = page.locator("svg.lineage text").all_text_contents()
        assert "EXEMPT, kept" in texts and "delta: erased, verified" in texts, texts
        # the root is left of what was derived from it
        x = {n: page.locator(f'svg.lineage g.node[data-name="{n}"] rect').bounding_box()["x"]
             for n in marks}
        assert x[tables["raw/reviews"]] < x[tables["clean/reviews"]]

        assert page.evaluate("document.documentElement.scrollWidth") <= WIDTH
        shot = site["shots"] / "request.png"
        page.screenshot(path=str(shot))
        img = png_pixels(shot)
        assert img.size == (WIDTH, HEIGHT)
        assert_not_blank(img)
        # the picture itself is drawn: its area in a screenshot has the green of erased boxes
        svg.scroll_into_view_if_needed()
        box = svg.bounding_box()
        page.screenshot(path=str(site["shots"] / "lineage.png"), clip=box)
        pic = png_pixels(site["shots"] / "lineage.png")
        assert_not_blank(pic)
        green = sum(1 for r, g, b in rgb(pic) if g > r + 40 and g > b + 20)
        assert green > 100, green
    finally:
        context.close()


def test_the_report_downloads_as_a_pdf_that_verify_report_accepts(site, capsys):
    lake, rid = site["lake"], site["rid_a"]
    context, page = new_page(site)
    try:
        page.goto(site["url"] + "/login")
        sign_in(site, page, site["tokens"]["auditor"])
        page.goto(f"{site['url']}/requests/{rid}")
        with page.expect_download() as download:
            page.click("a.button:has-text('Download the signed report')")
        dl = download.value
        assert dl.suggested_filename == f"erasure-report-{rid}.pdf"
        pdf = site["shots"] / "report.pdf"
        dl.save_as(str(pdf))
        assert pdf.read_bytes().startswith(b"%PDF-")
        # in a thread of its own: Playwright's sync API keeps an asyncio loop running in
        # this one, and pyHanko's validation runs its own loop
        result: list[int] = []
        checker = threading.Thread(target=lambda: result.append(run_cli(
            ["--config", str(lake.config), "verify-report", str(pdf), "--json"])))
        checker.start()
        checker.join(60)
        out = capsys.readouterr()
        assert result == [0], out.out + out.err
        assert json.loads(out.out)["ok"] is True

        # the response, as the browser got it
        r = context.request.get(f"{site['url']}/requests/{rid}/report.pdf")
        assert r.status == 200 and r.headers["content-type"] == "application/pdf"
        assert r.headers["content-disposition"] == \
            f'attachment; filename="erasure-report-{rid}.pdf"'
        # the held request has not finished: no report, 409
        r = context.request.get(f"{site['url']}/requests/{site['rid_b']}/report.pdf")
        assert r.status == 409 and "on hold" in r.text()
        r = context.request.get(f"{site['url']}/requests/req-00000000000000000000/report.pdf")
        assert r.status == 404
    finally:
        context.close()


def test_the_held_requests_page_shows_the_hold_and_no_plan(site):
    context, page = new_page(site)
    try:
        page.goto(site["url"] + "/login")
        sign_in(site, page, site["tokens"]["auditor"])
        page.goto(f"{site['url']}/requests/{site['rid_b']}")
        site["pages"]["request_b"] = page.content()
        holds = page.inner_text("h2:has-text('Legal holds') + table")
        assert site["hold"]["hold_id"] in holds
        assert "litigation, case 2026-17" in holds and "legal" in holds and "active" in holds
        assert "on hold" in page.inner_text("dl.facts")
        assert "Not planned yet" in page.inner_text("main")
        assert page.locator("a.button").count() == 0     # no report link yet
        # signing out clears the cookie
        page.click("header button:has-text('Sign out')")
        page.wait_for_load_state()
        assert page.url == site["url"] + "/login" and context.cookies() == []
    finally:
        context.close()


def test_no_page_shows_the_subject_id_or_its_whole_hmac(site):
    pages = dict(site["pages"])
    bearer = {"Authorization": f"Bearer {site['tokens']['auditor']}"}
    for path in ("/", f"/requests/{site['rid_a']}", f"/requests/{site['rid_b']}"):
        r = httpx.get(site["url"] + path, headers=bearer)
        assert r.status_code == 200 and r.headers["content-security-policy"].startswith(CSP)
        assert r.headers["x-frame-options"] == "DENY"
        pages[path] = r.text
    assert {"login", "index", "request_a", "request_b"} <= set(pages), sorted(pages)
    times = re.compile(r"\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:\.\d+)?)?(?:Z|[+-]\d\d:\d\d)?)?")

    # the picture's geometry and the style sheet are numbers that are no data: out too
    geometry = re.compile(r'\s(?:x|y|d|rx|width|height|viewBox|refX|refY|markerWidth|'
                          r'markerHeight|stroke-width|stroke-dasharray|font-size)="[^"]*"'
                          r'|<style>.*?</style>', re.S)

    def where(subject: str, text: str) -> str:
        """Where `text` names `subject` as a whole token ("" if nowhere), times taken out."""
        text = times.sub("", geometry.sub("", text))
        m = re.search(rf"(?<![0-9A-Za-z]){subject}(?![0-9A-Za-z])", text)
        return text[max(0, m.start() - 80):m.end() + 40] if m else ""

    def names(subject: str, text: str) -> bool:
        return bool(where(subject, text))

    assert names(SUBJECT, f"<td>user {SUBJECT}</td>")       # the check itself can fail
    assert not names(SUBJECT, f"<td>2026-11-29T{SUBJECT[:2]}:17:00+00:00 {SUBJECT}0</td>")
    assert not names(SUBJECT, f'<rect x="{SUBJECT}" width="250"/>')
    assert names(SUBJECT, f'<g data-name="user_{SUBJECT}.parquet"><title>{SUBJECT}</title>')
    for name, text in pages.items():
        for subject in (SUBJECT, OTHER):
            assert not names(subject, text), (name, where(subject, text))
        for st in (site["status_a"], site["status_b"]):
            assert st["subject"]["hmac"] not in text, name
    # what a page shows of a subject instead: its HMAC's first 12 digits
    for name in ("index", "/"):
        for st in (site["status_a"], site["status_b"]):
            assert st["subject"]["hmac"][:12] + "…" in pages[name], name
    assert site["status_a"]["subject"]["hmac"][:12] + "…" in pages["request_a"]


# ---- overdue, at a fixed "now" -------------------------------------------------------------
def test_days_left_and_overdue_words():
    from erasure.service.dashboard import days_left_text

    deadline = "2026-12-29T10:00:00+00:00"
    at = datetime(2026, 12, 29, 10, 0, tzinfo=timezone.utc)
    assert days_left_text(deadline, at - timedelta(days=30), False) == ("", "30 days left")
    assert days_left_text(deadline, at - timedelta(days=3), False) == ("soon", "3 days left")
    assert days_left_text(deadline, at - timedelta(days=1), False) == ("soon", "1 day left")
    assert days_left_text(deadline, at - timedelta(seconds=1), False) == ("soon", "due today")
    assert days_left_text(deadline, at + timedelta(seconds=1), False) == (
        "overdue", "overdue (today)")
    assert days_left_text(deadline, at + timedelta(hours=15), False) == (
        "overdue", "overdue by 1 day")
    assert days_left_text(deadline, at + timedelta(days=3), False) == (
        "overdue", "overdue by 3 days")
    assert days_left_text(deadline, at + timedelta(days=3), True) == ("closed", "closed")


def test_an_overdue_request_is_marked_red_and_in_words(site):
    """The same ledger's requests, rendered as the index renders them but with "now" three
    days after the held request's deadline, shown in the browser: that request's cell says
    "overdue by 3 days" and its text is red; the completed request's is neither."""
    from erasure.engine import Engine
    from erasure.config import load_config
    from erasure.requests import all_states
    from erasure.service.dashboard import index_body, page as render_page, row_of

    config = load_config(site["lake"].config)
    eng = Engine(config, actor="test")
    try:
        holds = eng.holds()
        rows = [row_of(st, config.approvals_required, holds) for st in all_states(eng.ledger)]
    finally:
        eng.close()
    now = datetime.fromisoformat(site["status_b"]["deadline"]) + timedelta(days=3)
    text = render_page("Requests", index_body(rows, now))
    assert "overdue by 3 days" in text
    context, page = new_page(site)
    try:
        page.set_content(text)
        late = page.locator(f'tr[id="{site["rid_b"]}"] td.days')
        done = page.locator(f'tr[id="{site["rid_a"]}"] td.days')
        assert late.inner_text() == "overdue by 3 days"
        assert done.inner_text() == "closed"
        assert "1 overdue" in page.inner_text(".summary")
        assert page.evaluate("getComputedStyle(document.querySelector("
                             f"'tr[id=\"{site['rid_b']}\"] td.days')).color") == \
            "rgb(176, 0, 32)"
        shot = site["shots"] / "overdue.png"
        page.screenshot(path=str(shot))
        img = png_pixels(shot)
        assert img.size == (WIDTH, HEIGHT)

        def crop(cell):
            b = cell.bounding_box()
            return img.crop((int(b["x"]), int(b["y"]), int(b["x"] + b["width"]),
                             int(b["y"] + b["height"])))

        assert red_pixels(crop(late)) > 30, red_pixels(crop(late))
        assert red_pixels(crop(done)) == 0
        # the cell's background is tinted too (sampled from a corner of the cell)
        r, g, b = crop(late).getpixel((2, 2))
        assert r > 240 and g < 240 and b < 240 and r - g > 15, (r, g, b)
    finally:
        context.close()
