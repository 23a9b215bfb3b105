//! The dashboard: what a person opens in a browser, served by `meterlake serve` itself.
//!
//! Pages: `/` (overview), `/usage`, `/forecasts`, `/anomalies`, `/billing`, each
//! server-rendered HTML with inline SVG charts (the reports' renderer, on the pages
//! `crate::report::page` builds) and one small script (`live.js`, served from the binary
//! at `/assets/live.js`) that polls `/live` and swaps in the new content when the data
//! changed. A Content-Security-Policy keeps everything on this origin.
//!
//! - **Sign-in**: `GET /` without a session shows a form with one password field that
//!   posts the API key to `/login`, which opens a session ([`session`]); `POST /logout`
//!   closes it. Keys never appear in a URL.
//! - **Scope**: an admin key sees every tenant, all at once (platform totals) or one picked
//!   with `?tenant=T`; a tenant key sees its own tenant only, and asking for another one
//!   answers 403, on every page and on `/live`.
//! - **Period**: `?period=7d|30d|90d` (ending at the midnight after now, UTC) or
//!   `?period=YYYY-MM`, or `?from=&to=` (days or RFC 3339); 30 days by default. "Now" is the
//!   wall clock. Usage trends take `?granularity=hour|day|week|month` (day) and the
//!   breakdown `?property=` (`feature`).
//! - **Alerts**: the anomalies page lists the scope's alerts with an Acknowledge button
//!   (`POST /anomalies/alerts/{id}/acknowledge`), recorded in the alert store as the API's
//!   acknowledgement is (`dashboard:TENANT` or `dashboard-admin:KEY`).
//! - **Speed**: a built page is kept ([`cache`]) until the data changes (a lake commit, a
//!   derived table rewritten, an alert acknowledged) or it is [`cache::MAX_AGE`] old, so a
//!   page costs its build once per change of the data, not once per view. Builds run on
//!   blocking threads, at most `--heavy-concurrency` at once.

pub mod cache;
mod page;
pub mod session;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;

use super::App;
use super::auth::{Principal, key_hash};
use crate::report::Page;
use crate::rollup::Granularity;
use crate::time::MICROS_PER_DAY;

pub use cache::Cache;
pub use session::Sessions;

/// The dashboard's routes.
pub fn routes() -> Router<Arc<App>> {
    let mut r = Router::new()
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/live", get(live))
        .route("/assets/live.js", get(script))
        .route("/anomalies/alerts/{id}/acknowledge", post(acknowledge));
    for p in Page::ALL {
        r = r.route(
            p.path(),
            get(
                move |s: State<Arc<App>>, h: HeaderMap, q: axum::extract::RawQuery| {
                    show(s, h, q, p)
                },
            ),
        );
    }
    r
}

/// An HTML answer, never cached by the browser, framed by no one.
fn html(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
        .into_response()
}

fn see_other(to: &str, cookie: Option<String>) -> Response {
    let mut r = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response();
    if let Some(c) = cookie
        && let Ok(v) = c.parse()
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

/// Whether a POST comes from this site's own pages: a browser says where a request comes
/// from (`Sec-Fetch-Site`, `Origin`), and a form posted from another site is refused, so
/// no other site can sign a person in or out or acknowledge an alert in their name (the
/// `SameSite` cookie stops it only from being sent). A client that sends neither header
/// (not a browser) is let through.
fn same_origin(h: &HeaderMap) -> bool {
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site") {
        return matches!(site, "same-origin" | "none");
    }
    match (get("origin"), get("host")) {
        (Some(o), Some(host)) => o
            .split_once("://")
            .is_some_and(|(_, authority)| authority == host),
        (Some(_), None) => false,
        (None, _) => true,
    }
}

fn cross_site() -> Response {
    html(
        StatusCode::FORBIDDEN,
        page::login(Some("Refused: this form was posted from another site.")),
    )
}

/// Who the request's session is: the principal of the key it was opened with, while that
/// key is active.
fn principal(app: &App, h: &HeaderMap) -> Option<(Principal, String)> {
    let hash = app.dashboard.sessions.key_of(h)?;
    let p = app.keys.keys().principal_of_hash(&hash)?;
    Some((p, hash))
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
}

