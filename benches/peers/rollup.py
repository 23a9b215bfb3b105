#!/usr/bin/env python3
"""Daily and hourly rollups of one lake with meterlake and DuckDB; prints a Markdown table.

The job: per tenant x meter x window (UTC day or hour), the built-in meters' values (count of
api_calls and documents, sum of ai_tokens and ingest_bytes, distinct users of active_users,
the last storage_bytes reading), from the lake's Parquet files, written to ZSTD Parquet.

- meterlake: `rollup --granularity G --full` (also fills zero rows so series are complete,
  and writes one file per partition).
- DuckDB: one GROUP BY over read_parquet('LAKE/events/*/*.parquet') computing count(*),
  sum(value), count(DISTINCT user_id) and arg_max(value, ts) per group, then the meter's
  value picked with CASE, COPY'd to one Parquet file. Default threads (all cores).

Usage: rollup.py --lake LAKE --bin target/release/meterlake --runs 3 --work DIR
"""
import argparse
import json
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb

CASE = """CASE meter
    WHEN 'api_calls' THEN n::DOUBLE WHEN 'documents' THEN n::DOUBLE
    WHEN 'active_users' THEN users::DOUBLE WHEN 'storage_bytes' THEN latest
    ELSE total END"""


def run_meterlake(binary, lake, gran):
    cmd = ["/usr/bin/time", "-f", "%M", binary, "rollup", "--lake", str(lake), "--granularity", gran,
           "--full", "--output", "json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"meterlake rollup failed: {p.stderr[-2000:]}")
    rss_kb = int(p.stderr.strip().splitlines()[-1])
    return json.loads(p.stdout.strip().splitlines()[-1]), rss_kb


def run_duckdb(lake, gran, out):
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")
    glob = f"{lake}/events/*/*.parquet".replace("'", "''")
    con.execute(f"""
        COPY (SELECT tenant_id, meter, window_start, {CASE} AS value, n AS event_count FROM (
                SELECT tenant_id, meter, date_trunc('{gran}', ts) AS window_start,
                       count(*) AS n, sum(value) AS total, count(DISTINCT user_id) AS users,
                       arg_max(value, ts) AS latest
                FROM read_parquet('{glob}') GROUP BY ALL))
        TO '{out}' (FORMAT parquet, COMPRESSION zstd)""")
    rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchall()[0][0]
    con.close()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", required=True, type=Path)
    ap.add_argument("--bin", default="target/release/meterlake")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", required=True, type=Path)
    args = ap.parse_args()
    results = {"duckdb_version": duckdb.__version__, "jobs": {}}
    lines = ["| rollup | meterlake median (s) | DuckDB median (s) | ratio meterlake/DuckDB | meterlake peak RSS | rows meterlake / DuckDB |",
             "|---|---|---|---|---|---|"]
    for gran in ["day", "hour"]:
        mt, dt, rss = [], [], []
        ml_rows = duck_rows = None
        for _ in range(args.runs):
            t = time.perf_counter()
            s, kb = run_meterlake(args.bin, args.lake, gran)
            mt.append(time.perf_counter() - t)
            rss.append(kb)
            ml_rows = s["rows_written"]
            out = args.work / f"duck_{gran}.parquet"
            out.unlink(missing_ok=True)
            t = time.perf_counter()
            duck_rows = run_duckdb(args.lake, gran, out)
            dt.append(time.perf_counter() - t)
        m, d = statistics.median(mt), statistics.median(dt)
        results["jobs"][gran] = {"meterlake_s": mt, "duckdb_s": dt, "meterlake_rss_kb": rss,
                                 "meterlake_rows": ml_rows, "duckdb_rows": duck_rows}
        lines.append(f"| {gran} | {m:.2f} | {d:.2f} | {m / d:.2f} | {max(rss) / 1024:.0f} MiB | {ml_rows} / {duck_rows} |")
    print("\n".join(lines))
    (args.work / "rollup_results.json").write_text(json.dumps(results, indent=2))
    print(f"\nruns: {args.runs} each, alternating; details in {args.work / 'rollup_results.json'}")
    print("meterlake rows include the zero rows that complete count/sum/unique series; DuckDB's do not.")


if __name__ == "__main__":
    main()
