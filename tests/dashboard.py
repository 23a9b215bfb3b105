"""The dashboard in a real browser (headless Chromium through selenium), against a running
`meterlake serve` on the sample lake. Run by tests/dashboard.sh, which starts the server.

Checks, as a person would see them:
- signing in with an admin key and with a tenant key (the password field, the form);
- every page, reached by clicking the navigation, with a value on each checked against the
  CLI's JSON for the same lake and period (`usage`, `report`, `alerts list`, `invoice`);
- the tenant view shows no other tenant anywhere, and another tenant's view is refused;
- the phone-width layout does not scroll sideways, tables are keyboard-reachable and
  charts carry text alternatives, nothing is loaded from another origin;
- new data reaches an open page without a reload (an event tracked through the API);
- signing out.
Screenshots of every page are kept in $OUT.

Usage: dashboard.py BASE_URL ADMIN_KEY TENANT_KEY TENANT BIN LAKE OUT
"""

import json
import shutil
import subprocess
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.support.ui import WebDriverWait

BASE, ADMIN, TKEY, TENANT, BIN, LAKE, OUT = sys.argv[1:8]
PERIOD = "from=2026-10-01&to=2026-10-15"
MONTH = "2026-10"
PAGES = ["Overview", "Usage", "Forecasts", "Anomalies & alerts", "Billing"]
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def cli(*args):
    out = subprocess.run([BIN, *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def tenants():
    with open("data/tenants.csv") as f:
        return [line.split(",")[0] for line in f.read().splitlines()[1:]]


def browser(width, height):
    o = webdriver.ChromeOptions()
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              f"--window-size={width},{height}"]:
        o.add_argument(a)
    # Debian's chromium and its driver: selenium must not look for (download) others.
    o.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    return webdriver.Chrome(options=o, service=service)


def sign_in(d, key):
    d.get(BASE + "/")
    field = d.find_element(By.CSS_SELECTOR, "input[type=password][name=key]")
    field.send_keys(key)
    field.submit()
    WebDriverWait(d, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "nav a"))


def figure(d, label):
    for f in d.find_elements(By.CSS_SELECTOR, ".figure"):
        if f.find_element(By.CSS_SELECTOR, ".l").text == label:
            return f.find_element(By.CSS_SELECTOR, ".v").text
    raise AssertionError(f"no figure {label!r} on {d.current_url}")


def table(d, title):
    """Rows of the table titled `title`, as dicts."""
    return d.execute_script(
        """
        const r = document.querySelector(`[role=region][aria-label="${arguments[0]}"]`);
        if (!r) return null;
        const head = [...r.querySelectorAll('thead th')].map(x => x.textContent);
        return [...r.querySelectorAll('tbody tr')].map(tr => {
          const o = {}; [...tr.children].forEach((td, i) => o[head[i]] = td.textContent); return o;
        });""",
        title,
    )


def grouped(n):
    return f"{n:,}"


def money(x, cur):
    return f"{x:,.2f} {cur}"


def click_nav(d, name):
    d.find_element(By.LINK_TEXT, name).click()
    WebDriverWait(d, 30).until(
        lambda d: d.find_element(By.CSS_SELECTOR, "nav a[aria-current=page]").text == name)


def accessible(d, page):
    """Tables reachable by keyboard, charts with text, no sideways scroll, same origin only."""
    bad = d.execute_script(
        """
        const t = [...document.querySelectorAll('table')].filter(x => !x.closest('[tabindex="0"]')).length;
        const c = [...document.querySelectorAll('svg')].filter(
            x => !(x.closest('[role=img]') && x.closest('[role=img]').getAttribute('aria-label'))).length;
        const foreign = performance.getEntriesByType('resource').map(e => e.name)
            .filter(n => !n.startsWith(location.origin));
        return [t, c, foreign];""")
    check(bad[0] == 0, f"{page}: every table keyboard-reachable ({bad[0]} not)")
    check(bad[1] == 0, f"{page}: every chart has a text alternative ({bad[1]} without)")
    check(not bad[2], f"{page}: nothing from another origin {bad[2][:3]}")


