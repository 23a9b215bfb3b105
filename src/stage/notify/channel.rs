//! Sending one notice on one channel: SMTP (lettre: STARTTLS or TLS, AUTH, a
//! multipart/alternative message with plain-text and HTML parts), Slack's incoming webhook
//! (Block Kit JSON), or the signed webhook. A transient failure (a timeout, an SMTP 4xx, an
//! HTTP 429 or 5xx) is retried a few times with backoff in the same run; a permanent one
//! (a refused login, an HTTP 4xx) is not.

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use super::message::Notice;
use super::{ChannelConf, NotifyConf, SmtpTls};
use crate::billing::Tenant;
use crate::error::{Error, Result};

/// Tries per message in one run.
const ATTEMPTS: u32 = 3;

/// Where channels read their secrets: the process environment, or a map in tests.
pub struct Secrets(Box<Lookup>);

/// A secret's value by variable name.
type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

impl Secrets {
    /// The process environment.
    pub fn from_env() -> Secrets {
        Secrets(Box::new(|k| {
            std::env::var(k).ok().filter(|v| !v.is_empty())
        }))
    }

    /// A fixed map.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Secrets {
        let m: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Secrets(Box::new(move |k| m.get(k).cloned()))
    }

    fn get(&self, var: &str, channel: &str, field: &str) -> Result<String> {
        (self.0)(var).ok_or_else(|| Error::InvalidParameter {
            name: "notify.channels",
            reason: format!("channel `{channel}` reads its {field} from ${var}, which is not set"),
        })
    }
}

impl NotifyConf {
    /// Every secret the rules' channels need is set (checked before anything is sent).
    pub fn check_secrets(&self, secrets: &Secrets) -> Result<()> {
        let used: std::collections::BTreeSet<&str> = self
            .rules
            .iter()
            .flat_map(|r| {
                r.channels
                    .iter()
                    .chain(r.escalate.iter().flat_map(|e| e.channels.iter()))
            })
            .map(String::as_str)
            .collect();
        for name in used {
            match &self.channels[name] {
                ChannelConf::Email(e) => {
                    if let Some(v) = &e.password_env {
                        secrets.get(v, name, "password_env")?;
                    }
                }
                ChannelConf::Slack(s) => {
                    secrets.get(&s.url_env, name, "url_env")?;
                }
                ChannelConf::Webhook(w) => {
                    secrets.get(&w.url_env, name, "url_env")?;
                    secrets.get(&w.secret_env, name, "secret_env")?;
                }
            }
        }
        Ok(())
    }
}

/// A channel ready to send.
pub(super) enum Sender {
    Email {
        transport: SmtpTransport,
        from: Mailbox,
        to: Vec<Mailbox>,
        tenant_recipients: bool,
    },
    Slack {
        agent: ureq::Agent,
        url: String,
    },
    Webhook {
        agent: ureq::Agent,
        url: String,
        secret: String,
    },
}

fn mailbox(s: &str, what: &str) -> std::result::Result<Mailbox, String> {
    s.parse::<Mailbox>()
        .map_err(|e| format!("{what} `{s}` is not an e-mail address: {e}"))
}

fn agent(timeout_s: u64) -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(timeout_s.max(1))))
        .http_status_as_error(false)
        .build()
        .into()
}

fn http_url(url: &str, var: &str) -> std::result::Result<String, String> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(url.to_string())
    } else {
        Err(format!("${var} is not an http(s) URL"))
    }
}

