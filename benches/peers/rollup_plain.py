#!/usr/bin/env python3
"""The plain rollup job, meterlake against DuckDB on equal work; prints the medians.

The lake: N events (default 10 M) of 200 tenants and 5,000 users, three meters in turn
(api_calls, ai_tokens, ingest_bytes), timestamps uniform over October 2026, written by
DuckDB as NDJSON and ingested by meterlake. With no meters.toml in the working directory
meterlake uses its built-in meters: api_calls is a count, the two others sums.

One run is a full day rollup plus a full hour rollup:
- meterlake: `rollup --granularity G --full` (one Parquet file per partition);
- DuckDB: per tenant x meter x window, count(*) for api_calls and sum(value) for the
  others, from read_parquet over the lake's event files, COPY'd to one ZSTD Parquet file.
Runs alternate (meterlake, then DuckDB). Every window has events, so neither side writes
zero rows.

Usage: rollup_plain.py --bin target/release/meterlake --work DIR [--events N] [--runs 5]
"""
import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import duckdb


def generate(path, n):
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute(f"""
    COPY (
      SELECT 'ev-' || i AS id,
             strftime(TIMESTAMP '2026-10-01'
                      + to_microseconds(CAST(hash(i, 1) % 2678400000000 AS BIGINT)),
                      '%Y-%m-%dT%H:%M:%S.%fZ') AS ts,
             'tenant-' || lpad(CAST(hash(i, 2) % 200 AS VARCHAR), 3, '0') AS tenant_id,
             'user-' || lpad(CAST(hash(i, 3) % 5000 AS VARCHAR), 4, '0') AS user_id,
             ['api_calls', 'ai_tokens', 'ingest_bytes'][1 + i % 3] AS meter,
             CASE i % 3 WHEN 0 THEN 1 WHEN 1 THEN 1 + hash(i, 4) % 2000
                        ELSE 1 + hash(i, 5) % 100000 END AS value
      FROM range({n}) t(i)
    ) TO '{path}' (FORMAT json)""")
    con.close()


def meterlake(binary, lake, work, gran):
    t = time.perf_counter()
    p = subprocess.run([binary, "rollup", "--lake", str(lake), "--granularity", gran, "--full",
                        "--output", "json"], capture_output=True, text=True, cwd=work)
    if p.returncode != 0:
        raise SystemExit(f"meterlake rollup failed: {p.stderr[-2000:]}")
    return time.perf_counter() - t, json.loads(p.stdout)


def duck(lake, out, gran):
    t = time.perf_counter()
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    con.execute(f"""
    COPY (SELECT tenant_id, meter, date_trunc('{gran}', ts) AS window_start,
                 CASE meter WHEN 'api_calls' THEN count(*)::DOUBLE ELSE sum(value) END AS value,
                 count(*) AS event_count
          FROM read_parquet('{lake}/events/*/*.parquet')
          GROUP BY tenant_id, meter, window_start)
    TO '{out}' (FORMAT parquet, COMPRESSION zstd)""")
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchall()[0][0]
    con.close()
    return time.perf_counter() - t, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin", default="target/release/meterlake")
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    binary = str(Path(a.bin).resolve())
    work = a.work.resolve()
    lake = work / "lake"
    if not lake.exists():
        events = work / "events.ndjson"
        print(f"generating {a.events} events with DuckDB ...", flush=True)
        generate(events, a.events)
        subprocess.run([binary, "ingest", "-q", "--lake", str(lake), str(events)], check=True,
                       stdout=subprocess.DEVNULL, cwd=work)
        events.unlink()
    ml, dk = [], []
    for r in range(a.runs):
        m = d = 0.0
        rows = {}
        for gran in ["day", "hour"]:
            t, s = meterlake(binary, lake, work, gran)
            m += t
            t, n = duck(lake, work / f"duck_{gran}.parquet", gran)
            d += t
            rows[gran] = (s["rows_written"], n)
        ml.append(m)
        dk.append(d)
        print(f"run {r + 1}: meterlake {m:.2f} s, DuckDB {d:.2f} s, ratio {m / d:.2f}; "
              f"rows (meterlake, DuckDB) {rows}", flush=True)
    m, d = statistics.median(ml), statistics.median(dk)
    print(f"median of {a.runs}: meterlake {m:.2f} s, DuckDB {d:.2f} s, "
          f"meterlake / DuckDB time = {m / d:.2f} (goal <= 0.8); DuckDB {duckdb.__version__}")


if __name__ == "__main__":
    main()