# --- The tenant view -----------------------------------------------------------------------
d = browser(1280, 1000)
try:
    d.get(BASE + "/")
    check(d.find_elements(By.CSS_SELECTOR, "form[action='/login'][method=post] input[type=password]"),
          "the sign-in page has a password field posting to /login")
    sign_in(d, TKEY)
    check(TKEY not in d.current_url, "the key is not in the URL after sign-in")
    others = [t for t in tenants() if t != TENANT]
    d.get(f"{BASE}/?{PERIOD}")
    usage = cli("usage", "--lake", LAKE, "--tenant", TENANT, "--from", "2026-10-01", "--to",
                "2026-10-15", "--by", "user", "--top", "0", "--output", "json")
    users = {p["key"] for p in usage["breakdown"] if p["key"] not in ("(none)", "(other)")}
    check(figure(d, "Active users") == grouped(len(users)),
          f"overview: active users {figure(d, 'Active users')} = distinct users of `usage --by user` ({len(users)})")
    for name in PAGES:
        click_nav(d, name)
        WebDriverWait(d, 30).until(lambda d: d.find_element(By.ID, "main"))
        src = d.page_source
        leaked = [o for o in others if o in src]
        check(not leaked, f"tenant view, {name}: no other tenant in the page ({leaked[:3]})")
        check(TENANT in src, f"tenant view, {name}: shows {TENANT}")
        accessible(d, f"tenant {name}")
        d.save_screenshot(f"{OUT}/tenant-{name.split()[0].lower()}.png")
    # Values against the CLI, page by page.
    d.get(f"{BASE}/usage?{PERIOD}")
    plain = cli("usage", "--lake", LAKE, "--tenant", TENANT, "--from", "2026-10-01", "--to",
                "2026-10-15", "--output", "json")
    want = next(t["value"] for t in plain["totals"] if t["meter"] == "api_calls")
    rows = table(d, "This period against the previous one") or []
    # Tables group thousands for people: "4,863.00".
    got = next((float(r["total"].replace(",", "")) for r in rows if r["meter"] == "api_calls"), None)
    check(got == want, f"usage: api_calls total {got} = `usage` JSON {want}")
    d.get(f"{BASE}/forecasts?{PERIOD}")
    subprocess.run([BIN, "report", "--lake", LAKE, "--kind", "forecast", "--tenant", TENANT,
                    "--from", "2026-10-01", "--to", "2026-10-15", "--format", "json",
                    "--out", f"{OUT}/forecast.json", "--quiet"], check=True)
    rep = json.load(open(f"{OUT}/forecast.json"))
    want = {(r["meter"], r["model"]) for r in rep["tables"]["accuracy"]}
    rows = table(d, "Each series' model and its backtest accuracy") or []
    got = {(r["meter"], r["model"]) for r in rows}
    check(got == want and got, f"forecasts: models per meter {sorted(got)[:3]}... = `report --kind forecast`")
    d.get(f"{BASE}/anomalies?{PERIOD}")
    alerts = cli("alerts", "list", "--lake", LAKE, "--all", "--tenant", TENANT, "--output", "json")
    n_open = sum(1 for a in alerts if a["acknowledged_at"] is None)
    text = d.find_element(By.ID, "main").text
    check(f"{n_open} open of {len(alerts)}" in text,
          f"anomalies: '{n_open} open of {len(alerts)}' as `alerts list --all`")
    d.get(f"{BASE}/billing?period={MONTH}")
    inv = cli("invoice", "--lake", LAKE, "--period", MONTH, "--tenant", TENANT, "--output", "json")
    want = money(float(inv["invoices"][0]["total"]), inv["currency"])
    check(figure(d, "Invoice so far") == want, f"billing: invoice so far {figure(d, 'Invoice so far')} = `invoice` {want}")
    # Another tenant's view: refused.
    d.get(f"{BASE}/usage?tenant={others[0]}")
    check("another tenant" in d.find_element(By.TAG_NAME, "body").text,
          f"tenant view: ?tenant={others[0]} is refused")
    # Live: an event tracked through the API reaches the open page without a reload.
    d.get(f"{BASE}/?from=2026-10-22&to=2026-10-23")
    before = figure(d, "Events")
    d.execute_script("window.__same_document = true;")
    body = json.dumps([{"id": "dash-live-1", "tenant_id": TENANT, "user_id": "u-live",
                        "meter": "api_calls", "ts": "2026-10-22T12:00:00Z"}]).encode()
    req = urllib.request.Request(BASE + "/api/v1/usage/track", data=body, method="POST",
                                 headers={"Authorization": f"Bearer {TKEY}",
                                          "Content-Type": "application/json"})
    urllib.request.urlopen(req).read()
    req = urllib.request.Request(BASE + "/api/v1/usage/admin/flush", data=b"", method="POST",
                                 headers={"Authorization": f"Bearer {ADMIN}"})
    urllib.request.urlopen(req).read()
    want = grouped(int(before.replace(",", "")) + 1)
    # The script swaps the page's main part in while this polls it: an element read just
    # before the swap is stale by the time its text is asked for, so that is retried, not
    # taken as a failure (it was, now and then, with the figure already right).
    t_live = time.monotonic()
    try:
        WebDriverWait(d, 40, ignored_exceptions=(StaleElementReferenceException,)).until(
            lambda d: figure(d, "Events") == want)
        live = "in %.1f s" % (time.monotonic() - t_live)
    except Exception as e:
        live = None
        print(f"live: not shown within 40 s: {type(e).__name__} {e}")
    check(live and d.execute_script("return window.__same_document === true;"),
          f"live: Events went {before} -> {figure(d, 'Events')} (want {want}) {live} without a reload")
    d.save_screenshot(f"{OUT}/tenant-live.png")
    # Sign-out.
    d.find_element(By.CSS_SELECTOR, "form[action='/logout'] button").click()
    WebDriverWait(d, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "input[type=password]"))
    d.get(BASE + "/usage")
    check(d.find_elements(By.CSS_SELECTOR, "input[type=password]") != [],
          "signed out: /usage shows the sign-in page again")
