//! What a notification says: the subject, plain-text and HTML bodies of an e-mail, the
//! Block Kit message of Slack, and the JSON body of a webhook, for one alert or a digest of
//! one tenant's alerts, at a level (0: first notice, N: the Nth escalation).

use std::path::Path;

use super::super::alerts::Alert;

/// One message's content.
pub(super) struct Notice<'a> {
    /// The alerts it carries (one, or a tenant's digest), all of one tenant.
    pub alerts: &'a [&'a Alert],
    /// 0, or the escalation level.
    pub level: u32,
    /// The escalation level's delay, hours.
    pub after_hours: Option<f64>,
    /// The rule sending it.
    pub rule: &'a str,
    /// The lake (named in the acknowledge command).
    pub lake: &'a Path,
    /// Sent by a digest rule (a webhook then always gets the digest shape).
    pub digest: bool,
}

/// HTML-escapes text.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Slack mrkdwn escapes (`&`, `<`, `>` only, as Slack documents).
fn mrkdwn(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Cuts text to `n` characters (Slack's block limits), with an ellipsis.
fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n - 1).collect();
        t.push('…');
        t
    }
}

/// A kind in words.
fn kind_words(kind: &str) -> &str {
    match kind {
        "threshold" => "usage threshold crossed",
        "limit_exceeded" => "limit exceeded",
        "cost_over" => "overage cost over its limit",
        "anomaly" => "usage anomaly",
        k => k,
    }
}

/// Slack blocks kept per message (Slack allows 50).
const MAX_BLOCKS: usize = 45;

