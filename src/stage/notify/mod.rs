//! Notifications: alerts sent to people by e-mail, Slack or a signed webhook, chosen by
//! rules, held back in quiet hours, bundled into digests, and escalated while nobody
//! acknowledges them.
//!
//! **Configuration** (meterlake.toml): `[notify.channels.NAME]` with a `kind` of `email`,
//! `slack`, `webhook` or `sms` ([`ChannelConf`]; an SMS channel texts critical alerts only
//! unless its `severities` say otherwise), and `[[notify.rules]]` ([`RuleConf`]) that pick
//! alerts by kind, severity, tenant and plan and name the channels they go to. Secrets
//! (the SMTP password, the Slack and webhook URLs, the webhook's signing key) are read from
//! environment variables the channel names, never from the file.
//!
//! **A delivery run** ([`deliver`], `meterlake alerts deliver`, and each `meterlake run`),
//! at an instant (the wall clock, or `--at` in tests):
//! 1. for every rule and every unacknowledged alert it matches, the rule's channels are due
//!    (level 0) unless already sent; escalation level N is due once `after_hours` of level
//!    N have passed since the alert's first level-0 try and it is still unacknowledged;
//! 2. in the rule's quiet hours (the tenant's local time) nothing of the rule is sent: the
//!    due deliveries are counted as deferred and go out on the first run after them;
//! 3. each due (alert, channel) is sent alone, or with `digest = true` as one message per
//!    tenant, channel and level;
//! 4. an alert another rule already sent on the same channel and level is not sent again
//!    (recorded `covered`);
//! 5. every outcome is stored at once in `LAKE/alerts/deliveries.parquet`
//!    ([`tables::deliveries`]), under the alert store's lock: a `sent` delivery is never
//!    sent again, a `failed` one is retried by the next run.
//!
//! Like the webhook, delivery is at least once: a crash between a channel's acceptance and
//! the table's rename sends that message again on the next run.

mod channel;
mod message;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use channel::Secrets;
use message::Notice;

use super::alerts::{Alert, AlertStore};
use super::tables::{self, deliveries::Delivery};
use crate::billing::Billing;
use crate::error::{Error, Result};
use crate::time::{MICROS_PER_HOUR, rfc3339};

/// `[notify]`: channels and the rules that use them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConf {
    /// Channels by name.
    pub channels: BTreeMap<String, ChannelConf>,
    /// Rules, each sending the alerts it matches.
    pub rules: Vec<RuleConf>,
}

/// One channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChannelConf {
    /// E-mail over SMTP.
    Email(EmailConf),
    /// A Slack incoming webhook (Block Kit message).
    Slack(SlackConf),
    /// A JSON POST signed with HMAC-SHA256 (as `alerts deliver --webhook`).
    Webhook(WebhookConf),
    /// A text message through a Twilio-compatible API.
    Sms(SmsConf),
}