finally:
    d.quit()

# --- The admin view ------------------------------------------------------------------------
d = browser(1280, 1000)
try:
    sign_in(d, ADMIN)
    d.get(f"{BASE}/?{PERIOD}")
    options = [o.text for o in d.find_elements(By.CSS_SELECTOR, "select[name=tenant] option")]
    check(options[0] == "All tenants" and set(tenants()) <= set(options),
          f"admin: a tenant picker with all {len(tenants())} tenants")
    rows = table(d, "Tenants nearest their limits") or []
    check(len(rows) > 0, f"admin overview: {len(rows)} tenants nearest their limits")
    for name in PAGES:
        click_nav(d, name)
        accessible(d, f"admin {name}")
        d.save_screenshot(f"{OUT}/admin-{name.split()[0].lower()}.png")
    # Pick a tenant with the picker.
    d.get(f"{BASE}/usage?{PERIOD}")
    sel = d.find_element(By.CSS_SELECTOR, "select[name=tenant]")
    for o in sel.find_elements(By.TAG_NAME, "option"):
        if o.text == TENANT:
            o.click()
    d.find_element(By.CSS_SELECTOR, "form.pick button").click()
    WebDriverWait(d, 30).until(lambda d: f"tenant={TENANT}" in d.current_url)
    check(f"Tenant {TENANT}" in d.find_element(By.ID, "main").text, "admin: the picker shows one tenant")
finally:
    d.quit()

# --- A phone-width screen ------------------------------------------------------------------
d = browser(390, 844)
try:
    sign_in(d, TKEY)
    for name in PAGES:
        click_nav(d, name)
        over = d.execute_script("return document.documentElement.scrollWidth - window.innerWidth;")
        check(over <= 1, f"phone width, {name}: no sideways scroll ({over} px over)")
        d.save_screenshot(f"{OUT}/phone-{name.split()[0].lower()}.png")
finally:
    d.quit()

if failures:
    print(f"{len(failures)} dashboard checks failed")
    sys.exit(1)
print(f"dashboard checks passed; screenshots in {OUT}")