async fn login(State(app): State<Arc<App>>, h: HeaderMap, body: Bytes) -> Response {
    if !same_origin(&h) {
        return cross_site();
    }
    let Ok(form) = serde_urlencoded::from_bytes::<LoginForm>(&body) else {
        return html(
            StatusCode::BAD_REQUEST,
            page::login(Some("The form needs the field `key`: your API key.")),
        );
    };
    let hash = key_hash(form.key.trim());
    // A key made a moment ago works at once: the keys file is re-read on a miss.
    let known = |a: &App| a.keys.keys().principal_of_hash(&hash).is_some();
    if !(known(&app) || app.keys.refresh() && known(&app)) {
        return html(
            StatusCode::UNAUTHORIZED,
            page::login(Some("That key is not a valid API key of this server.")),
        );
    }
    match app.dashboard.sessions.open(hash) {
        Ok(id) => see_other("/", Some(session::set_cookie(&id))),
        Err(e) => failed("opening a session", e),
    }
}

/// A failure of the server's own (a read, a worker): logged, and answered without the
/// detail (paths, internals) a browser should not see.
fn failed(what: &str, e: impl std::fmt::Display) -> Response {
    tracing::error!("dashboard: {what}: {e}");
    html(
        StatusCode::INTERNAL_SERVER_ERROR,
        "<p>meterlake could not do this; the server log says why.</p>".into(),
    )
}

async fn logout(State(app): State<Arc<App>>, h: HeaderMap) -> Response {
    if !same_origin(&h) {
        return cross_site();
    }
    app.dashboard.sessions.close(&h);
    see_other("/", Some(session::clear_cookie()))
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        include_str!("live.js"),
    )
        .into_response()
}

/// The query of a page.
#[derive(Deserialize, Default, Clone)]
struct PageQ {
    tenant: Option<String>,
    period: Option<String>,
    from: Option<String>,
    to: Option<String>,
    granularity: Option<String>,
    property: Option<String>,
}

/// The settled view of a request: scope, period and options.
#[derive(Debug, Clone)]
pub(crate) struct View {
    pub tenant: Option<String>,
    pub from: i64,
    pub to: i64,
    pub at: i64,
    pub period: String,
    pub granularity: Granularity,
    pub property: String,
}

/// A refusal shown as a page.
struct Refusal(StatusCode, String);

/// The tenant a request may see, from its key and `?tenant=`: a tenant key its own (another
/// is refused, 403), an admin key the one it asks for, or all (None). Every page and
/// `/live` decide it here.
fn scope_of(who: &Principal, asked: Option<&str>) -> Result<Option<String>, Refusal> {
    match (who, asked.filter(|t| !t.is_empty())) {
        (Principal::Tenant(t), None) => Ok(Some(t.clone())),
        (Principal::Tenant(t), Some(a)) if a == t => Ok(Some(t.clone())),
        (Principal::Tenant(_), Some(_)) => Err(Refusal(
            StatusCode::FORBIDDEN,
            "This key belongs to another tenant.".into(),
        )),
        (Principal::Admin(_), a) => Ok(a.map(str::to_string)),
    }
}

