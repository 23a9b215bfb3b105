"""OpenMeter's official Python SDK against the real `meterlake serve`.

Usage: python sdk_test.py MLK_BIN
Run by tests/openmeter.sh, which installs the pinned SDK (openmeter==1.0.0b236) and DuckDB.

Checks, each against a fold over the events this script sent:
- single and batch ingest through `client.events`, resends counted once;
- a kill -9 in the middle (events acknowledged before it are kept, exactly once), then the
  lake's contents read back with DuckDB;
- `client.meters.query` (POST) and `query_json` (GET) of a `$.usage.tokens` meter grouped by
  `model`, by hour and by day in non-UTC zones (one with a half-hour offset);
- bad events answered 400 problem+json naming the field, with nothing stored;
- a tenant key sending or querying another subject: 403.
"""

import datetime as dt
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
from collections import defaultdict
from zoneinfo import ZoneInfo

import duckdb
from corehttp.exceptions import HttpResponseError
from openmeter import Client
from openmeter.models import MeterQueryRequest

BIN = os.path.abspath(sys.argv[1])
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TENANTS = ["acme-001", "globex-002", "initech-003"]
MODELS = ["gpt", "claude", None]

METERS = """
[[meter]]
name = "tokens"
event = "prompt"
aggregation = "sum"
value_property = "$.usage.tokens"
group_by = { model = "$.model" }

[[meter]]
name = "prompts"
event = "prompt"
aggregation = "count"
"""


