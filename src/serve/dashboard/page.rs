//! The dashboard's HTML: the sign-in page, the frame around every page (navigation, the
//! tenant and period pickers, sign-out), and each page's main part: the data's "as of"
//! line, the page built by `crate::report::page` and rendered by the reports' HTML
//! renderer, and, on the anomalies page, the alerts with their Acknowledge buttons.

use std::fmt::Write;
use std::sync::Arc;

use super::View;
use super::cache::Build;
use crate::error::Result;
use crate::report::Page;
use crate::rollup::Granularity;
use crate::serve::App;
use crate::serve::auth::Principal;
use crate::time::{MICROS_PER_DAY, date_str, rfc3339};

/// The dashboard's own style, after the reports' (which styles figures, tables, charts).
const STYLE: &str = "body{margin:0 auto;max-width:1200px}\
header{display:flex;flex-wrap:wrap;gap:.6rem 1.2rem;align-items:center;border-bottom:1px solid #d8dde6;padding:.6rem 0;margin-bottom:.8rem}\
header .brand{font-weight:700;font-size:1.1rem}nav a{white-space:nowrap;margin-right:.8rem;color:#2c66b0;text-decoration:none;padding:.2rem 0}\
nav a[aria-current=page]{font-weight:700;border-bottom:2px solid #2c66b0}\
form.pick{display:flex;flex-wrap:wrap;gap:.4rem;align-items:center}form.pick select,form.pick button{font:inherit;padding:.2rem .4rem}\
.who{margin-left:auto;color:#5b6474;font-size:.9rem}.who button{font:inherit}\
.asof{color:#5b6474;font-size:.85rem}.banner{background:#fff6e0;border:1px solid #e0c070;padding:.5rem .8rem;border-radius:6px}\
.login{max-width:24rem;margin:4rem auto}.login input{width:100%;font:inherit;padding:.4rem;box-sizing:border-box}.login button{margin-top:.6rem;font:inherit;padding:.3rem 1rem}\
.error{color:#b0302a}td form{margin:0}\
@media (max-width:700px){body{padding:0 .5rem}.figure{min-width:8rem}.who{margin-left:0}}";

/// Escapes text for HTML: the reports' escape.
pub(super) use crate::report::html_escape as esc;

fn head(title: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{} · meterlake</title><style>{}{STYLE}</style></head><body>\n",
        esc(title),
        crate::report::HTML_STYLE
    )
}