fn view(who: &Principal, q: &PageQ, now: i64) -> Result<View, Refusal> {
    let bad = |m: String| Refusal(StatusCode::BAD_REQUEST, m);
    let tenant = scope_of(who, q.tenant.as_deref())?;
    if let Some(t) = &tenant {
        crate::ingest::record::check_id("tenant", t)
            .map_err(|r| bad(format!("tenant {t:?} {}", r.reason)))?;
    }
    let end_of_today = (now.div_euclid(MICROS_PER_DAY) + 1) * MICROS_PER_DAY;
    let instant = |name: &'static str, s: &str| {
        crate::time::parse_instant(name, s).map_err(|e| bad(e.to_string()))
    };
    let (from, to, period) = match (q.from.as_deref(), q.to.as_deref(), q.period.as_deref()) {
        (f, t, _) if f.is_some() || t.is_some() => {
            let to = match t {
                Some(t) => instant("to", t)?,
                None => end_of_today,
            };
            let from = match f {
                Some(f) => instant("from", f)?,
                None => to - 30 * MICROS_PER_DAY,
            };
            // The pages add up UTC days (as reports do): a bound inside a day is refused
            // here, as the client's, not failed on later as the server's.
            for (name, v) in [("from", from), ("to", to)] {
                if v.rem_euclid(MICROS_PER_DAY) != 0 {
                    return Err(bad(format!(
                        "{name} {} is not a UTC midnight: pages cover whole UTC days, give a date (YYYY-MM-DD)",
                        crate::time::rfc3339(v)
                    )));
                }
            }
            (from, to, String::new())
        }
        (_, _, None | Some("")) => (
            end_of_today - 30 * MICROS_PER_DAY,
            end_of_today,
            "30d".into(),
        ),
        (_, _, Some(p)) => match p.strip_suffix('d').and_then(|n| n.parse::<i64>().ok()) {
            Some(n @ 1..=366) => (end_of_today - n * MICROS_PER_DAY, end_of_today, p.into()),
            _ => {
                let (y, m) = crate::billing::invoice::parse_month(p).map_err(|_| {
                    bad(format!(
                        "period {p:?} is not 7d, 30d, 90d (1 to 366 days) or a month YYYY-MM"
                    ))
                })?;
                let start = |y: i32, m: u32| {
                    chrono::NaiveDate::from_ymd_opt(y, m, 1).map(|d| {
                        d.and_hms_opt(0, 0, 0)
                            .unwrap_or_default()
                            .and_utc()
                            .timestamp_micros()
                    })
                };
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                match (start(y, m), start(ny, nm)) {
                    (Some(a), Some(b)) => (a, b, p.into()),
                    _ => return Err(bad(format!("period {p:?} is out of range"))),
                }
            }
        },
    };
    // Instants from 1970 to 9999 only: beyond them the span checks below would overflow.
    const LAST: i64 = 253_402_300_800_000_000; // 10000-01-01
    if !(0..LAST).contains(&from) || !(0..=LAST).contains(&to) {
        return Err(bad("`from` and `to` must lie between 1970 and 9999".into()));
    }
    if from >= to {
        return Err(bad("`from` must be before `to`".into()));
    }
    if to - from > 3 * 366 * MICROS_PER_DAY {
        return Err(bad("a period spans at most three years".into()));
    }
    let granularity = match q.granularity.as_deref().unwrap_or("day") {
        "hour" => Granularity::Hour,
        "day" => Granularity::Day,
        "week" => Granularity::Week,
        "month" => Granularity::Month,
        g => {
            return Err(bad(format!(
                "granularity {g:?} is not hour, day, week or month"
            )));
        }
    };
    if granularity == Granularity::Hour && to - from > 92 * MICROS_PER_DAY {
        return Err(bad(
            "hourly trends span at most 92 days: pick day, week or month".into(),
        ));
    }
    let property = q.property.clone().unwrap_or_else(|| "feature".into());
    if property.is_empty()
        || property.len() > 64
        || !property
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    {
        return Err(bad(format!("property {property:?} is not a property name")));
    }
    Ok(View {
        tenant,
        from,
        to,
        // To the minute: views within a minute share their quota evaluation.
        at: now.div_euclid(60_000_000) * 60_000_000,
        period,
        granularity,
        property,
    })
}

async fn show(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
    p: Page,
) -> Response {
    let Some((who, key_hash)) = principal(&app, &h) else {
        return if p == Page::Overview {
            html(StatusCode::OK, page::login(None))
        } else {
            see_other("/", None)
        };
    };
    let q: PageQ = match serde_urlencoded::from_str(raw.as_deref().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => {
            return html(
                StatusCode::BAD_REQUEST,
                page::refusal(&who, &format!("query: {e}")),
            );
        }
    };
    let v = match view(&who, &q, crate::time::now()) {
        Ok(v) => v,
        Err(Refusal(code, m)) => return html(code, page::refusal(&who, &m)),
    };
    let fragment = h.get("x-fragment").is_some();
    let asked = v.tenant.clone();
    let a = app.clone();
    let w = who.clone();
    let key_id = app.keys.keys().id_of_hash(&key_hash).unwrap_or_default();
    let what = format!(
        "dashboard {}{}{}",
        p.path(),
        raw.as_deref().map_or(String::new(), |q| format!("?{q}")),
        if fragment { " (live update)" } else { "" }
    );
    let built = tokio::task::spawn_blocking(move || {
        // Every view is in the access log before it is shown; one that cannot be recorded
        // is not shown.
        let actor = w.actor();
        crate::lake::access::record(
            &a.opts.lake,
            crate::lake::access::Read {
                actor: &actor,
                via: "dashboard",
                key_id: Some(&key_id),
                tenant: v.tenant.as_deref().unwrap_or("*"),
                what: &what,
            },
        )?;
        page::main(&a, &w, p, &v, fragment)
    })
    .await;
    match built {
        Ok(Ok((body, version))) => {
            let mut r = html(StatusCode::OK, body);
            if let Ok(v) = version.parse() {
                r.headers_mut().insert("x-data-version", v);
            }
            r
        }
        // A tenant with neither events nor a plan.
        Ok(Err(crate::Error::InvalidParameter {
            name: "--tenant", ..
        })) => html(
            StatusCode::NOT_FOUND,
            page::refusal(
                &who,
                &format!(
                    "No tenant {} here: it has no events and no plan.",
                    asked.unwrap_or_default()
                ),
            ),
        ),
        Ok(Err(e)) => failed("building a page", e),
        Err(e) => failed("building a page", e),
    }
}