impl ChannelConf {
    /// Whether the channel takes alerts of `severity` (an SMS channel: critical ones only,
    /// unless its `severities` say otherwise).
    pub fn accepts(&self, severity: &str) -> bool {
        match self {
            ChannelConf::Sms(s) => s.severities.iter().any(|x| x == severity),
            _ => true,
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption (a relay on localhost only; credentials are refused).
    None,
}

/// `kind = "email"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConf {
    /// SMTP server.
    pub host: String,
    /// Its port (default: 587 for STARTTLS, 465 for TLS, 25 for none).
    pub port: Option<u16>,
    /// `starttls` (default), `tls` or `none`.
    #[serde(default)]
    pub tls: SmtpTls,
    /// SMTP AUTH user (none: no authentication).
    pub username: Option<String>,
    /// The environment variable holding the password.
    pub password_env: Option<String>,
    /// The sender, `Name <address>` or `address`.
    pub from: String,
    /// Fixed recipients.
    #[serde(default)]
    pub to: Vec<String>,
    /// Also send to the tenant's own `notify_email` addresses (tenants file).
    #[serde(default = "yes")]
    pub tenant_recipients: bool,
    /// A PEM file of extra root certificates (a private CA).
    pub ca_file: Option<PathBuf>,
    /// Seconds before a connection or command times out.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

/// `kind = "slack"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConf {
    /// The environment variable holding the incoming-webhook URL.
    pub url_env: String,
    /// Seconds before a request times out.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

/// `kind = "webhook"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConf {
    /// The environment variable holding the URL.
    pub url_env: String,
    /// The environment variable holding the signing secret.
    #[serde(default = "default_secret_env")]
    pub secret_env: String,
    /// Seconds before a request times out.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

/// `kind = "sms"`: Twilio's Messages API (`POST {api_url}/2010-04-01/Accounts/{SID}/Messages.json`,
/// form fields `To`, `From`, `Body`, basic auth SID:token) or one that speaks it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmsConf {
    /// The API's base URL.
    #[serde(default = "default_twilio")]
    pub api_url: String,
    /// The environment variable holding the account SID.
    #[serde(default = "default_sid_env")]
    pub account_sid_env: String,
    /// The environment variable holding the auth token.
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// The environment variable holding the sending number.
    #[serde(default = "default_from_env")]
    pub from_env: String,
    /// Numbers to text (E.164, `+` and digits).
    pub to: Vec<String>,
    /// Severities texted (default: critical only).
    #[serde(default = "default_sms_severities")]
    pub severities: Vec<String>,
    /// Seconds before a request times out.
    #[serde(default = "default_timeout")]
    pub timeout_s: u64,
}

fn default_twilio() -> String {
    "https://api.twilio.com".into()
}
fn default_sid_env() -> String {
    "TWILIO_ACCOUNT_SID".into()
}
fn default_token_env() -> String {
    "TWILIO_AUTH_TOKEN".into()
}
fn default_from_env() -> String {
    "TWILIO_FROM".into()
}
fn default_sms_severities() -> Vec<String> {
    vec!["critical".into()]
}

fn yes() -> bool {
    true
}
fn default_timeout() -> u64 {
    10
}
fn default_secret_env() -> String {
    super::alerts::SECRET_ENV.to_string()
}

/// `[[notify.rules]]`: which alerts go where.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConf {
    /// Its name (stored with each delivery; unique).
    pub name: String,
    /// Channels of the first notification.
    pub channels: Vec<String>,
    /// Alert kinds matched (`threshold`, `limit_exceeded`, `cost_over`, `anomaly`); empty:
    /// all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Severities matched (`warning`, `critical`, `high`); empty: all.
    #[serde(default)]
    pub severities: Vec<String>,
    /// Tenants matched; empty: all.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// Plans matched (the tenant's plan at the delivery instant); empty: all.
    #[serde(default)]
    pub plans: Vec<String>,
    /// One message per tenant, channel and level per run instead of one per alert.
    #[serde(default)]
    pub digest: bool,
    /// `HH:MM-HH:MM` in the tenant's time zone (may wrap midnight): nothing is sent then.
    pub quiet_hours: Option<String>,
    /// Escalation levels, in order.
    #[serde(default)]
    pub escalate: Vec<EscalationConf>,
}

/// One escalation level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationConf {
    /// Hours after the first notification, still unacknowledged.
    pub after_hours: f64,
    /// Channels it goes to.
    pub channels: Vec<String>,
}

const KINDS: [&str; 4] = ["threshold", "limit_exceeded", "cost_over", "anomaly"];
const SEVERITIES: [&str; 4] = ["warning", "critical", "high", "medium"];

/// Minutes after midnight of `HH:MM`.
fn minutes(s: &str) -> Option<u32> {
    let (h, m) = s.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (h < 24 && m < 60).then_some(h * 60 + m)
}

/// `HH:MM-HH:MM` as minutes after midnight.
fn quiet_span(s: &str) -> Option<(u32, u32)> {
    let (a, b) = s.split_once('-')?;
    Some((minutes(a)?, minutes(b)?))
}

/// Whether local minute `m` falls in `[from, to)` (wrapping midnight when `to < from`).
fn in_span((from, to): (u32, u32), m: u32) -> bool {
    if from <= to {
        m >= from && m < to
    } else {
        m >= from || m < to
    }
}

impl NotifyConf {
    /// Whether any rule is configured.
    pub fn enabled(&self) -> bool {
        !self.rules.is_empty()
    }

