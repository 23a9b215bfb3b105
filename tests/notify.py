"""Alert notifications end to end: e-mail over SMTP (STARTTLS + AUTH) and Slack, with
escalation driven by the `--at` clock of `meterlake alerts deliver`. Run by tests/notify.sh,
which runs the batch job on data/ (raising alerts into OUT/lake) and makes the venv.

Servers, on 127.0.0.1 free ports, started here and stopped at the end:
- SMTP (aiosmtpd): STARTTLS required, AUTH required and only over TLS, one account
  (meterlake / s3cret-smtp); its certificate (localhost, 127.0.0.1) is issued by a trustme
  CA whose PEM is written to OUT/ca.pem for the channel's `ca_file`. Every message is kept
  with its envelope and whether its session was TLS and authenticated; every login try is
  kept with its outcome.
- Slack incoming webhook: POST /slack bodies kept, answered 200 `ok`.

Inputs written to OUT: tenants.csv (data/'s plus a notify_email column, set for
globex-002), meterlake.toml (an e-mail channel, a Slack channel, one rule on threshold,
limit_exceeded and cost_over alerts escalating to Slack after 4 h), digest.toml and
quiet.toml (the same rule as a digest, and within quiet hours). OUT/lake is copied to
lake2..lake4 before the first delivery, for the checks that need a fresh lake.

Checks (`alerts deliver --lake L --config C --tenants OUT/tenants.csv --at T --output json`,
T0 = 2026-12-01T10:00:00Z):
1. at T0, one e-mail per matching alert: multipart/alternative (text/plain + text/html),
   subject naming the tenant and severity, plain body with the alert's message and id,
   sent to ops@meterlake.example and, for globex-002 only, to billing@globex.example,
   after a successful login over TLS; no Slack post;
2. again at T0: nothing sent twice;
3. after acknowledging one alert: nothing escalated at T0+3h; at T0+5h every other
   matching alert posted to Slack once (text fallback, blocks opening with a header, the
   alert id in the blocks), the acknowledged one never; nothing new at T0+6h;
4. `alerts list --all --output json` records a level-0 `sent` on ops-mail for each, and a
   level-1 `sent` on chat for the unacknowledged ones;
5. digest (lake2): one e-mail per tenant, listing every one of its alert ids;
6. quiet hours (lake3): nothing sent, every matching alert deferred;
7. wrong SMTP password (lake4): exit 2, failures recorded with their error; the next run
   with the right password sends them all.
Stops at the first failed check, printing what was expected and what came, and exits 1.

Usage: notify.py BIN OUT   (from the repository root; `tests/notify.sh [BINARY]` runs all)
"""

import csv
import email
import email.policy
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

SMTP_USER, SMTP_PASSWORD = "meterlake", "s3cret-smtp"
SENDER = "alerts@meterlake.example"
OPS = "ops@meterlake.example"
TENANT_MAIL = {"globex-002": "billing@globex.example"}
RULE = "to-ops"
MAIL_CHANNEL, CHAT_CHANNEL = "ops-mail", "chat"
KINDS = ["threshold", "limit_exceeded", "cost_over"]
ESCALATE_HOURS = 4
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)
ALERT_FIELDS = ["id", "kind", "tenant_id", "meter", "threshold", "severity", "message",
                "raised_at", "acknowledged_at", "deliveries"]
COUNTS = ["sent", "failed", "deferred", "escalated", "messages"]
TIMEOUT_S = 900  # one CLI call; a hang is a failure, not a stuck CI


# ---------------------------------------------------------------------------- reporting

class Failure(Exception):
    """A failed check: what was expected and what came."""


def short(x, limit=1500):
    s = x if isinstance(x, str) else json.dumps(x, default=str)
    return s if len(s) <= limit else s[:limit] + f"... ({len(s)} chars)"


def expect(ok, what, expected=None, got=None):
    if not ok:
        raise Failure(f"{what}\n  expected: {short(expected)}\n  got:      {short(got)}")
    print(f"PASS {what}", flush=True)


