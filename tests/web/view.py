"""Drives tapline's web view in Debian's headless Chromium (playwright, executable_path set:
no browser is downloaded) and prints what it saw as one JSON object.

  view.py proxy   VIEW_URL SHOT PROXY ORIGIN PG_MAPPING|-   traffic made after the page opened
  view.py capture VIEW_URL SHOT EXPECTED_ROWS               a capture file's rows
"""
import json
import sys
import time
import urllib.error
import urllib.request

from playwright.sync_api import sync_playwright

mode, url, shot = sys.argv[1], sys.argv[2], sys.argv[3]
seen = {}


def count(page):
    return int(page.inner_text("#count"))


def proxy_traffic(proxy, origin, mapping):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://" + proxy}))
    for path, body in [("/echo", b'{"order": 42, "items": ["tea"]}'), ("/status/404", None),
                       ("/bytes/10", None), ("/", None)]:
        req = urllib.request.Request("http://" + origin + path, data=body,
                                     headers={"User-Agent": "tapline-web-test", "Content-Type": "application/json"})
        try:
            opener.open(req, timeout=10).read()
        except urllib.error.HTTPError:
            pass
    if mapping != "-":
        import psycopg
        host, port = mapping.rsplit(":", 1)
        with psycopg.connect(host=host, port=int(port), user="postgres", dbname="postgres",
                             sslmode="disable", autocommit=True) as conn:
            conn.execute("select %t::int + %t::int as answer", (20, 22)).fetchall()


with sync_playwright() as p:
    browser = p.chromium.launch(
        executable_path="/usr/bin/chromium",
        args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync"],
    )
    page = browser.new_page(viewport={"width": 1500, "height": 850})
    started = time.monotonic()
    page.goto(url, wait_until="load", timeout=30000)
    if mode == "proxy":
        proxy, origin, mapping = sys.argv[4], sys.argv[5], sys.argv[6]
        page.wait_for_timeout(500)
        seen["rows_before"] = count(page)
        proxy_traffic(proxy, origin, mapping)
        want = 4 + (1 if mapping != "-" else 0)
        page.wait_for_function(
            f"document.querySelectorAll('#table .row .what').length >= {want}", timeout=20000)
        seen["rows_after"] = count(page)
        seen["whats"] = page.eval_on_selector_all("#table .row .what", "els => els.map(e => e.textContent)")
        # The filter narrows the table.
        page.fill("#f-text", "status/404")
        page.wait_for_timeout(200)
        seen["filtered"] = page.eval_on_selector_all("#table .row .what", "els => els.map(e => e.textContent)")
        page.fill("#f-text", "")
        page.select_option("#f-proto", "http")
        page.check("#f-errors")
        page.wait_for_timeout(200)
        seen["errors_only"] = page.eval_on_selector_all("#table .row .status", "els => els.map(e => e.textContent)")
        page.uncheck("#f-errors")
        page.select_option("#f-proto", "")
        page.wait_for_timeout(200)
        # A request's details.
        page.click("#table .row:has(.what:text-matches('POST .*/echo'))")
        page.wait_for_selector("#req-headers")
        seen["request_headers"] = page.inner_text("#req-headers")
        seen["request_body"] = page.inner_text("#detail pre.body")
        if mapping != "-":
            page.click("#table .row:has(.what:text-matches('select'))")
            page.wait_for_selector("#sql")
            seen["sql"] = page.inner_text("#sql")
            seen["params"] = page.inner_text("#params")
    else:
        expected = int(sys.argv[4])
        page.wait_for_function(f"Number(document.querySelector('#count').textContent) >= {expected}",
                               timeout=60000)
        seen["render_ms"] = round((time.monotonic() - started) * 1000)
        seen["rows"] = count(page)
        seen["busy_ms"] = round(page.evaluate("window.taplineStats.renders.reduce((a, r) => a + r.ms, 0)"))
        page.wait_for_function("document.querySelector('#state').textContent.includes('ended')", timeout=10000)
        seen["state"] = page.inner_text("#state")
        post = page.locator("#table .row:has(.what:text-matches('^POST'))")
        if post.count():
            post.first.click()
            page.wait_for_selector("#req-headers")
            seen["request_headers"] = page.inner_text("#req-headers")
            seen["body"] = page.inner_text("#detail pre.body")
    page.screenshot(path=shot)
    browser.close()
print(json.dumps(seen))