impl Sender {
    /// Builds channel `name` (its secrets from `secrets`). An error is the delivery's
    /// failure reason.
    pub fn new(
        name: &str,
        conf: &ChannelConf,
        secrets: &Secrets,
    ) -> std::result::Result<Sender, String> {
        let secret =
            |var: &str, field: &str| secrets.get(var, name, field).map_err(|e| e.to_string());
        Ok(match conf {
            ChannelConf::Email(e) => {
                let mut b = SmtpTransport::builder_dangerous(e.host.clone())
                    .timeout(Some(Duration::from_secs(e.timeout_s.max(1))));
                let tls = || -> std::result::Result<TlsParameters, String> {
                    let mut t = TlsParameters::builder(e.host.clone());
                    if let Some(ca) = &e.ca_file {
                        let pem = std::fs::read(ca)
                            .map_err(|err| format!("ca_file {}: {err}", ca.display()))?;
                        let cert = Certificate::from_pem(&pem)
                            .map_err(|err| format!("ca_file {}: {err}", ca.display()))?;
                        t = t.add_root_certificate(cert);
                    }
                    t.build().map_err(|err| format!("TLS: {err}"))
                };
                b = match e.tls {
                    SmtpTls::Starttls => b.port(e.port.unwrap_or(587)).tls(Tls::Required(tls()?)),
                    SmtpTls::Tls => b.port(e.port.unwrap_or(465)).tls(Tls::Wrapper(tls()?)),
                    SmtpTls::None => b.port(e.port.unwrap_or(25)).tls(Tls::None),
                };
                if let (Some(user), Some(var)) = (&e.username, &e.password_env) {
                    b = b.credentials(Credentials::new(user.clone(), secret(var, "password_env")?));
                }
                Sender::Email {
                    transport: b.build(),
                    from: mailbox(&e.from, "from")?,
                    to: e
                        .to
                        .iter()
                        .map(|t| mailbox(t, "to"))
                        .collect::<std::result::Result<_, _>>()?,
                    tenant_recipients: e.tenant_recipients,
                }
            }
            ChannelConf::Slack(s) => Sender::Slack {
                agent: agent(s.timeout_s),
                url: http_url(&secret(&s.url_env, "url_env")?, &s.url_env)?,
            },
            ChannelConf::Webhook(w) => Sender::Webhook {
                agent: agent(w.timeout_s),
                url: http_url(&secret(&w.url_env, "url_env")?, &w.url_env)?,
                secret: secret(&w.secret_env, "secret_env")?,
            },
        })
    }

    /// Sends `notice` (to `tenant`'s own recipients too, for e-mail), retrying transient
    /// failures. The error is what the deliveries table stores.
    pub fn send(
        &mut self,
        notice: &Notice,
        tenant: Option<&Tenant>,
        message_id: &str,
    ) -> std::result::Result<(), String> {
        let mut delay = Duration::from_millis(300);
        let mut last = String::new();
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                std::thread::sleep(delay);
                delay *= 2;
            }
            match self.try_send(notice, tenant, message_id) {
                Ok(()) => return Ok(()),
                Err((e, transient)) => {
                    last = e;
                    if !transient {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    /// One try; the error says whether a retry may help.
    fn try_send(
        &self,
        notice: &Notice,
        tenant: Option<&Tenant>,
        message_id: &str,
    ) -> std::result::Result<(), (String, bool)> {
        match self {
            Sender::Email {
                transport,
                from,
                to,
                tenant_recipients,
            } => {
                let mut rcpt = to.clone();
                if *tenant_recipients && let Some(t) = tenant {
                    for a in &t.notify_email {
                        let m = mailbox(a, "notify_email").map_err(|e| (e, false))?;
                        if !rcpt.contains(&m) {
                            rcpt.push(m);
                        }
                    }
                }
                if rcpt.is_empty() {
                    return Err((
                        "no recipients: the channel has no `to` and the tenant no notify_email"
                            .into(),
                        false,
                    ));
                }
                let mut b = Message::builder()
                    .from(from.clone())
                    .subject(notice.subject())
                    .message_id(Some(format!("<{message_id}.{}@meterlake>", notice.level)));
                for m in rcpt {
                    b = b.to(m);
                }
                let msg = b
                    .multipart(MultiPart::alternative_plain_html(
                        notice.text(),
                        notice.html(),
                    ))
                    .map_err(|e| (format!("message: {e}"), false))?;
                transport.send(&msg).map(|_| ()).map_err(|e| {
                    let transient = !e.is_permanent();
                    (format!("SMTP: {e}"), transient)
                })
            }
            Sender::Slack { agent, url } => {
                let body = notice.slack().to_string();
                post(agent, url, &body, &[])
            }
            Sender::Webhook { agent, url, secret } => {
                let body = notice.webhook();
                let ts = chrono::Utc::now().timestamp();
                let sig = super::super::alerts::signature(secret, ts, &body);
                post(
                    agent,
                    url,
                    &body,
                    &[
                        ("X-Meterlake-Delivery", message_id),
                        ("X-Meterlake-Timestamp", &ts.to_string()),
                        ("X-Meterlake-Signature", &sig),
                    ],
                )
            }
        }
    }
}

/// POSTs JSON; 2xx is success, 429/5xx and transport errors are transient.
fn post(
    agent: &ureq::Agent,
    url: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> std::result::Result<(), (String, bool)> {
    let mut req = agent
        .post(url)
        .header("Content-Type", "application/json")
        .header(
            "User-Agent",
            concat!("meterlake/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    match req.send(body) {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => {
            let s = r.status().as_u16();
            Err((format!("HTTP {s}"), s == 429 || s >= 500))
        }
        Err(e) => Err((e.to_string(), true)),
    }
}