def expect_eq(got, want, what):
    expect(got == want, what, want, got)


def expect_all(items, problem, what):
    """`problem(item)` is None when the item is right, else what is wrong with it."""
    bad = [p for p in map(problem, items) if p is not None]
    expect(not bad, what, "no problem", f"{len(bad)} of {len(items)}: " + "; ".join(bad[:5]))


# ------------------------------------------------------------------------------ servers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mailbox:
    """The SMTP server's side: the messages it accepted and every login try."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []  # {mail_from, rcpt_tos, raw, tls, authenticated, login}
        self.logins = []    # {login, mechanism, ok, tls}

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        """aiosmtpd's authenticator: only meterlake / s3cret-smtp."""
        login = getattr(auth_data, "login", b"").decode(errors="replace")
        password = getattr(auth_data, "password", b"").decode(errors="replace")
        ok = (login, password) == (SMTP_USER, SMTP_PASSWORD)
        with self.lock:
            self.logins.append({"login": login, "mechanism": mechanism, "ok": ok,
                                "tls": session.ssl is not None})
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    async def handle_DATA(self, server, session, envelope):
        login = session.auth_data.login.decode() if session.auth_data else None
        with self.lock:
            self.messages.append({
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "raw": envelope.original_content,
                "tls": session.ssl is not None,
                "authenticated": bool(session.authenticated),
                "login": login,
            })
        return "250 OK"

    def mark(self):
        with self.lock:
            return len(self.messages), len(self.logins)

    def since(self, mark):
        with self.lock:
            return list(self.messages[mark[0]:]), list(self.logins[mark[1]:])


def quiet_aiosmtpd():
    """aiosmtpd 1.4 logs a deprecation warning on every successful AUTH (its own use of
    Session.login_data); keep its other messages (errors in a session) on stderr."""
    logging.getLogger("mail.log").addFilter(
        lambda record: "login_data is deprecated" not in record.getMessage())


def start_smtp(mailbox, server_cert):
    quiet_aiosmtpd()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(tls)
    controller = Controller(
        mailbox, hostname="127.0.0.1", port=free_port(), tls_context=tls,
        require_starttls=True, auth_required=True, auth_require_tls=True,
        authenticator=mailbox.authenticate)
    controller.start()
    return controller


class SlackInbox:
    """The Slack incoming webhook's side: every POST, with its path and parsed JSON."""

    def __init__(self):
        self.lock = threading.Lock()
        self.posts = []  # {path, content_type, body, json}

    def record(self, path, content_type, body):
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        with self.lock:
            self.posts.append({"path": path, "content_type": content_type,
                               "body": body.decode(errors="replace"), "json": parsed})

    def mark(self):
        with self.lock:
            return len(self.posts)

    def since(self, mark):
        with self.lock:
            return list(self.posts[mark:])


def read_body(req):
    if req.headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(req.rfile.readline().split(b";")[0], 16)
            chunk = req.rfile.read(size + 2)[:size]
            if size == 0:
                return body
            body += chunk
    return req.rfile.read(int(req.headers.get("Content-Length", 0)))


def start_slack(inbox):
    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            body = read_body(self)
            inbox.record(self.path, self.headers.get("Content-Type", ""), body)
            ok = self.path == "/slack"
            self.reply(200 if ok else 404, b"ok" if ok else b"no_service")

        def reply(self, status, text):
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(text)))
            self.end_headers()
            self.wfile.write(text)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# ------------------------------------------------------------------------------- inputs

