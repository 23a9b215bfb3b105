"""Times every dashboard page in headless Chromium: navigation start to load event end
(the Navigation Timing entry), on the first view after the server started ("cold": the page
is built then) and the median of the next three ("warm": the page is kept until the data
changes). Run by load.sh, which starts the server on a generated lake.

Usage: load.py BASE ADMIN_KEY TENANT_KEY TENANT MONTH
"""

import shutil
import statistics
import sys

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

BASE, ADMIN, TKEY, TENANT, MONTH = sys.argv[1:6]
PAGES = ["/", "/usage", "/forecasts", "/anomalies", "/billing"]


def browser():
    o = webdriver.ChromeOptions()
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,1000"]:
        o.add_argument(a)
    o.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    return webdriver.Chrome(options=o,
                            service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))


def load_ms(d, url):
    d.get(url)
    WebDriverWait(d, 120).until(
        lambda d: d.execute_script("return document.readyState") == "complete")
    return d.execute_script(
        "const n = performance.getEntriesByType('navigation')[0]; return n.loadEventEnd - n.startTime;")


def sign_in(d, key):
    d.get(BASE + "/")
    f = d.find_element(By.CSS_SELECTOR, "input[type=password]")
    f.send_keys(key)
    f.submit()
    WebDriverWait(d, 120).until(lambda d: d.find_elements(By.CSS_SELECTOR, "nav a"))


rows = []
# The admin signs in first: `/` (default period) is what they see on sign-in, so its cold
# figure is the sign-in's own page load.
# (A page is kept per scope and period, whoever asks: an admin picking the tenant would see
# the tenant's pages as the tenant left them, so only the tenant key times them.)
for who, key, scope in [("admin", ADMIN, ""), (f"tenant {TENANT}", TKEY, "")]:
    d = browser()
    try:
        sign_in(d, key)
        for period in ["", f"period={MONTH}"]:
            q = "&".join(x for x in [scope, period] if x)
            for p in PAGES:
                url = f"{BASE}{p}" + (f"?{q}" if q else "")
                cold = load_ms(d, url)
                warm = statistics.median(load_ms(d, url) for _ in range(3))
                label = f"{who}{', all tenants' if who == 'admin' else ''}, {period or 'default (30 days to now)'}"
                rows.append((label, p, cold, warm))
                print(f"{label:<60} {p:<11} cold {cold:7.0f} ms   warm {warm:6.0f} ms", flush=True)
    finally:
        d.quit()

print()
print("| view | page | first view (ms) | kept (ms, median of 3) |")
print("|---|---|---:|---:|")
for label, p, cold, warm in rows:
    print(f"| {label} | `{p}` | {cold:.0f} | {warm:.0f} |")
worst_cold = max(r[2] for r in rows)
worst_warm = max(r[3] for r in rows)
home = [r for r in rows if r[1] == "/"]
print(f"\nslowest first view {worst_cold:.0f} ms, slowest kept {worst_warm:.0f} ms; "
      f"home page: first views {', '.join(f'{r[2]:.0f}' for r in home)} ms")
