//! Sending one notice on one channel: SMTP (lettre: STARTTLS or TLS, AUTH, a
//! multipart/alternative message with plain-text and HTML parts), Slack's incoming webhook
//! (Block Kit JSON), or the signed webhook. A transient failure (a timeout, an SMTP 4xx, an
//! HTTP 429 or 5xx) is retried a few times with backoff in the same run ([`crate::http`]);
//! a permanent one (a refused login, an HTTP 4xx) is not.

use std::time::Duration;

use base64::Engine as _;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Message, SmtpTransport, Transport};

use super::message::Notice;
use super::{ChannelConf, NotifyConf, SmtpTls};
use crate::billing::Tenant;
use crate::error::{Error, Result};
use crate::http::{Failure, Retry, with_retries};

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
                ChannelConf::Sms(m) => {
                    secrets.get(&m.account_sid_env, name, "account_sid_env")?;
                    secrets.get(&m.token_env, name, "token_env")?;
                    secrets.get(&m.from_env, name, "from_env")?;
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
    Sms {
        agent: ureq::Agent,
        /// The Messages resource of the account.
        url: String,
        /// `Basic base64(SID:token)`.
        auth: String,
        from: String,
        to: Vec<String>,
    },
}

fn mailbox(s: &str, what: &str) -> std::result::Result<Mailbox, String> {
    s.parse::<Mailbox>()
        .map_err(|e| format!("{what} `{s}` is not an e-mail address: {e}"))
}

fn agent(timeout_s: u64) -> ureq::Agent {
    crate::http::agent(Duration::from_secs(timeout_s.max(1)))
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
            ChannelConf::Sms(m) => {
                let sid = secret(&m.account_sid_env, "account_sid_env")?;
                let token = secret(&m.token_env, "token_env")?;
                Sender::Sms {
                    agent: agent(m.timeout_s),
                    url: format!(
                        "{}/2010-04-01/Accounts/{sid}/Messages.json",
                        m.api_url.trim_end_matches('/')
                    ),
                    auth: format!(
                        "Basic {}",
                        base64::engine::general_purpose::STANDARD.encode(format!("{sid}:{token}"))
                    ),
                    from: secret(&m.from_env, "from_env")?,
                    to: m.to.clone(),
                }
            }
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
        let retry = Retry {
            attempts: ATTEMPTS,
            backoff: Duration::from_millis(300),
        };
        if let Sender::Sms { to, .. } = self {
            // Each number with its own retries, so a 429 for one does not re-text the
            // ones already reached in this run. (A number failing for good fails the
            // delivery, and the next run texts every number again: at least once.)
            let body = notice.sms();
            for number in to.clone() {
                with_retries(retry, |_| self.text(&number, &body))
                    .0
                    .map_err(|e| format!("{number}: {e}"))?;
            }
            return Ok(());
        }
        with_retries(retry, |_| self.try_send(notice, tenant, message_id)).0
    }

    /// One text to one number (an SMS sender).
    fn text(&self, number: &str, body: &str) -> std::result::Result<(), Failure> {
        let Sender::Sms {
            agent,
            url,
            auth,
            from,
            ..
        } = self
        else {
            return Err(Failure::Permanent("not an SMS channel".into()));
        };
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("To", number)
            .append_pair("From", from)
            .append_pair("Body", body)
            .finish();
        crate::http::outcome(
            agent
                .post(url)
                .header("Authorization", auth)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .send(&form),
        )
    }

    /// One try; the failure says whether a retry may help.
    fn try_send(
        &self,
        notice: &Notice,
        tenant: Option<&Tenant>,
        message_id: &str,
    ) -> std::result::Result<(), Failure> {
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
                        // A malformed address of one tenant must not hold back the
                        // message to everyone else.
                        match mailbox(a, "notify_email") {
                            Ok(m) if !rcpt.contains(&m) => rcpt.push(m),
                            Ok(_) => {}
                            Err(e) => tracing::warn!("tenant {}: {e}; skipped", t.id),
                        }
                    }
                }
                if rcpt.is_empty() {
                    return Err(Failure::Permanent(
                        "no recipients: the channel has no `to` and the tenant no notify_email"
                            .into(),
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
                    .map_err(|e| Failure::Permanent(format!("message: {e}")))?;
                transport.send(&msg).map(|_| ()).map_err(|e| {
                    if e.is_permanent() {
                        Failure::Permanent(format!("SMTP: {e}"))
                    } else {
                        Failure::Transient(format!("SMTP: {e}"), None)
                    }
                })
            }
            Sender::Slack { agent, url } => crate::http::outcome(
                agent
                    .post(url)
                    .header("Content-Type", "application/json")
                    .header(
                        "User-Agent",
                        concat!("meterlake/", env!("CARGO_PKG_VERSION")),
                    )
                    .send(notice.slack().to_string()),
            ),
            // Texts go number by number, each with its own retries ([`Sender::send`]).
            Sender::Sms { .. } => Err(Failure::Permanent(
                "an SMS channel texts through Sender::send".into(),
            )),
            Sender::Webhook { agent, url, secret } => {
                super::super::alerts::post_signed(agent, url, secret, message_id, &notice.webhook())
            }
        }
    }
}
