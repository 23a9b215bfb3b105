"""The same daily rollup in Spark SQL and in meterlake, compared row for row.

Spark reads the lake as it is: the events (`events/date=YYYY-MM-DD/*.parquet`) and the
rollups (`rollups/granularity=day/by=none/tz=UTC/period=YYYY-MM-DD/*.parquet`), both
Hive-partitioned Parquet. Spark computes, per tenant, meter and UTC day, the meter's
aggregation (count, sum, max, latest: the last reading by time, the largest of a tie;
unique_count: distinct users; a meter not in the file sums) and the event count. Every
such row must be in meterlake's rollup with the same numbers; meterlake's other rows are
the zero rows it writes for the days a count, sum or distinct-count meter had no event.

usage: rollup.py LAKE METERS_TOML
"""
import math, sys, tomllib

from pyspark.sql import SparkSession

lake, meters_file = sys.argv[1], sys.argv[2]
with open(meters_file, "rb") as fh:
    meters = {m["name"]: m["aggregation"] for m in tomllib.load(fh)["meter"]}

spark = (SparkSession.builder.master("local[2]").appName("meterlake-spark")
         .config("spark.sql.session.timeZone", "UTC")
         .config("spark.ui.enabled", "false")
         .config("spark.ui.showConsoleProgress", "false")
         .getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
spark.read.parquet(f"{lake}/events").createOrReplaceTempView("events")
spark.read.parquet(f"{lake}/rollups/granularity=day").createOrReplaceTempView("rollups")

agg = {
    "count": "CAST(count(*) AS DOUBLE)",
    "sum": "coalesce(sum(value), 0D)",
    "max": "max(value)",
    "latest": "max_by(value, struct(value IS NOT NULL, ts, value))",
    "unique_count": "CAST(count(DISTINCT user_id) AS DOUBLE)",
}
# One query per aggregation keeps each one plain SQL; a meter not in the file sums.
parts = []
for a, expr in agg.items():
    names = [m for m, x in meters.items() if x == a]
    where = (f"meter IN ({', '.join(repr(n) for n in names)})" if names else "false")
    if a == "sum":
        where = f"({where}) OR meter NOT IN ({', '.join(repr(n) for n in meters)})"
    parts.append(f"""
        SELECT tenant_id, meter, date_trunc('DAY', ts) AS window_start,
               {expr} AS value, count(*) AS event_count
        FROM events WHERE {where}
        GROUP BY tenant_id, meter, date_trunc('DAY', ts)""")
expected = {(r.tenant_id, r.meter, r.window_start): (r.value, r.event_count)
            for r in spark.sql(" UNION ALL ".join(parts)).collect()}
got_rows = spark.sql("""
    SELECT tenant_id, meter, window_start, window_end, value, event_count, by, tz, period
    FROM rollups""").collect()
got = {}
for r in got_rows:
    key = (r.tenant_id, r.meter, r.window_start)
    assert key not in got, f"two rollup rows for {key}"
    assert r.by == "none" and r.tz == "UTC", r
    assert (r.window_end - r.window_start).total_seconds() == 86400, r
    assert str(r.period) == r.window_start.strftime("%Y-%m-%d"), r
    got[key] = (r.value, r.event_count)

bad = []
for key, (v, n) in sorted(expected.items()):
    if key not in got:
        bad.append(f"missing in meterlake: {key} = {v}, {n} events")
        continue
    gv, gn = got[key]
    if gn != n or not math.isclose(gv, v, rel_tol=1e-12, abs_tol=1e-9):
        bad.append(f"{key}: Spark {v} over {n} events, meterlake {gv} over {gn}")
zeros = 0
for key, (gv, gn) in got.items():
    if key in expected:
        continue
    agg_of = meters.get(key[1], "sum")
    if gn == 0 and gv == 0 and agg_of in ("count", "sum", "unique_count"):
        zeros += 1
    else:
        bad.append(f"only in meterlake: {key} = {gv}, {gn} events ({agg_of})")
if bad:
    sys.exit("spark: the rollups differ:\n  " + "\n  ".join(bad[:20]) + f"\n  ({len(bad)} in all)")
events = spark.sql("SELECT count(*) AS n FROM events").collect()[0].n
print(f"spark: {spark.version} read {events} events; its daily rollup equals meterlake's on "
      f"{len(expected)} rows ({len(meters)} meters: {', '.join(sorted(set(meters.values())))}); "
      f"meterlake adds {zeros} zero rows for days without events")
spark.stop()
