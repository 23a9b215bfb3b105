#!/usr/bin/env python3
"""Run the same ingest job (NDJSON -> ZSTD Parquet, Hive-partitioned by UTC date)
with meterlake, DuckDB and polars; print a Markdown table and write results.json.

Usage: peers.py --input events.ndjson --bin target/release/meterlake --runs 3 --work DIR
"""
import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import polars as pl

DUCK_COLUMNS = ("{'id': 'VARCHAR', 'ts': 'TIMESTAMPTZ', 'tenant_id': 'VARCHAR', 'user_id': 'VARCHAR', "
                "'meter': 'VARCHAR', 'value': 'DOUBLE', 'properties': 'JSON'}")
# properties as String: polars keeps each JSON object as its JSON text.
PL_SCHEMA = {"id": pl.String, "ts": pl.String, "tenant_id": pl.String, "user_id": pl.String,
             "meter": pl.String, "value": pl.Float64, "properties": pl.String}
# polars' ignore_errors covers type mismatches but not JSON syntax errors (a truncated line
# aborts the whole read), so lines that cannot be a complete object are dropped first.
PL_LINE_LOOKS_COMPLETE = (pl.col("line").str.starts_with("{") & pl.col("line").str.ends_with("}")
                          & (pl.col("line").str.count_matches("{", literal=True)
                             == pl.col("line").str.count_matches("}", literal=True)))

NOTES = {
    "meterlake": "validates every record, quarantines bad ones, drops duplicates",
    "duckdb": "no validation, no dedup; unparseable lines/fields become NULLs",
    "polars": "no validation, no dedup; syntactically broken lines skipped",
}


def sql_str(s):
    return "'" + str(s).replace("'", "''") + "'"