    /// Checks names, kinds, spans and escalation order; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |name: &'static str, reason: String| Error::InvalidParameter { name, reason };
        let mut names = std::collections::HashSet::new();
        for r in &self.rules {
            if r.name.trim().is_empty() || !names.insert(r.name.as_str()) {
                return Err(bad(
                    "notify.rules.name",
                    format!("`{}` is empty or used by two rules", r.name),
                ));
            }
            let check = |field: &'static str, list: &[String]| -> Result<()> {
                if list.is_empty() && field == "notify.rules.channels" {
                    return Err(bad(field, format!("rule `{}` names no channel", r.name)));
                }
                for c in list {
                    if !self.channels.contains_key(c) {
                        return Err(bad(
                            field,
                            format!(
                                "rule `{}`: `{c}` is not a channel (channels: {})",
                                r.name,
                                self.channels.keys().cloned().collect::<Vec<_>>().join(", ")
                            ),
                        ));
                    }
                }
                Ok(())
            };
            check("notify.rules.channels", &r.channels)?;
            for k in &r.kinds {
                if !KINDS.contains(&k.as_str()) {
                    return Err(bad(
                        "notify.rules.kinds",
                        format!(
                            "rule `{}`: `{k}` is not one of {}",
                            r.name,
                            KINDS.join(", ")
                        ),
                    ));
                }
            }
            for s in &r.severities {
                if !SEVERITIES.contains(&s.as_str()) {
                    return Err(bad(
                        "notify.rules.severities",
                        format!(
                            "rule `{}`: `{s}` is not one of {}",
                            r.name,
                            SEVERITIES.join(", ")
                        ),
                    ));
                }
            }
            if let Some(q) = &r.quiet_hours
                && quiet_span(q).is_none()
            {
                return Err(bad(
                    "notify.rules.quiet_hours",
                    format!("rule `{}`: `{q}` is not HH:MM-HH:MM", r.name),
                ));
            }
            let mut last = 0.0;
            for e in &r.escalate {
                if !(e.after_hours.is_finite() && e.after_hours > last) {
                    return Err(bad(
                        "notify.rules.escalate.after_hours",
                        format!(
                            "rule `{}`: {} must be positive and later than the level before",
                            r.name, e.after_hours
                        ),
                    ));
                }
                last = e.after_hours;
                if e.channels.is_empty() {
                    return Err(bad(
                        "notify.rules.escalate.channels",
                        format!("rule `{}`: an escalation level names no channel", r.name),
                    ));
                }
                check("notify.rules.escalate.channels", &e.channels)?;
            }
        }
        for (name, c) in &self.channels {
            if let ChannelConf::Sms(m) = c {
                let e164 = |n: &str| {
                    n.len() >= 8 && n.starts_with('+') && n[1..].chars().all(|c| c.is_ascii_digit())
                };
                if m.to.is_empty() || !m.to.iter().all(|n| e164(n)) {
                    return Err(bad(
                        "notify.channels.sms.to",
                        format!(
                            "channel `{name}`: give numbers in E.164 form (+ and digits), got {:?}",
                            m.to
                        ),
                    ));
                }
                if let Some(s) = m
                    .severities
                    .iter()
                    .find(|s| !SEVERITIES.contains(&s.as_str()))
                {
                    return Err(bad(
                        "notify.channels.sms.severities",
                        format!(
                            "channel `{name}`: `{s}` is not one of {}",
                            SEVERITIES.join(", ")
                        ),
                    ));
                }
                if !(m.api_url.starts_with("http://") || m.api_url.starts_with("https://")) {
                    return Err(bad(
                        "notify.channels.sms.api_url",
                        format!("channel `{name}`: `{}` is not an http(s) URL", m.api_url),
                    ));
                }
            }
            if let ChannelConf::Email(e) = c {
                if e.host.trim().is_empty() || !e.from.contains('@') {
                    return Err(bad(
                        "notify.channels.email",
                        format!("channel `{name}`: host and a from address are required"),
                    ));
                }
                if e.tls == SmtpTls::None && e.username.is_some() {
                    return Err(bad(
                        "notify.channels.email.tls",
                        format!(
                            "channel `{name}`: credentials are never sent unencrypted (use starttls or tls)"
                        ),
                    ));
                }
                if e.username.is_some() != e.password_env.is_some() {
                    return Err(bad(
                        "notify.channels.email.password_env",
                        format!("channel `{name}`: username and password_env go together"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What a delivery run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NotifyReport {
    /// The delivery clock (RFC 3339).
    pub at: String,
    /// Alert × channel deliveries accepted in this run.
    pub sent: usize,
    /// ... that failed (retried by the next run).
    pub failed: usize,
    /// ... of those, not tried: their channel had failed
    /// [`crate::stage::alerts::GIVE_UP_AFTER`] messages in a row in this run (a server
    /// down), so they wait for the next run.
    pub skipped: usize,
    /// ... held back by quiet hours.
    pub deferred: usize,
    /// ... not sent because another rule sent the alert on that channel and level.
    pub covered: usize,
    /// ... of them escalations (level ≥ 1), sent or failed.
    pub escalated: usize,
    /// Messages sent (a digest is one message for several alerts).
    pub messages: usize,
    /// The deliveries of this run.
    pub deliveries: Vec<Delivery>,
}

/// One message to send: a channel, a level, and the alerts it carries.
struct Due<'a> {
    rule: &'a RuleConf,
    level: u32,
    channel: &'a str,
    alerts: Vec<usize>,
}

/// Sends what is due at `at` (UTC µs) by the rules of `conf`, and records every outcome.
pub fn deliver(
    lake_dir: &Path,
    billing: &Billing,
    conf: &NotifyConf,
    secrets: &Secrets,
    at: i64,
) -> Result<NotifyReport> {
    conf.validate()?;
    conf.check_secrets(secrets)?;
    let store = AlertStore::open(lake_dir)?;
    let path = tables::deliveries::file(lake_dir);
    let mut records = tables::deliveries::read_lake(lake_dir)?;
    let key = |d: &Delivery| {
        (
            d.alert_id.clone(),
            d.rule.clone(),
            d.level,
            d.channel.clone(),
        )
    };
    let mut index: HashMap<(String, String, u32, String), usize> = records
        .iter()
        .enumerate()
        .map(|(i, d)| (key(d), i))
        .collect();
    let tenants: HashMap<&str, &crate::billing::Tenant> =
        billing.tenants.iter().map(|t| (t.id.as_str(), t)).collect();
    let mut report = NotifyReport {
        at: rfc3339(at),
        ..NotifyReport::default()
    };
    let done = |index: &HashMap<_, usize>, records: &[Delivery], a: &Alert, r: &str, l, c: &str| {
        index
            .get(&(a.id.clone(), r.to_string(), l, c.to_string()))
            .is_some_and(|&i| records[i].status != "failed")
    };
    // (alert, level, channel) a rule has sent, before or in this run: another rule matching
    // the same alert does not send it on that channel again.
    let mut taken: std::collections::HashSet<(String, u32, String)> = records
        .iter()
        .filter(|d| d.status == "sent")
        .map(|d| (d.alert_id.clone(), d.level, d.channel.clone()))
        .collect();
    let mut covered: Vec<(&RuleConf, u32, &str, usize)> = Vec::new();
    let mut dues: Vec<Due> = Vec::new();
    for rule in &conf.rules {
        let quiet = rule.quiet_hours.as_deref().and_then(quiet_span);
        // Per level and channel, the alerts due.
        let mut by: BTreeMap<(u32, &str), Vec<usize>> = BTreeMap::new();
        for (i, a) in store.alerts.iter().enumerate() {
            if a.acknowledged_at.is_some()
                || !matches(rule, a, tenants.get(a.tenant_id.as_str()), at)
            {
                continue;
            }
            let mut due: Vec<(u32, &str)> = rule.channels.iter().map(|c| (0, c.as_str())).collect();
            // Escalation counts from the first level-0 try of this rule.
            let first = records
                .iter()
                .filter(|d| d.alert_id == a.id && d.rule == rule.name && d.level == 0)
                .filter_map(|d| crate::time::parse_instant("first_at", &d.first_at).ok())
                .min();
            if let Some(first) = first {
                for (l, e) in rule.escalate.iter().enumerate() {
                    if at >= first + (e.after_hours * MICROS_PER_HOUR as f64) as i64 {
                        due.extend(e.channels.iter().map(|c| (l as u32 + 1, c.as_str())));
                    }
                }
            }
            due.retain(|&(l, c)| {
                conf.channels[c].accepts(&a.severity)
                    && !done(&index, &records, a, &rule.name, l, c)
            });
            if due.is_empty() {
                continue;
            }
            if let Some(span) = quiet {
                let zone = tenants
                    .get(a.tenant_id.as_str())
                    .map(|t| t.zone)
                    .unwrap_or(crate::rollup::Zone::UTC);
                if in_span(span, zone.local_minute_of_day(at)) {
                    report.deferred += due.len();
                    continue;
                }
            }
            for (l, c) in due {
                if taken.insert((a.id.clone(), l, c.to_string())) {
                    by.entry((l, c)).or_default().push(i);
                } else {
                    covered.push((rule, l, c, i));
                }
            }
        }
        for ((level, channel), alerts) in by {
            if rule.digest {
                let mut per_tenant: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
                for i in alerts {
                    per_tenant
                        .entry(store.alerts[i].tenant_id.as_str())
                        .or_default()
                        .push(i);
                }
                dues.extend(per_tenant.into_values().map(|alerts| Due {
                    rule,
                    level,
                    channel,
                    alerts,
                }));
            } else {
                dues.extend(alerts.into_iter().map(|i| Due {
                    rule,
                    level,
                    channel,
                    alerts: vec![i],
                }));
            }
        }
    }
    let stamp = rfc3339(at);
    for (rule, level, channel, i) in covered {
        let a = &store.alerts[i];
        records.push(Delivery {
            alert_id: a.id.clone(),
            tenant_id: a.tenant_id.clone(),
            rule: rule.name.clone(),
            level,
            channel: channel.to_string(),
            status: "covered".into(),
            first_at: stamp.clone(),
            at: stamp.clone(),
            ..Delivery::default()
        });
        index.insert(key(records.last().expect("pushed")), records.len() - 1);
        report.covered += 1;
        report
            .deliveries
            .push(records.last().expect("pushed").clone());
    }
    if report.covered > 0 {
        tables::deliveries::write(&path, &records)?;
    }
    // Messages that failed before go last: two that always fail (a refused address) must
    // not keep a channel's other messages from being tried (stable: the order otherwise).
    let failed_before = |d: &Due| {
        d.alerts.iter().any(|&i| {
            let k = (
                store.alerts[i].id.clone(),
                d.rule.name.clone(),
                d.level,
                d.channel.to_string(),
            );
            index
                .get(&k)
                .is_some_and(|&r| records[r].status == "failed")
        })
    };
    dues.sort_by_cached_key(|d| failed_before(d));
    let mut senders: HashMap<&str, channel::Sender> = HashMap::new();
    let mut failed_in_a_row: HashMap<&str, usize> = HashMap::new();
    for due in dues {
        // A channel that failed message after message is down: its other messages wait
        // for the next run instead of each paying the retries.
        if failed_in_a_row.get(due.channel).copied().unwrap_or(0)
            >= crate::stage::alerts::GIVE_UP_AFTER
        {
            report.failed += due.alerts.len();
            report.skipped += due.alerts.len();
            continue;
        }
        let alerts: Vec<&Alert> = due.alerts.iter().map(|&i| &store.alerts[i]).collect();
        let tenant = tenants.get(alerts[0].tenant_id.as_str()).copied();
        let notice = Notice {
            alerts: &alerts,
            level: due.level,
            after_hours: due
                .level
                .checked_sub(1)
                .and_then(|l| due.rule.escalate.get(l as usize))
                .map(|e| e.after_hours),
            rule: &due.rule.name,
            lake: lake_dir,
            digest: due.rule.digest,
        };
        let message_id = notice.id(due.channel);
        let outcome = match senders.entry(due.channel) {
            std::collections::hash_map::Entry::Occupied(o) => Ok(o.into_mut()),
            std::collections::hash_map::Entry::Vacant(v) => {
                channel::Sender::new(due.channel, &conf.channels[due.channel], secrets)
                    .map(|s| v.insert(s))
            }
        }
        .and_then(|s| s.send(&notice, tenant, &message_id));
        report.messages += usize::from(outcome.is_ok());
        let streak = failed_in_a_row.entry(due.channel).or_default();
        *streak = if outcome.is_ok() { 0 } else { *streak + 1 };
        for a in &alerts {
            let k = (
                a.id.clone(),
                due.rule.name.clone(),
                due.level,
                due.channel.to_string(),
            );
            let i = *index.entry(k).or_insert_with(|| {
                records.push(Delivery {
                    alert_id: a.id.clone(),
                    tenant_id: a.tenant_id.clone(),
                    rule: due.rule.name.clone(),
                    level: due.level,
                    channel: due.channel.to_string(),
                    first_at: stamp.clone(),
                    ..Delivery::default()
                });
                records.len() - 1
            });
            let d = &mut records[i];
            d.attempts += 1;
            d.at = stamp.clone();
            d.message_id = message_id.clone();
            match &outcome {
                Ok(()) => {
                    d.status = "sent".into();
                    d.error = None;
                    report.sent += 1;
                }
                Err(e) => {
                    d.status = "failed".into();
                    d.error = Some(e.clone());
                    report.failed += 1;
                }
            }
            report.escalated += usize::from(due.level > 0);
            report.deliveries.push(d.clone());
        }
        // Stored after every message: a crash repeats at most this one.
        tables::deliveries::write(&path, &records)?;
    }
    drop(store);
    Ok(report)
}

/// Whether `rule` picks alert `a` (its tenant's plan taken at `at`).
fn matches(rule: &RuleConf, a: &Alert, tenant: Option<&&crate::billing::Tenant>, at: i64) -> bool {
    let has = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
    has(&rule.kinds, &a.kind)
        && has(&rule.severities, &a.severity)
        && has(&rule.tenants, &a.tenant_id)
        && (rule.plans.is_empty() || tenant.is_some_and(|t| has(&rule.plans, t.plan_at(at))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_hours_wrap_midnight() {
        let s = quiet_span("22:00-07:30").unwrap();
        assert!(in_span(s, 23 * 60));
        assert!(in_span(s, 7 * 60 + 29));
        assert!(!in_span(s, 7 * 60 + 30));
        assert!(!in_span(s, 12 * 60));
        let d = quiet_span("09:00-17:00").unwrap();
        assert!(in_span(d, 9 * 60) && !in_span(d, 17 * 60) && !in_span(d, 8 * 60));
        assert!(quiet_span("25:00-01:00").is_none());
        assert!(quiet_span("22:00").is_none());
    }

    #[test]
    fn configuration_mistakes_name_the_field() {
        let parse = |s: &str| -> Result<NotifyConf> {
            let c: NotifyConf = toml::from_str(s).map_err(|e| Error::InvalidParameter {
                name: "toml",
                reason: e.to_string(),
            })?;
            c.validate()?;
            Ok(c)
        };
        let ok = "[channels.chat]\nkind = \"slack\"\nurl_env = \"U\"\n[[rules]]\nname = \"r\"\nchannels = [\"chat\"]\n";
        let c = parse(ok).unwrap();
        assert!(matches!(c.channels["chat"], ChannelConf::Slack(_)));
        let e = parse(&ok.replace("[\"chat\"]", "[\"mail\"]")).unwrap_err();
        assert!(e.to_string().contains("`mail` is not a channel"), "{e}");
        let e = parse(&format!("{ok}kinds = [\"limits\"]\n")).unwrap_err();
        assert!(e.to_string().contains("notify.rules.kinds"), "{e}");
        let e = parse(&format!("{ok}quiet_hours = \"late\"\n")).unwrap_err();
        assert!(e.to_string().contains("quiet_hours"), "{e}");
        let e = parse(&format!(
            "{ok}[[rules.escalate]]\nafter_hours = 4\nchannels = [\"chat\"]\n[[rules.escalate]]\nafter_hours = 2\nchannels = [\"chat\"]\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("after_hours"), "{e}");
        let e = parse("[channels.x]\nkind = \"pager\"\n").unwrap_err();
        assert!(e.to_string().contains("pager"), "{e}");
        let e = parse(&ok.replace("url_env", "url")).unwrap_err();
        assert!(e.to_string().contains("url"), "{e}");
    }
}