class Server:
    def __init__(self, lake, config):
        self.p = subprocess.Popen(
            [BIN, "serve", "--lake", lake, "--config", config, "--bind", "127.0.0.1:0",
             "--flush-ms", "600000", "--compact-files", "0"],
            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        for line in self.p.stderr:
            if "listening on " in line:
                self.base = line.split("listening on ")[1].strip()
                break
        else:
            raise SystemExit("serve exited before listening")
        threading.Thread(target=lambda: [None for _ in self.p.stderr], daemon=True).start()

    def kill9(self):
        self.p.kill()
        self.p.wait()

    def stop(self):
        self.p.terminate()
        assert self.p.wait(timeout=60) == 0, "serve exits cleanly on SIGTERM"


def key(lake, tenant=None):
    args = [BIN, "serve-keys", "add", "--lake", lake]
    args += ["--tenant", tenant] if tenant else ["--admin"]
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def status_of(call):
    try:
        call()
    except HttpResponseError as e:
        body = json.loads(e.response.text())
        assert e.response.headers["content-type"] == "application/problem+json", e.response.headers
        assert body["status"] == e.status_code and body["title"] and body["detail"], body
        return e.status_code, body.get("field")
    return 204, None


def main():
    rng = random.Random(7)
    tmp = tempfile.mkdtemp()
    lake = os.path.join(tmp, "lake")
    with open(os.path.join(tmp, "meters.toml"), "w") as f:
        f.write(METERS)
    config = os.path.join(tmp, "meterlake.toml")
    with open(config, "w") as f:
        f.write(f"""[paths]
lake = "{lake}"
plans = "{REPO}/data/plans.toml"
tenants = "{REPO}/data/tenants.csv"
meters = "{tmp}/meters.toml"
""")
    admin_key = key(lake)
    acme_key = key(lake, "acme-001")

    # Two days of prompts, whole minutes, ending an hour ago.
    end = dt.datetime.now(dt.timezone.utc).replace(second=0, microsecond=0) - dt.timedelta(hours=1)
    start = end - dt.timedelta(hours=48)
    sent = {}  # (source, id) -> event

    def event(i):
        t = start + dt.timedelta(minutes=rng.randrange(48 * 60))
        data = {"usage": {"tokens": rng.randrange(1, 5000)}}
        model = rng.choice(MODELS)
        if model:
            data["model"] = model
        return {"id": f"ev-{i}", "source": "sdk-test", "specversion": "1.0", "type": "prompt",
                "subject": rng.choice(TENANTS), "time": t.isoformat(), "data": data}

    events = [event(i) for i in range(3000)]
    s = Server(lake, config)
    admin = Client(endpoint=s.base, token=admin_key)
    # Single events, then batches of 250; every fourth batch is sent twice.
    for e in events[:20]:
        admin.events.ingest_event(e)
        sent[(e["source"], e["id"])] = e
    batches = [events[i:i + 250] for i in range(20, 1500, 250)]
    for n, b in enumerate(batches):
        admin.events.ingest_events(b)
        if n % 4 == 0:
            admin.events.ingest_events(b)
        sent.update({(e["source"], e["id"]): e for e in b})
    # kill -9 with everything acknowledged still in the write-ahead log (no flush yet).
    s.kill9()
    s = Server(lake, config)
    admin = Client(endpoint=s.base, token=admin_key)
    # The batch before the kill again (all duplicates), then the rest.
    admin.events.ingest_events(batches[-1])
    for i in range(1500, len(events), 500):
        b = events[i:i + 500]
        admin.events.ingest_events(b)
        sent.update({(e["source"], e["id"]): e for e in b})
    assert len(sent) == len(events)

    # Bad events: 400 problem+json naming the field, nothing stored.
    good = dict(events[0], id="bad-0")
    bad = [
        ({k: v for k, v in good.items() if k != "subject"}, "subject"),
        (dict(good, specversion="0.3"), "specversion"),
        (dict(good, data="not a JSON object"), "data"),
        (dict(good, datacontenttype="text/plain"), "datacontenttype"),
    ]
    for body, field in bad:
        raw = json.dumps(body).encode()
        assert status_of(lambda: admin.events.ingest_event(raw)) == (400, field), (body, field)
        # In a batch with good events, the whole batch is refused.
        batch = json.dumps([dict(good, id="bad-ok"), body]).encode()
        assert status_of(lambda: admin.events.ingest_events(batch)) == (400, field)
    # A tenant key sends its own subject only.
    acme = Client(endpoint=s.base, token=acme_key)
    other = dict(good, id="bad-403", subject="globex-002")
    assert status_of(lambda: acme.events.ingest_event(other)) == (403, "subject")
    assert status_of(lambda: Client(endpoint=s.base, token="nope").events.ingest_event(good))[0] == 401

    # Queries, against a fold of what was sent.
    def fold(zone, size, by_subject):
        z = ZoneInfo(zone)
        out = defaultdict(float)
        for e in sent.values():
            local = dt.datetime.fromisoformat(e["time"]).astimezone(z)
            if size == "HOUR":
                w = local.replace(minute=0)
            else:
                w = local.replace(hour=0, minute=0)
            w = w.astimezone(dt.timezone.utc)
            k = (w, e["subject"] if by_subject else None, e["data"].get("model"))
            out[k] += e["data"]["usage"]["tokens"]
        return dict(out)

    def rows(result, by_subject):
        got = {}
        for r in result.data:
            k = (r.window_start.astimezone(dt.timezone.utc), r.subject if by_subject else None,
                 r.group_by.get("model"))
            assert k not in got, k
            got[k] = r.value
        return got

    frm, to = start - dt.timedelta(days=1), end + dt.timedelta(days=1)
    for zone, size in [("America/New_York", "HOUR"), ("Asia/Kolkata", "DAY"), ("Europe/Berlin", "DAY")]:
        want = fold(zone, size, True)
        req = MeterQueryRequest(from_property=frm, to=to, window_size=size, window_time_zone=zone,
                                group_by=["subject", "model"])
        got = rows(admin.meters.query("tokens", req), True)
        assert got == want, (zone, size, len(got), len(want))
        got = rows(admin.meters.query_json("tokens", from_parameter=frm, to=to, window_size=size,
                                           window_time_zone=zone, group_by=["model"]), False)
        assert got == fold(zone, size, False), (zone, size, "GET")
    # A tenant key sees its own subject, asked or not; another's is refused.
    res = acme.meters.query_json("tokens", window_size="DAY", group_by=["model"])
    want = {k: v for k, v in fold("UTC", "DAY", True).items() if k[1] == "acme-001"}
    assert rows(res, True) == want
    assert status_of(lambda: acme.meters.query_json("tokens", subject=["globex-002"])) == (403, "subject")
    # The meters as OpenMeter lists them.
    meters = {m.slug: m for m in admin.meters.list()}
    assert meters["tokens"].value_property == "$.usage.tokens" and meters["tokens"].group_by == {"model": "$.model"}
    assert meters["prompts"].aggregation == "COUNT" and meters["prompts"].event_type == "prompt"
    total = admin.meters.query_json("prompts")
    assert [r.value for r in total.data] == [float(len(sent))], total.data

    # The lake, read by DuckDB after a clean stop: every event exactly once, as sent.
    s.stop()
    con = duckdb.connect()
    files = os.path.join(lake, "events", "date=*", "*.parquet")
    df = con.execute(f"""
        SELECT id, tenant_id, meter, epoch_us(ts) AS us,
               CAST(json_extract(properties, '$."usage.tokens"') AS BIGINT) AS tokens,
               json_extract_string(properties, '$.model') AS model
        FROM read_parquet('{files}', hive_partitioning = false)
        WHERE meter = 'prompt'
    """).fetchall()
    ids = [r[0] for r in df]
    assert len(ids) == len(set(ids)) == len(sent), (len(ids), len(set(ids)), len(sent))
    for (i, tenant, meter, us, tokens, model) in df:
        e = sent[("sdk-test", i)]
        assert tenant == e["subject"] and tokens == e["data"]["usage"]["tokens"], (i, tenant, tokens)
        assert model == e["data"].get("model")
        assert us == int(dt.datetime.fromisoformat(e["time"]).timestamp() * 1_000_000)
    print(f"openmeter python sdk: {len(sent)} events exactly once across a kill -9; "
          f"queries equal the fold; bad events refused")


if __name__ == "__main__":
    main()
