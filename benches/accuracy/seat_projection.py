"""Backtest of `quota`'s seat projections on a lake: project every `unique_users` meter
(the plans' `users`) on every other day of September 2026 and compare with the usage at
its period's end. Prints the mean absolute error, the largest error and how often the
actual end falls inside the band.

    meterlake ingest data/events --lake /tmp/seat-lake
    python3 benches/accuracy/seat_projection.py target/release/meterlake /tmp/seat-lake [METER] [-v]

Reads data/plans.toml and data/tenants.csv of the current directory (run it from the
repository's root); only periods that end before the lake's data does are scored.
"""
import datetime as dt
import json
import subprocess
import sys

BIN, LAKE = sys.argv[1], sys.argv[2]
METER = sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] != "-v" else "users"
VERBOSE = "-v" in sys.argv
BASE = ["--lake", LAKE, "--plans", "data/plans.toml", "--tenants", "data/tenants.csv"]


def quotas(at, project=True):
    args = [BIN, "-q", "quota", *BASE, "--at", at, "--output", "json"]
    if not project:
        args.append("--no-projection")
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return {(r["tenant_id"], r["meter"]): r for r in json.loads(out)["quotas"]}


def last_event(lake):
    out = subprocess.run([BIN, "lake", "stats", "--lake", lake], capture_output=True,
                         text=True, check=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("events"))
    return dt.datetime.fromisoformat(line.split("..")[1].strip().replace("Z", "+00:00"))


end_of_data = last_event(LAKE)
errors, inside = [], 0
for day in range(2, 29, 2):
    at = f"2026-09-{day:02d}"
    for (tenant, meter), r in quotas(at).items():
        if meter != METER:
            continue
        end = dt.datetime.fromisoformat(r["period_end"].replace("Z", "+00:00"))
        if end > end_of_data:
            continue
        last = (end - dt.timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
        actual = float(quotas(last, project=False)[(tenant, meter)]["used"])
        p = r["projected"]
        errors.append(abs(float(p["usage"]) - actual))
        inside += float(p["usage_lower"]) <= actual <= float(p["usage_upper"])
        if VERBOSE:
            print(at, tenant, r["used"], p["usage"], p["usage_lower"], p["usage_upper"],
                  actual, p["model"])
n = len(errors)
print(f"{METER}: {n} projections, mean absolute error {sum(errors) / n:.2f}, "
      f"max {max(errors):.0f}, inside the band {inside / n:.0%}")
