"""Reads meterlake's encrypted lake with DuckDB and pyarrow, with and without the key.

Usage: readers.py KEY_FILE ENCRYPTED_LAKE PLAIN_LAKE ENCRYPTED_OUT
The encrypted lake (from `run` with MLK_ENCRYPTION_KEY_FILE) must hold the same events as
the plain one (an `ingest` of the same inputs), per tenant and meter; its rollups and the
run's Parquet reports must read too. Exits non-zero with a message on any mismatch.
"""
import base64
import glob
import sys

import duckdb
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe

key_file, enc, plain, out = sys.argv[1:5]
key_b64 = open(key_file).read().strip()

con = duckdb.connect()
con.execute(f"PRAGMA add_parquet_key('lake', '{key_b64}')")
q = """SELECT tenant_id, meter, count(*) AS n, sum(value) AS v
       FROM read_parquet('{glob}', hive_partitioning = true{enc})
       GROUP BY ALL ORDER BY ALL"""
got = con.execute(q.format(glob=f"{enc}/events/**/*.parquet", enc=", encryption_config = {footer_key: 'lake'}")).fetchall()
want = duckdb.connect().execute(q.format(glob=f"{plain}/events/**/*.parquet", enc="")).fetchall()
assert got == want, f"DuckDB with the key: {len(got)} groups differ from the plain lake's {len(want)}"
print(f"duckdb with the key: {sum(r[2] for r in got)} events in {len(got)} tenant x meter groups, as in the plain lake")

for what, pattern in [("rollups", f"{enc}/rollups/**/*.parquet"), ("reports", f"{out}/reports/**/*.parquet")]:
    files = sorted(glob.glob(pattern, recursive=True))
    assert files, f"no {what} files under {pattern}"
    for f in files:
        con.execute(f"SELECT count(*) FROM read_parquet('{f}', encryption_config = {{footer_key: 'lake'}})").fetchall()
    print(f"duckdb with the key: {len(files)} {what} files read")

try:
    duckdb.connect().execute(f"SELECT count(*) FROM read_parquet('{enc}/events/**/*.parquet')").fetchall()
    sys.exit("DuckDB read the encrypted lake without the key")
except duckdb.Error as e:
    assert "encrypt" in str(e).lower(), e
    print("duckdb without the key: refused (" + str(e).splitlines()[0][:90] + ")")

props = pe.create_decryption_properties(base64.b64decode(key_b64))
files = sorted(glob.glob(f"{enc}/events/**/*.parquet", recursive=True))
rows = sum(pq.read_table(f, decryption_properties=props).num_rows for f in files)
assert rows == sum(r[2] for r in want), f"pyarrow with the key: {rows} rows"
print(f"pyarrow with the key: {rows} rows")
for f in files[:3]:
    try:
        pq.read_table(f)
        sys.exit(f"pyarrow read {f} without the key")
    except OSError as e:
        assert "encrypt" in str(e).lower() or "decrypt" in str(e).lower(), e
    try:
        pq.read_metadata(f)
        sys.exit(f"pyarrow read the statistics of {f} without the key")
    except OSError:
        pass
print("pyarrow without the key: refused, statistics included")
