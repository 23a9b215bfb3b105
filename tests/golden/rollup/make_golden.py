"""Golden rollups for tests/it/rollup.rs, computed by DuckDB from events.ndjson.

Run: python3 -m venv /tmp/v && /tmp/v/bin/pip install duckdb==1.1.3 && /tmp/v/bin/python make_golden.py
It writes day_utc.csv and week_berlin.csv: every (tenant, meter, window) with the built-in
meters' aggregations (count, latest, sum, unique_count of user_id; `sum` for a meter with no
definition), with zero rows filling count/sum/unique_count series between their first and
last window.
"""
import duckdb

AGG = {
    "api_calls": "count(*)",
    "documents": "count(*)",
    "ai_tokens": "sum(value)",
    "ingest_bytes": "sum(value)",
    "active_users": "count(DISTINCT user_id)",
    "storage_bytes": "arg_max(value, ts)",
}
ZERO = {"api_calls", "documents", "ai_tokens", "ingest_bytes", "active_users"}

con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
con.execute(
    "CREATE TABLE ev AS SELECT id, ts::TIMESTAMPTZ AS ts, tenant_id, user_id, meter, value::DOUBLE AS value "
    "FROM read_json('events.ndjson', format='newline_delimited', columns={'id':'VARCHAR','ts':'VARCHAR',"
    "'tenant_id':'VARCHAR','user_id':'VARCHAR','meter':'VARCHAR','value':'DOUBLE'})"
)


def golden(unit, tz, out):
    # Window start: truncate the local wall time, then read it back in the zone.
    start = f"timezone('{tz}', date_trunc('{unit}', timezone('{tz}', ts)))"
    parts = []
    for meter in [r[0] for r in con.execute("SELECT DISTINCT meter FROM ev").fetchall()]:
        agg = AGG.get(meter, "sum(value)")
        parts.append(
            f"SELECT tenant_id, meter, {start} AS ws, {agg}::DOUBLE AS value, count(*) AS n "
            f"FROM ev WHERE meter = '{meter}' GROUP BY ALL"
        )
    con.execute("CREATE OR REPLACE TABLE r AS " + " UNION ALL ".join(parts))
    zero = ", ".join(f"'{m}'" for m in ZERO)
    # Every window of each zero-filled series' range, stepped in local time.
    con.execute(f"""
        CREATE OR REPLACE TABLE grid AS
        SELECT tenant_id, meter, timezone('{tz}', g.generate_series) AS ws
        FROM (SELECT tenant_id, meter, timezone('{tz}', min(ws)) AS a, timezone('{tz}', max(ws)) AS b
              FROM r WHERE meter IN ({zero}) OR meter NOT IN ({", ".join(f"'{m}'" for m in AGG)})
              GROUP BY ALL) s,
             generate_series(s.a, s.b, INTERVAL 1 {unit}) g
    """)
    rows = con.execute(f"""
        SELECT tenant_id, meter,
               strftime(ws AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') AS window_start,
               strftime(timezone('{tz}', timezone('{tz}', ws) + INTERVAL 1 {unit}) AT TIME ZONE 'UTC', '%Y-%m-%dT%H:%M:%SZ') AS window_end,
               printf('%.6f', value) AS value, n AS event_count
        FROM (SELECT g.tenant_id, g.meter, g.ws, coalesce(r.value, 0) AS value, coalesce(r.n, 0) AS n
              FROM grid g LEFT JOIN r USING (tenant_id, meter, ws)
              UNION ALL
              SELECT tenant_id, meter, ws, value, n FROM r
              WHERE NOT (meter IN ({zero}) OR meter NOT IN ({", ".join(f"'{m}'" for m in AGG)})))
        ORDER BY tenant_id, meter, ws
    """).fetchall()
    with open(out, "w") as f:
        f.write("tenant_id,meter,window_start,window_end,value,event_count\n")
        for r in rows:
            f.write(",".join(str(x) for x in r) + "\n")


golden("day", "UTC", "day_utc.csv")
golden("week", "Europe/Berlin", "week_berlin.csv")