/// The sign-in page, with an error line when a sign-in failed.
pub(super) fn login(error: Option<&str>) -> String {
    let mut o = head("Sign in");
    o.push_str("<main class=\"login\"><h1>meterlake</h1><p>Sign in with an API key (`meterlake serve-keys add`): an admin key sees every tenant, a tenant key its own.</p>");
    if let Some(e) = error {
        let _ = write!(o, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    o.push_str(
        "<form method=\"post\" action=\"/login\"><label for=\"key\">API key</label>\
<input type=\"password\" id=\"key\" name=\"key\" autocomplete=\"current-password\" required autofocus>\
<button type=\"submit\">Sign in</button></form></main></body></html>\n",
    );
    o
}

/// A refusal (403, 400) inside the frame, so the person can go elsewhere.
pub(super) fn refusal(who: &Principal, message: &str) -> String {
    let mut o = head("Not shown");
    let _ = write!(
        o,
        "<header><span class=\"brand\">meterlake</span>{}</header><main><h1>Not shown</h1><p class=\"error\" role=\"alert\">{}</p><p><a href=\"/\">Back to the overview</a></p></main></body></html>",
        who_box(who),
        esc(message)
    );
    o
}

fn who_box(who: &Principal) -> String {
    let name = match who {
        Principal::Admin(k) => format!("admin (key {k})"),
        Principal::Tenant(t) => format!("tenant {t}"),
    };
    format!(
        "<form class=\"who\" method=\"post\" action=\"/logout\">Signed in as {} <button type=\"submit\">Sign out</button></form>",
        esc(&name)
    )
}

/// The query that keeps a view's scope and period across pages.
fn query(v: &View, with_granularity: bool) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    if let Some(t) = &v.tenant {
        q.append_pair("tenant", t);
    }
    if v.period.is_empty() {
        q.append_pair("from", &rfc3339(v.from));
        q.append_pair("to", &rfc3339(v.to));
    } else {
        q.append_pair("period", &v.period);
    }
    if with_granularity && v.granularity != Granularity::Day {
        q.append_pair("granularity", &v.granularity.to_string());
    }
    q.finish()
}

/// The page's main part (what `/live` swaps in), or the whole page around it.
/// Returns the HTML and the data version it shows.
pub(super) fn main(
    app: &Arc<App>,
    who: &Principal,
    p: Page,
    v: &View,
    fragment: bool,
) -> Result<(String, String)> {
    let cache = &app.dashboard.cache;
    let version = cache.version(&app.opts.lake);
    // What this scope may see of the data's state: its own latest event.
    let (shown, latest) = cache.shown_version(&app.opts.lake, v.tenant.as_deref(), &version);
    let key = format!(
        "{p:?}|{:?}|{}|{}|{}|{}",
        v.tenant, v.from, v.to, v.granularity, v.property
    );
    let build: Build = {
        let (a, v, key) = (app.clone(), v.clone(), version.key.clone());
        Arc::new(move || content(&a, p, &v, &key, latest))
    };
    let built = cache.get_or_build(&key, &version.key, build)?;
    // A page served as it was while it is rebuilt says so, and the script asks again.
    let shown = if built.version == version.key {
        shown
    } else {
        "stale".into()
    };
    let mut m = String::new();
    let _ = write!(
        m,
        "<p class=\"asof\">Data as of {} · page built for {} (UTC) · <span id=\"checked\" aria-live=\"polite\">updates itself when new data arrives</span></p>",
        latest.map_or("no events yet".to_string(), |t| format!(
            "the latest event, {}",
            rfc3339(t)
        )),
        rfc3339(v.at)
    );
    m.push_str(&built.html);
    if fragment {
        return Ok((m, shown));
    }
    let mut o = head(p.title());
    o.push_str("<header><span class=\"brand\">meterlake</span><nav aria-label=\"Pages\">");
    let q = query(v, false);
    for x in Page::ALL {
        let cur = if x == p { " aria-current=\"page\"" } else { "" };
        let _ = write!(
            o,
            "<a href=\"{}{}{}\"{cur}>{}</a>",
            x.path(),
            if q.is_empty() { "" } else { "?" },
            esc(&q),
            esc(x.title())
        );
    }
    o.push_str("</nav>");
    o.push_str(&picker(app, who, p, v, latest));
    o.push_str(&who_box(who));
    let _ = write!(
        o,
        "</header><main id=\"main\" data-version=\"{}\">{m}</main><script src=\"/assets/live.js\"></script></body></html>",
        esc(&shown)
    );
    Ok((o, shown))
}

/// The scope and period pickers: a plain GET form (works without script).
fn picker(app: &App, who: &Principal, p: Page, v: &View, latest: Option<i64>) -> String {
    let mut o = format!(
        "<form class=\"pick\" method=\"get\" action=\"{}\">",
        p.path()
    );
    if let Principal::Admin(_) = who {
        o.push_str("<label>Tenant <select name=\"tenant\"><option value=\"\">All tenants</option>");
        let mut ids: Vec<&str> = app
            .opts
            .billing
            .tenants
            .iter()
            .map(|t| t.id.as_str())
            .collect();
        ids.sort_unstable();
        if let Some(t) = &v.tenant
            && !ids.contains(&t.as_str())
        {
            ids.push(t);
        }
        for id in ids {
            let sel = if v.tenant.as_deref() == Some(id) {
                " selected"
            } else {
                ""
            };
            let _ = write!(o, "<option{sel}>{}</option>", esc(id));
        }
        o.push_str("</select></label>");
    }
    o.push_str("<label>Period <select name=\"period\">");
    let mut periods: Vec<(String, String)> = ["7d", "30d", "90d"]
        .iter()
        .map(|d| (d.to_string(), format!("last {}", d.replace('d', " days"))))
        .collect();
    let mut months: Vec<String> = Vec::new();
    for anchor in [Some(v.at), latest].into_iter().flatten() {
        let d = chrono::DateTime::from_timestamp_micros(anchor).map(|d| d.date_naive());
        let Some(mut d) = d.and_then(|d| d.with_day0(0)) else {
            continue;
        };
        for _ in 0..3 {
            let m = d.format("%Y-%m").to_string();
            if !months.contains(&m) {
                months.push(m);
            }
            d = match d.pred_opt().and_then(|x| x.with_day0(0)) {
                Some(x) => x,
                None => break,
            };
        }
    }
    months.sort_unstable_by(|a, b| b.cmp(a));
    periods.extend(months.into_iter().map(|m| (m.clone(), m)));
    if v.period.is_empty() {
        periods.insert(
            0,
            (
                String::new(),
                format!("{} to {}", date_str(v.from), date_str(v.to - 1)),
            ),
        );
    } else if !periods.iter().any(|x| x.0 == v.period) {
        periods.push((v.period.clone(), v.period.clone()));
    }
    for (value, label) in periods {
        let sel = if value == v.period { " selected" } else { "" };
        let _ = write!(
            o,
            "<option value=\"{}\"{sel}>{}</option>",
            esc(&value),
            esc(&label)
        );
    }
    o.push_str("</select></label>");
    if p == Page::Usage {
        o.push_str("<label>By <select name=\"granularity\">");
        for g in ["hour", "day", "week", "month"] {
            let sel = if v.granularity.to_string() == g {
                " selected"
            } else {
                ""
            };
            let _ = write!(o, "<option{sel}>{g}</option>");
        }
        o.push_str("</select></label>");
    }
    o.push_str("<button type=\"submit\">Show</button></form>");
    o
}

use chrono::Datelike;

/// What a page shows: a note when the period has no data, the built page, and the alerts
/// on the anomalies page.
/// `version` is the data's version the page is built for (its quotas are kept under it).
fn content(app: &App, p: Page, v: &View, version: &str, latest: Option<i64>) -> Result<String> {
    let mut o = String::new();
    if let Some(latest) = latest
        && latest < v.from
    {
        let month = chrono::DateTime::from_timestamp_micros(latest)
            .map(|d| d.format("%Y-%m").to_string())
            .unwrap_or_default();
        let mut q = form_urlencoded::Serializer::new(String::new());
        if let Some(t) = &v.tenant {
            q.append_pair("tenant", t);
        }
        let base = q.finish();
        let amp = if base.is_empty() { "" } else { "&amp;" };
        let _ = write!(
            o,
            "<p class=\"banner\" role=\"status\">No events in this period: the latest event is at {}. Show <a href=\"{}?{}{amp}period={month}\">{month}</a> or <a href=\"{}?{}{amp}to={}\">the 30 days up to it</a>.</p>",
            rfc3339(latest),
            p.path(),
            esc(&base),
            p.path(),
            esc(&base),
            date_str(latest + MICROS_PER_DAY),
        );
    }
    let opts = crate::report::PageOptions {
        tenant: v.tenant.clone(),
        from: v.from,
        to: v.to,
        at: v.at,
        granularity: v.granularity,
        property: v.property.clone(),
        top: 10,
    };
    let quotas = if p.reads_quotas() {
        let at = opts.quota_instant();
        let lake = crate::lake::Lake::open(&app.opts.lake)?;
        Some(
            app.dashboard
                .quotas
                .get_or_eval(v.tenant.as_deref(), at, version, || {
                    crate::stage::quotas::evaluate(
                        &lake,
                        &app.opts.billing,
                        at,
                        v.tenant.as_deref(),
                    )
                })?,
        )
    } else {
        None
    };
    let r = crate::report::page(
        &app.opts.lake,
        Some(&app.opts.billing),
        &app.opts.meters,
        p,
        &opts,
        quotas.as_deref(),
    )?;
    let _ = write!(
        o,
        "<h1>{}</h1><p class=\"scope\">{}</p>",
        esc(&r.title),
        esc(&r.scope)
    );
    if p == Page::Anomalies {
        o.push_str(&alerts(app, v)?);
    }
    o.push_str(&crate::report::html_body(&r, false)?);
    Ok(o)
}

/// Alerts shown at most.
const ALERT_ROWS: usize = 200;

/// The scope's alerts, open ones first, newest first, each open one with its button.
fn alerts(app: &App, v: &View) -> Result<String> {
    let mut list: Vec<_> = crate::stage::tables::alerts::read_lake(&app.opts.lake)?
        .into_iter()
        .filter(|a| v.tenant.as_deref().is_none_or(|t| t == a.tenant_id))
        .collect();
    list.sort_by(|a, b| {
        a.acknowledged_at
            .is_some()
            .cmp(&b.acknowledged_at.is_some())
            .then_with(|| b.raised_at.cmp(&a.raised_at))
            .then_with(|| a.id.cmp(&b.id))
    });
    let open = list.iter().filter(|a| a.acknowledged_at.is_none()).count();
    let mut o = format!(
        "<h2>Alerts</h2><p>{open} open of {}{}.</p>",
        list.len(),
        if list.len() > ALERT_ROWS {
            format!("; the first {ALERT_ROWS} shown")
        } else {
            String::new()
        }
    );
    if list.is_empty() {
        return Ok(o);
    }
    let mut back = form_urlencoded::Serializer::new(String::new());
    if let Some(t) = &v.tenant {
        back.append_pair("tenant", t);
    }
    let back = back.finish();
    o.push_str("<div class=\"scroll\" tabindex=\"0\" role=\"region\" aria-label=\"Alerts\"><table><thead><tr><th>raised</th><th>tenant_id</th><th>kind</th><th>meter</th><th>severity</th><th>message</th><th>status</th></tr></thead><tbody>");
    for a in list.iter().take(ALERT_ROWS) {
        let status = match (&a.acknowledged_at, &a.acknowledged_by) {
            (Some(at), by) => format!(
                "acknowledged {}{}",
                esc(at),
                by.as_deref()
                    .map_or(String::new(), |b| format!(" by {}", esc(b)))
            ),
            (None, _) => {
                let id: String = form_urlencoded::byte_serialize(a.id.as_bytes()).collect();
                format!(
                    "<form method=\"post\" action=\"/anomalies/alerts/{}/acknowledge{}{}\"><button type=\"submit\" aria-label=\"Acknowledge alert {}\">Acknowledge</button></form>",
                    esc(&id),
                    if back.is_empty() { "" } else { "?" },
                    esc(&back),
                    esc(&a.id)
                )
            }
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{status}</td></tr>",
            esc(&a.raised_at),
            esc(&a.tenant_id),
            esc(&a.kind),
            esc(&a.meter),
            esc(&a.severity),
            esc(&a.message)
        );
    }
    o.push_str("</tbody></table></div>\n");
    Ok(o)
}