def write_tenants(path):
    """data/tenants.csv plus notify_email (globex-002's address, the others empty)."""
    with open("data/tenants.csv", newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    tenant = rows[0].index("tenant_id")
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(rows[0] + ["notify_email"])
        for r in rows[1:]:
            w.writerow(r + [TENANT_MAIL.get(r[tenant], "")])


def toml_str(s):
    return json.dumps(s)  # a TOML basic string for these ASCII values


def notify_config(path, smtp_port, ca_file, *, digest=False, quiet_hours=None,
                  escalate=True):
    lines = [
        f"[notify.channels.{MAIL_CHANNEL}]",
        'kind = "email"',
        'host = "127.0.0.1"',
        f"port = {smtp_port}",
        'tls = "starttls"',
        f"username = {toml_str(SMTP_USER)}",
        'password_env = "MLK_SMTP_PASSWORD"',
        f"from = {toml_str('meterlake <' + SENDER + '>')}",
        f"to = [{toml_str(OPS)}]",
        "tenant_recipients = true",
        f"ca_file = {toml_str(ca_file)}",
        "",
        f"[notify.channels.{CHAT_CHANNEL}]",
        'kind = "slack"',
        'url_env = "MLK_SLACK_URL"',
        "",
        "[[notify.rules]]",
        f"name = {toml_str(RULE)}",
        f"channels = [{toml_str(MAIL_CHANNEL)}]",
        f"kinds = {json.dumps(KINDS)}",
        "severities = []          # empty = all",
    ]
    if digest:
        lines.append("digest = true")
    if quiet_hours:
        lines.append(f"quiet_hours = {toml_str(quiet_hours)}")
    if escalate:
        lines += ["[[notify.rules.escalate]]", f"after_hours = {ESCALATE_HOURS}",
                  f"channels = [{toml_str(CHAT_CHANNEL)}]"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def at(hours=0.0):
    return (T0 + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------- CLI

class Meterlake:
    """The binary, with the notification environment (and no other MLK_ variable)."""

    def __init__(self, binary, out, slack_url):
        self.binary, self.out = binary, out
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("MLK_")}
        self.env["MLK_SLACK_URL"] = slack_url

    def run(self, args, password=SMTP_PASSWORD):
        env = dict(self.env, MLK_SMTP_PASSWORD=password)
        cmd = [self.binary, *args]
        try:
            return subprocess.run(cmd, env=env, capture_output=True, text=True,
                                  timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise Failure(f"`{' '.join(cmd)}` did not finish in {TIMEOUT_S} s")

    def ok(self, args, what):
        p = self.run(args)
        expect(p.returncode == 0, what, "exit 0", f"exit {p.returncode}: {p.stderr.strip()}")
        return p.stdout

    def alerts(self, lake):
        out = self.ok(["alerts", "list", "--lake", lake, "--all", "--output", "json"],
                      f"alerts list --all on {os.path.basename(lake)}")
        return json.loads(out)

    def deliver(self, lake, config, when, want_code=0, password=SMTP_PASSWORD):
        """`alerts deliver` at `when`; checks its exit code, returns its JSON."""
        args = ["alerts", "deliver", "--lake", lake, "--config", config,
                "--tenants", f"{self.out}/tenants.csv", "--at", when, "--output", "json"]
        p = self.run(args, password)
        what = f"deliver {os.path.basename(lake)} with {os.path.basename(config)} at {when}"
        expect(p.returncode == want_code, f"{what}: exit {want_code}", f"exit {want_code}",
               f"exit {p.returncode}: {p.stderr.strip()}")
        try:
            d = json.loads(p.stdout)
        except ValueError:
            raise Failure(f"{what}: stdout is not JSON: {short(p.stdout)}\n"
                          f"stderr: {short(p.stderr)}")
        if not isinstance(d, dict):
            raise Failure(f"{what}: stdout is not a JSON object: {short(p.stdout)}")
        expect(instant(d.get("at")) == instant(when), f"{what}: says the instant it is for",
               when, d.get("at"))
        return d


def instant(s):
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None


def counts(d):
    return {k: d.get(k) for k in COUNTS}


# -------------------------------------------------------------------------- e-mail views

def parse(msg):
    return email.message_from_bytes(msg["raw"], policy=email.policy.default)


def plain_body(m):
    part = m.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""


def ids_in(text, ids):
    return {i for i in ids if i in text}


def one_per_alert(found, ids, what):
    """`found`: per message (or post) the set of alert ids it mentions; each must mention
    exactly one, and together every one of `ids` exactly once."""
    expect_all(found, lambda s: None if len(s) == 1 else f"mentions {sorted(s)}",
               f"{what}: each mentions exactly one alert id")
    got = sorted(i for s in found for i in s)
    expect_eq(got, sorted(ids), f"{what}: every alert exactly once")


def mail_problem(alert, msg):
    m = parse(msg)
    if m.get_content_type() != "multipart/alternative":
        return f"{alert['id']}: {m.get_content_type()}, not multipart/alternative"
    types = {p.get_content_type() for p in m.iter_parts()}
    if not {"text/plain", "text/html"} <= types:
        return f"{alert['id']}: parts {sorted(types)}"
    return None


def subject_problem(alert, msg):
    subject = str(parse(msg)["Subject"] or "")
    if alert["tenant_id"] in subject and alert["severity"].lower() in subject.lower():
        return None
    return f"{alert['id']} ({alert['tenant_id']}, {alert['severity']}): subject {subject!r}"


def body_problem(alert, msg):
    body = plain_body(parse(msg))
    if alert["message"] in body and alert["id"] in body:
        return None
    return f"{alert['id']}: message {alert['message']!r} or id missing from {body[:300]!r}"


def rcpt_problem(tenant, msg, about=""):
    want = {OPS} | ({TENANT_MAIL[tenant]} if tenant in TENANT_MAIL else set())
    extra = set(TENANT_MAIL.values()) - want
    rcpts = set(msg["rcpt_tos"])
    if want <= rcpts and not rcpts & extra:
        return None
    return f"{about or tenant}: recipients {sorted(rcpts)}, want {sorted(want)}"


def session_problem(msg):
    if msg["tls"] and msg["authenticated"] and msg["login"] == SMTP_USER:
        return None
    return f"tls={msg['tls']} authenticated={msg['authenticated']} login={msg['login']}"


# ------------------------------------------------------------------------------- checks

class Run:
    """The state the checks share: the CLI, the servers and the alerts."""

    def __init__(self, mlk, mailbox, slack, out, smtp_port):
        self.mlk, self.mailbox, self.slack, self.out = mlk, mailbox, slack, out
        self.smtp_port = smtp_port
        self.lake = f"{out}/lake"
        self.config = f"{out}/meterlake.toml"
        self.matching = []
        self.acked = None

    def ids(self):
        return [a["id"] for a in self.matching]

    def deliver_quietly(self, lake, config, when, want, what, want_code=0,
                        password=SMTP_PASSWORD):
        """A delivery expected to send no e-mail and post nothing, with these counts."""
        mail, posts = self.mailbox.mark(), self.slack.mark()
        d = self.mlk.deliver(lake, config, when, want_code, password)
        expect_eq(counts(d), want, f"{what}: counts")
        expect_eq(len(self.mailbox.since(mail)[0]), 0, f"{what}: no e-mail")
        expect_eq(len(self.slack.since(posts)), 0, f"{what}: no Slack post")
        return d


def check_alert_list(r):
    alerts = r.mlk.alerts(r.lake)
    expect_all(alerts, lambda a: None if all(k in a for k in ALERT_FIELDS)
               else f"{a.get('id')}: lacks {[k for k in ALERT_FIELDS if k not in a]}",
               f"every alert has {', '.join(ALERT_FIELDS)}")
    expect_all(alerts, lambda a: None if a["deliveries"] == [] else f"{a['id']}",
               "no alert has a delivery before the first `alerts deliver`")
    r.matching = sorted((a for a in alerts if a["kind"] in KINDS), key=lambda a: a["id"])
    expect(r.matching, f"the batch job raised alerts of kinds {KINDS}", "some", 0)
    tenants = {a["tenant_id"] for a in r.matching}
    expect(set(TENANT_MAIL) <= tenants, "globex-002 has matching alerts (its notify_email)",
           sorted(TENANT_MAIL), sorted(tenants))
    print(f"     {len(r.matching)} of {len(alerts)} alerts match the rule, "
          f"{len(tenants)} tenants", flush=True)
    for i in (2, 3, 4):
        shutil.copytree(r.lake, f"{r.lake}{i}")
    return alerts


def check_first_delivery(r):
    n = len(r.matching)
    mail, posts = r.mailbox.mark(), r.slack.mark()
    d = r.mlk.deliver(r.lake, r.config, at(0))
    expect_eq(counts(d), {"sent": n, "failed": 0, "deferred": 0, "escalated": 0,
                          "messages": n}, "deliver at T0: counts")
    messages, logins = r.mailbox.since(mail)
    expect_eq(len(messages), n, "one e-mail per matching alert (no digest)")
    ids = r.ids()
    one_per_alert([ids_in(plain_body(parse(m)), ids) for m in messages], ids, "the e-mails")
    by_id = {a["id"]: a for a in r.matching}
    pairs = [(by_id[next(iter(ids_in(plain_body(parse(m)), ids)))], m) for m in messages]
    expect_all(pairs, lambda p: mail_problem(*p),
               "every e-mail is multipart/alternative with text/plain and text/html parts")
    expect_all(pairs, lambda p: subject_problem(*p),
               "every subject names the alert's tenant and severity")
    expect_all(pairs, lambda p: body_problem(*p),
               "every plain body has the alert's message and id")
    expect_all(pairs, lambda p: rcpt_problem(p[0]["tenant_id"], p[1], p[0]["id"]),
               f"every e-mail goes to {OPS}, and globex-002's also to its notify_email")
    expect_all(messages, lambda m: None if m["mail_from"] == SENDER else m["mail_from"],
               f"every envelope sender is {SENDER}")
    expect_all(messages, session_problem, "every e-mail came in a TLS session logged in "
               f"as {SMTP_USER}")
    expect(logins and all(x["ok"] and x["tls"] for x in logins),
           "the server's authenticator accepted every login, each over TLS",
           "logins, all ok over TLS", logins)
    expect_eq(len(r.slack.since(posts)), 0, "no Slack post at T0")


def check_rerun(r):
    zero = dict.fromkeys(COUNTS, 0)
    r.deliver_quietly(r.lake, r.config, at(0), zero, "deliver at T0 again (nothing twice)")


def acknowledge_one(r):
    r.acked = r.matching[0]["id"]
    r.mlk.ok(["alerts", "ack", r.acked, "--lake", r.lake, "--by", "test"],
             f"alerts ack {r.acked}")


def block_strings(x):
    """Every string in a Slack blocks structure."""
    if isinstance(x, str):
        return [x]
    if isinstance(x, dict):
        return [s for v in x.values() for s in block_strings(v)]
    if isinstance(x, list):
        return [s for v in x for s in block_strings(v)]
    return []


def post_problem(post):
    j = post["json"]
    if post["path"] != "/slack":
        return f"posted to {post['path']}"
    if not isinstance(j, dict):
        return f"not a JSON object: {post['body'][:200]!r}"
    if not isinstance(j.get("text"), str) or not j["text"].strip():
        return f"no text fallback: {post['body'][:200]!r}"
    blocks = j.get("blocks")
    if not isinstance(blocks, list) or not blocks or not isinstance(blocks[0], dict) \
            or blocks[0].get("type") != "header":
        return f"blocks do not open with a header: {post['body'][:200]!r}"
    return None


def check_escalation(r):
    zero = dict.fromkeys(COUNTS, 0)
    r.deliver_quietly(r.lake, r.config, at(3), zero, "deliver at T0+3h (before the delay)")
    unacked = [i for i in r.ids() if i != r.acked]
    n = len(unacked)
    mail, posts = r.mailbox.mark(), r.slack.mark()
    d = r.mlk.deliver(r.lake, r.config, at(5))
    expect_eq(counts(d), {"sent": n, "failed": 0, "deferred": 0, "escalated": n,
                          "messages": n}, "deliver at T0+5h: counts (all but the acked)")
    expect_eq(len(r.mailbox.since(mail)[0]), 0, "deliver at T0+5h: no e-mail")
    got = r.slack.since(posts)
    expect_eq(len(got), n, "one Slack post per unacknowledged matching alert")
    expect_all(got, post_problem, "every Slack post has a text fallback and blocks opening "
               "with a header")
    found = [ids_in(" ".join(block_strings(p["json"]["blocks"])), r.ids()) for p in got]
    one_per_alert(found, unacked, "the Slack posts' blocks")
    expect_all(got, lambda p: None if r.acked not in p["body"] else p["body"][:200],
               f"the acknowledged alert {r.acked} is in no Slack post")
    r.deliver_quietly(r.lake, r.config, at(6), zero, "deliver at T0+6h (nothing new)")


def delivery_problem(a, rule, level, channel, status="sent"):
    for x in a["deliveries"]:
        if (x.get("rule"), x.get("level"), x.get("channel"), x.get("status")) == \
                (rule, level, channel, status):
            return None
    return f"{a['id']}: no level-{level} {status} on {channel} in {a['deliveries']}"


def check_recorded(r, alerts_before):
    alerts = r.mlk.alerts(r.lake)
    by_id = {a["id"]: a for a in alerts}
    matching = [by_id[i] for i in r.ids()]
    expect_all(matching, lambda a: delivery_problem(a, RULE, 0, MAIL_CHANNEL),
               f"alerts list: every matching alert has a level-0 sent on {MAIL_CHANNEL}")
    unacked = [a for a in matching if a["id"] != r.acked]
    expect_all(unacked, lambda a: delivery_problem(a, RULE, 1, CHAT_CHANNEL),
               f"alerts list: every unacknowledged one a level-1 sent on {CHAT_CHANNEL}")
    acked = by_id[r.acked]
    expect(all(x.get("channel") != CHAT_CHANNEL for x in acked["deliveries"]),
           f"alerts list: the acknowledged alert was not sent on {CHAT_CHANNEL}",
           "no chat delivery", acked["deliveries"])
    others = [by_id[a["id"]] for a in alerts_before if a["kind"] not in KINDS]
    expect_all(others, lambda a: None if not a["deliveries"] else a["id"],
               "alerts list: alerts of other kinds have no delivery")


def check_digest(r):
    config = f"{r.out}/digest.toml"
    notify_config(config, r.smtp_port, f"{r.out}/ca.pem", digest=True, escalate=False)
    by_tenant = {}
    for a in r.matching:
        by_tenant.setdefault(a["tenant_id"], set()).add(a["id"])
    owner = {a["id"]: a["tenant_id"] for a in r.matching}
    mail, posts = r.mailbox.mark(), r.slack.mark()
    d = r.mlk.deliver(f"{r.lake}2", config, at(0))
    expect_eq(counts(d), {"sent": len(r.matching), "failed": 0, "deferred": 0,
                          "escalated": 0, "messages": len(by_tenant)}, "digest: counts")
    messages = r.mailbox.since(mail)[0]
    expect_eq(len(messages), len(by_tenant), "digest: one e-mail per tenant")
    found = [ids_in(plain_body(parse(m)), r.ids()) for m in messages]
    tenants = [{owner[i] for i in s} for s in found]
    expect_all(tenants, lambda t: None if len(t) == 1 else f"tenants {sorted(t)}",
               "digest: each e-mail is about one tenant")
    got = {next(iter(t)): s for t, s in zip(tenants, found)}
    expect_eq({t: sorted(s) for t, s in got.items()},
              {t: sorted(s) for t, s in by_tenant.items()},
              "digest: each tenant's e-mail lists every one of its alert ids")
    expect_all(list(zip(tenants, messages)), lambda p: rcpt_problem(next(iter(p[0])), p[1]),
               "digest: recipients as for single e-mails")
    expect_eq(len(r.slack.since(posts)), 0, "digest: no Slack post")


def check_quiet_hours(r):
    config = f"{r.out}/quiet.toml"
    notify_config(config, r.smtp_port, f"{r.out}/ca.pem", quiet_hours="00:00-23:59")
    want = {"sent": 0, "failed": 0, "deferred": len(r.matching), "escalated": 0,
            "messages": 0}
    r.deliver_quietly(f"{r.lake}3", config, at(0), want, "quiet hours: deferred, not sent")


def check_wrong_password(r):
    lake = f"{r.lake}4"
    mail, posts = r.mailbox.mark(), r.slack.mark()
    d = r.mlk.deliver(lake, r.config, at(0), want_code=2, password="wrong")
    expect((d.get("failed") or 0) > 0 and d.get("sent") == 0,
           "wrong password: failed > 0, nothing sent", "failed > 0, sent 0", counts(d))
    messages, logins = r.mailbox.since(mail)
    expect_eq(len(messages), 0, "wrong password: no e-mail accepted")
    expect_eq(len(r.slack.since(posts)), 0, "wrong password: no Slack post")
    expect(any(not x["ok"] and x["tls"] for x in logins),
           "wrong password: the server refused a login over TLS", "a refused login", logins)
    rows = [(a["id"], x) for a in r.mlk.alerts(lake) for x in a["deliveries"]]
    failed = {i for i, x in rows if x.get("status") == "failed"}
    expect(failed and all(x.get("status") == "failed" and x.get("error") for _, x in rows),
           "wrong password: alerts list shows the deliveries failed, each with its error",
           "only failed rows, with an error", rows[:5])
    mail = r.mailbox.mark()
    d = r.mlk.deliver(lake, r.config, at(5 / 60))
    n = len(r.matching)
    expect_eq(counts(d), {"sent": n, "failed": 0, "deferred": 0, "escalated": 0,
                          "messages": n}, "right password: the rerun sends them")
    expect_eq(len(r.mailbox.since(mail)[0]), n, "right password: one e-mail per alert")
    by_id = {a["id"]: a for a in r.mlk.alerts(lake)}
    matching = [by_id[i] for i in r.ids()]
    expect_all(matching, lambda a: delivery_problem(a, RULE, 0, MAIL_CHANNEL),
               "right password: every matching alert now sent")

    def retried(a):
        tries = [x.get("attempts") or 0 for x in a["deliveries"]
                 if x.get("channel") == MAIL_CHANNEL and x.get("level") == 0]
        return None if tries and max(tries) >= 2 else f"{a['id']}: attempts {tries}"
    expect_all([by_id[i] for i in sorted(failed)], retried,
               "right password: the failed ones count both tries (attempts >= 2)")


# --------------------------------------------------------------------------------- main

def main():
    binary, out = sys.argv[1], os.path.abspath(sys.argv[2])
    ca = trustme.CA()
    server_cert = ca.issue_cert("localhost", "127.0.0.1")
    ca.cert_pem.write_to_path(f"{out}/ca.pem")
    mailbox, slack = Mailbox(), SlackInbox()
    smtp = start_smtp(mailbox, server_cert)
    http = start_slack(slack)
    slack_url = f"http://127.0.0.1:{http.server_address[1]}/slack"
    try:
        write_tenants(f"{out}/tenants.csv")
        notify_config(f"{out}/meterlake.toml", smtp.port, f"{out}/ca.pem")
        r = Run(Meterlake(binary, out, slack_url), mailbox, slack, out, smtp.port)
        alerts = check_alert_list(r)
        check_first_delivery(r)
        check_rerun(r)
        acknowledge_one(r)
        check_escalation(r)
        check_recorded(r, alerts)
        check_digest(r)
        check_quiet_hours(r)
        check_wrong_password(r)
    except Failure as e:
        print(f"FAIL {e}", flush=True)
        return 1
    finally:
        smtp.stop()
        http.shutdown()
        http.server_close()
    print("notify: all checks passed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