/// `GET /live?tenant=`: the version of the data the page's scope may see, and its latest
/// event, for the page's poll. A tenant key gets its own tenant's only (another tenant:
/// 403), so nothing of another tenant's activity shows through.
async fn live(
    State(app): State<Arc<App>>,
    h: HeaderMap,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Response {
    let Some((who, _)) = principal(&app, &h) else {
        return (StatusCode::UNAUTHORIZED, "sign in first").into_response();
    };
    let q: PageQ = serde_urlencoded::from_str(raw.as_deref().unwrap_or("")).unwrap_or_default();
    let scope = match scope_of(&who, q.tenant.as_deref()) {
        Ok(s) => s,
        Err(Refusal(code, m)) => return (code, m).into_response(),
    };
    let a = app.clone();
    let shown = tokio::task::spawn_blocking(move || {
        let v = a.dashboard.cache.version(&a.opts.lake);
        a.dashboard
            .cache
            .shown_version(&a.opts.lake, scope.as_deref(), &v)
    })
    .await;
    match shown {
        Ok((version, latest)) => (
            [(header::CACHE_CONTROL, "no-store")],
            axum::Json(serde_json::json!({
                "version": version,
                "latest_event": latest.map(crate::time::rfc3339),
            })),
        )
            .into_response(),
        Err(e) => {
            tracing::error!("dashboard /live: {e}");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

async fn acknowledge(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    h: HeaderMap,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Response {
    if !same_origin(&h) {
        return cross_site();
    }
    let Some((who, _)) = principal(&app, &h) else {
        return see_other("/", None);
    };
    let back = match raw {
        Some(q) if !q.is_empty() => format!("/anomalies?{q}"),
        _ => "/anomalies".into(),
    };
    let a = app.clone();
    let done = tokio::task::spawn_blocking(move || -> crate::error::Result<bool> {
        let acked = super::scope::acknowledge_as(&a.opts.lake, &who, &id, "dashboard")?;
        if acked.is_some() {
            a.dashboard.cache.clear();
        }
        Ok(acked.is_some())
    })
    .await;
    match done {
        Ok(Ok(true)) => see_other(&back, None),
        // Another tenant's alert is reported as missing, as the API does.
        Ok(Ok(false)) => html(StatusCode::NOT_FOUND, "<p>No such alert.</p>".into()),
        Ok(Err(e)) => failed("acknowledging an alert", e),
        Err(e) => failed("acknowledging an alert", e),
    }
}

/// Builds the all-tenants overview of the default period in the background, so that the
/// first admin to open `/` finds it ready (on a large lake it takes seconds to build).
pub fn prewarm(app: Arc<App>) {
    std::thread::spawn(move || {
        let who = Principal::Admin("prewarm".into());
        if let Ok(v) = view(&who, &PageQ::default(), crate::time::now())
            && let Err(e) = page::main(&app, &who, Page::Overview, &v, true)
        {
            tracing::warn!("dashboard: building the overview ahead: {e}");
        }
    });
}

/// The dashboard's state in the server.
pub struct Dashboard {
    /// Signed-in sessions.
    pub sessions: Sessions,
    /// Built pages.
    pub cache: Arc<Cache>,
    /// Quotas the pages evaluated.
    pub quotas: cache::Quotas,
}

impl Dashboard {
    /// Empty, with at most `builds` pages built at once.
    pub fn new(builds: usize) -> Dashboard {
        Dashboard {
            sessions: Sessions::default(),
            cache: Arc::new(Cache::new(builds)),
            quotas: cache::Quotas::default(),
        }
    }
}