def run_meterlake(binary, inp, out):
    cmd = [binary, "ingest", str(inp), "--lake", str(out), "--quiet", "--output", "json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"meterlake ingest failed (exit {p.returncode}): {' '.join(cmd)}\n{p.stderr.strip()[-2000:]}")
    text = p.stdout.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:  # tolerate extra lines before the summary
        return json.loads(text.splitlines()[-1])


def run_duckdb(inp, out):
    con = duckdb.connect()  # default threads = all cores
    con.execute("SET TimeZone='UTC'")  # so CAST(ts AS DATE) is the UTC date
    con.execute(f"""
        COPY (SELECT *, CAST(ts AS DATE) AS date
              FROM read_json({sql_str(inp)}, format='newline_delimited', ignore_errors=true,
                             columns={DUCK_COLUMNS}))
        TO {sql_str(out)} (FORMAT parquet, PARTITION_BY (date), COMPRESSION zstd)""")
    con.close()


def _is_json(line):
    try:
        json.loads(line)
        return True
    except ValueError:
        return False


def run_polars(inp, out):
    lines = pl.scan_lines(inp).filter(PL_LINE_LOOKS_COMPLETE).collect()
    buf = io.BytesIO()
    lines.write_csv(buf, include_header=False, quote_style="never")
    data = buf.getvalue()
    try:
        df = pl.read_ndjson(data, schema=PL_SCHEMA, ignore_errors=True)
    except pl.exceptions.ComputeError:  # a broken line passed the cheap filter: exact (slow) filter
        print("polars: syntax error slipped through the line filter, using the json.loads filter",
              file=sys.stderr)
        data = b"\n".join(line for line in data.splitlines() if _is_json(line))
        df = pl.read_ndjson(data, schema=PL_SCHEMA, ignore_errors=True)
    df = df.with_columns(pl.col("ts").str.to_datetime("%+", time_zone="UTC", time_unit="us", strict=False))
    df = df.with_columns(date=pl.col("ts").dt.date())
    df.write_parquet(out, partition_by="date", compression="zstd")


def written(out):
    """Rows and files in every Parquet file under out (read back with DuckDB)."""
    files = list(Path(out).rglob("*.parquet"))
    if not files:
        return 0, 0
    glob = sql_str(f"{out}/**/*.parquet")
    rows = duckdb.sql(f"SELECT count(*) FROM read_parquet({glob}, union_by_name=true)").fetchall()[0][0]
    return rows, len(files)


def version(binary):
    try:
        return subprocess.run([binary, "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", required=True, type=Path)
    ap.add_argument("--bin", default="target/release/meterlake")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--tools", default="meterlake,duckdb,polars",
                    help="comma-separated subset to run (default: all three)")
    args = ap.parse_args()
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    if unknown := set(tools) - set(NOTES):
        sys.exit(f"unknown tool(s): {', '.join(sorted(unknown))}")
    if not args.input.is_file():
        sys.exit(f"input not found: {args.input}")
    if "meterlake" in tools and not (os.path.isfile(args.bin) and os.access(args.bin, os.X_OK)):
        sys.exit(f"meterlake binary not found or not executable: {args.bin} "
                 "(build with 'cargo build --release', set --bin / MLK_BIN, or pass --tools duckdb,polars)")

    with open(args.input, "rb") as f:
        input_lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    jobs = {
        "meterlake": lambda out: run_meterlake(args.bin, args.input, out),
        "duckdb": lambda out: run_duckdb(str(args.input), str(out)),
        "polars": lambda out: run_polars(str(args.input), str(out)),
    }

    results = {}
    for tool in tools:
        out = args.work / "out" / tool
        times, summary = [], None
        for i in range(args.runs):
            shutil.rmtree(out, ignore_errors=True)  # fresh output dir each run
            out.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            summary = jobs[tool](out)
            times.append(time.perf_counter() - t0)
            print(f"{tool} run {i + 1}/{args.runs}: {times[-1]:.2f} s", file=sys.stderr)
        rows, files = written(out)
        med = statistics.median(times)
        results[tool] = {"times_s": times, "median_s": med, "events_per_s": input_lines / med,
                         "rows_written": rows, "parquet_files": files, "note": NOTES[tool]}
        if summary is not None:
            results[tool]["summary"] = summary

    base = results.get("meterlake", {}).get("median_s")
    for r in results.values():
        r["ratio_vs_meterlake"] = r["median_s"] / base if base else None

    print(f"\nInput: {args.input} ({input_lines:,} lines, {args.input.stat().st_size / 1e6:.0f} MB), "
          f"{args.runs} runs each, {os.cpu_count()} cores\n")
    print("| tool | median s | events/s | ratio (peer / meterlake) | rows written | parquet files | notes |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for tool, r in results.items():
        ratio = f"{r['ratio_vs_meterlake']:.2f}x" if r["ratio_vs_meterlake"] else "n/a"
        note = r["note"]
        if s := r.get("summary"):
            note += "; " + ", ".join(f"{k}={s.get(k)}" for k in ("read", "accepted", "rejected", "duplicates"))
        print(f"| {tool} | {r['median_s']:.2f} | {r['events_per_s']:,.0f} | {ratio} | {r['rows_written']:,} "
              f"| {r['parquet_files']} | {note} |")
    print("\nRatio > 1 means meterlake is faster. events/s = input lines / median wall time. "
          "meterlake additionally validates every record, quarantines bad ones and drops duplicates; "
          "the peers do not dedup, so their row counts include duplicates (and, for DuckDB, NULL rows "
          "from malformed lines).")

    report = {"input": str(args.input), "input_lines": input_lines, "input_bytes": args.input.stat().st_size,
              "runs": args.runs, "cpu_count": os.cpu_count(),
              "versions": {"duckdb": duckdb.__version__, "polars": pl.__version__,
                           "meterlake": version(args.bin) if "meterlake" in tools else None},
              "tools": results}
    (args.work / "results.json").write_text(json.dumps(report, indent=2))
    print(f"\nwrote {args.work / 'results.json'}", file=sys.stderr)


if __name__ == "__main__":
    main()