impl Notice<'_> {
    fn tenant(&self) -> &str {
        &self.alerts[0].tenant_id
    }

    /// The highest severity carried.
    fn severity(&self) -> &str {
        let rank = |s: &str| match s {
            "critical" => 3,
            "high" => 2,
            "warning" => 1,
            _ => 0,
        };
        self.alerts
            .iter()
            .map(|a| a.severity.as_str())
            .max_by_key(|s| rank(s))
            .unwrap_or("")
    }

    /// A stable id of this message on `channel` (its alerts, rule and level).
    pub fn id(&self, channel: &str) -> String {
        let mut ids: Vec<&str> = self.alerts.iter().map(|a| a.id.as_str()).collect();
        ids.sort_unstable();
        let key = format!(
            "{}\u{1f}{}\u{1f}{channel}\u{1f}{}",
            self.rule,
            self.level,
            ids.join(",")
        );
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(key.as_bytes()))
    }

    fn escalation(&self) -> Option<String> {
        (self.level > 0).then(|| {
            format!(
                "Escalation {}: not acknowledged {} hours after the first notice.",
                self.level,
                self.after_hours.map_or("-".into(), |h| format!("{h}"))
            )
        })
    }

    /// The e-mail subject.
    pub fn subject(&self) -> String {
        let esc = if self.level > 0 {
            format!("[escalation {}] ", self.level)
        } else {
            String::new()
        };
        match self.alerts {
            [a] => format!(
                "[meterlake] {esc}{}: {} {} {}",
                a.severity,
                a.tenant_id,
                if a.meter.is_empty() { "-" } else { &a.meter },
                kind_words(&a.kind)
            ),
            many => format!(
                "[meterlake] {esc}{}: {} alerts for {}",
                self.severity(),
                many.len(),
                self.tenant()
            ),
        }
    }

    fn ack_hint(&self, a: &Alert) -> String {
        format!(
            "meterlake alerts ack {} --lake {}",
            a.id,
            self.lake.display()
        )
    }

    /// The plain-text body.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Some(e) = self.escalation() {
            out.push_str(&e);
            out.push_str("\n\n");
        }
        for a in self.alerts {
            out.push_str(&format!(
                "{} ({} {})\n  tenant: {}\n  meter: {}\n  value: {}  limit: {}\n  period: {} to {}\n  raised: {}\n  alert id: {}\n  acknowledge: {}\n\n",
                a.message,
                a.severity,
                kind_words(&a.kind),
                a.tenant_id,
                if a.meter.is_empty() { "-" } else { &a.meter },
                a.value,
                a.limit,
                a.period_start,
                a.period_end,
                a.raised_at,
                a.id,
                self.ack_hint(a)
            ));
        }
        out.push_str(&format!("Sent by meterlake (rule {}).\n", self.rule));
        out
    }

    /// The HTML body.
    pub fn html(&self) -> String {
        let mut rows = String::new();
        for a in self.alerts {
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
                esc(&a.severity),
                esc(kind_words(&a.kind)),
                esc(if a.meter.is_empty() { "-" } else { &a.meter }),
                esc(&a.message),
                esc(&a.raised_at),
                esc(&a.id)
            ));
        }
        let intro = self
            .escalation()
            .map(|e| format!("<p><strong>{}</strong></p>", esc(&e)))
            .unwrap_or_default();
        format!(
            "<!doctype html><html><body style=\"font-family:sans-serif\"><h2>{}</h2>{intro}\
             <table border=\"1\" cellpadding=\"6\" cellspacing=\"0\"><thead><tr><th>severity</th>\
             <th>kind</th><th>meter</th><th>what happened</th><th>raised</th><th>alert id</th></tr>\
             </thead><tbody>{rows}</tbody></table><p>Acknowledge with <code>meterlake alerts ack \
             ID --lake {}</code> or on the dashboard's Anomalies page.</p><p style=\"color:#666\">\
             Sent by meterlake (rule {}).</p></body></html>",
            esc(&self.subject()),
            esc(&self.lake.display().to_string()),
            esc(self.rule)
        )
    }

    /// Slack's incoming-webhook payload: `text` (the notification's fallback) and Block Kit
    /// `blocks` (a header, a section per alert with its fields, a context line).
    pub fn slack(&self) -> serde_json::Value {
        use serde_json::json;
        let mut blocks = vec![json!({
            "type": "header",
            "text": {"type": "plain_text", "text": cut(&self.subject(), 150)}
        })];
        if let Some(e) = self.escalation() {
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{}*", mrkdwn(&e))}}));
        }
        let room = MAX_BLOCKS - blocks.len() - 2;
        for a in self.alerts.iter().take(room) {
            blocks.push(json!({
                "type": "section",
                "text": {"type": "mrkdwn", "text": cut(&mrkdwn(&a.message), 3000)},
                "fields": [
                    {"type": "mrkdwn", "text": format!("*Tenant*\n{}", mrkdwn(&a.tenant_id))},
                    {"type": "mrkdwn", "text": format!("*Meter*\n{}", mrkdwn(if a.meter.is_empty() { "-" } else { &a.meter }))},
                    {"type": "mrkdwn", "text": format!("*Severity*\n{}", mrkdwn(&a.severity))},
                    {"type": "mrkdwn", "text": format!("*Alert id*\n`{}`", a.id)},
                ]
            }));
        }
        if self.alerts.len() > room {
            blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("… and {} more alerts.", self.alerts.len() - room)}}));
        }
        blocks.push(json!({
            "type": "context",
            "elements": [{"type": "mrkdwn", "text": format!(
                "meterlake · rule {} · acknowledge: `meterlake alerts ack ID --lake {}`",
                mrkdwn(self.rule), mrkdwn(&self.lake.display().to_string()))}]
        }));
        let fallback = match self.alerts {
            [a] => format!("{} {}", self.subject(), a.message),
            _ => self.subject(),
        };
        json!({"text": fallback, "blocks": blocks})
    }

    /// A text message: the subject and, for one alert, its message and id (at most 320
    /// characters: two SMS segments).
    pub fn sms(&self) -> String {
        let text = match self.alerts {
            [a] => format!("{}: {} (ack {})", self.subject(), a.message, a.id),
            many => format!(
                "{}: {}",
                self.subject(),
                many.iter()
                    .map(|a| a.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        cut(&text, 320)
    }

    /// A webhook's JSON body: the alert, or `{tenant_id, level, rule, alerts}` for a digest
    /// rule (even when it carries one alert, so receivers parse one shape per rule).
    pub fn webhook(&self) -> String {
        let strip = |a: &Alert| {
            let mut v = serde_json::to_value(a).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                for k in ["delivered_at", "attempts", "last_error"] {
                    o.remove(k);
                }
                o.insert("level".into(), self.level.into());
                o.insert("rule".into(), self.rule.into());
            }
            v
        };
        match self.alerts {
            [a] if !self.digest => strip(a).to_string(),
            many => serde_json::json!({
                "tenant_id": self.tenant(),
                "level": self.level,
                "rule": self.rule,
                "alerts": many.iter().map(|a| strip(a)).collect::<Vec<_>>(),
            })
            .to_string(),
        }
    }
}
