//! Issued invoices: once a period's invoices are written, nothing rewrites them.
//!
//! The lake keeps every issued period under `_invoices/`:
//! - `YYYY-MM.json`: the invoices exactly as issued (the bytes `run` wrote to
//!   `OUT/invoices/YYYY-MM.json`), created once and never replaced (a hard link from a
//!   synced temporary file, so a crash leaves either no file or the whole one, and a second
//!   writer cannot replace the first's);
//! - `YYYY-MM.state.json`: its SHA-256, when it was issued, and the lake commit up to which
//!   late events were looked for;
//! - `adjustments.json`: the corrections found since, each a credit or debit line with its
//!   reason, carried into the next period's invoices.
//!
//! A later `run` never recomputes an issued period into its file. It looks at the commits
//! made since: when events dated inside the period arrived (late events), it recomputes the
//! period and records what differs from the invoice plus the adjustments already recorded,
//! per tenant and meter whose usage changed, as new adjustments (priced at the current
//! terms). When events of the period were removed (`retention`, `forget`), the data no
//! longer shows what was billed, so the period is not recomputed at all: the invoice
//! stands. Plan, price or tenant changes made after issue are not adjustments (an amount or
//! base fee that moved with the same usage, a tenant no longer listed); they apply from the
//! next period.
//!
//! A month is issued only once every period in it has ended (a tenant anchored on the 15th,
//! or west of UTC, ends after the calendar month): until then `run` writes it as a draft.
//! Closing takes a lock (`_invoices/_lock`), so two runs cannot record the same late events
//! twice.
//!
//! An adjustment belongs to the first invoice issued after it was found; which ones are
//! applied is read from the issued invoices themselves (their adjustment ids), so a crash
//! between issuing and any bookkeeping can neither lose nor repeat one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::billing::Billing;
use crate::billing::invoice::{Adjustment, Invoices, invoices};
use crate::error::{Error, IoContext, Result};
use crate::lake::{CommitKind, Lake};

/// The directory of issued invoices, under the lake root.
pub const DIR: &str = "_invoices";

/// What is kept beside an issued period's file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// `YYYY-MM`.
    pub period: String,
    /// SHA-256 of the issued file, hex.
    pub sha256: String,
    /// The lake's last commit when it was issued.
    pub issued_seq: u64,
    /// Commits up to this one were looked at for late events.
    pub checked_seq: u64,
    /// Set when events of the period were removed after issue: it is never recomputed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frozen: Option<String>,
}

/// What [`Register::close`] did.
#[derive(Debug, Clone, Default)]
pub struct Closed {
    /// The file written under the output directory.
    pub path: PathBuf,
    /// Tenants invoiced.
    pub invoices: usize,
    /// Whether the period was issued now (false: it already was, and was copied as issued).
    pub issued_now: bool,
    /// Adjustments found in this run (late events of issued periods).
    pub adjustments_found: usize,
    /// Adjustments billed in the invoices issued now.
    pub adjustments_applied: usize,
    /// Issued periods left as issued because their events were removed since.
    pub frozen: Vec<String>,
    /// Not issued yet: the last of the month's periods ends then (the file is a draft).
    pub open_until: Option<String>,
}

/// The issued invoices of one lake.
pub struct Register {
    dir: PathBuf,
}

impl Register {
    /// The register of the lake at `root` (nothing is created until a period is issued).
    pub fn of(root: &Path) -> Register {
        Register {
            dir: root.join(DIR),
        }
    }

    fn file(&self, period: &str) -> PathBuf {
        self.dir.join(format!("{period}.json"))
    }

    fn state_file(&self, period: &str) -> PathBuf {
        self.dir.join(format!("{period}.state.json"))
    }

    fn adjustments_file(&self) -> PathBuf {
        self.dir.join("adjustments.json")
    }

    /// Issued periods, oldest first.
    pub fn periods(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return Ok(out);
        };
        for e in rd {
            let name = e.at(&self.dir)?.file_name();
            let name = name.to_string_lossy();
            if let Some(p) = name.strip_suffix(".json")
                && crate::billing::invoice::parse_month(p).is_ok()
            {
                out.push(p.to_string());
            }
        }
        out.sort();
        Ok(out)
    }

    /// The issued bytes of `period`, checked against the SHA-256 recorded at issue.
    pub fn issued_bytes(&self, period: &str) -> Result<Option<Vec<u8>>> {
        let path = self.file(period);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            // Issued (its state is written after the file) and gone: deleted, not a month
            // to issue again with today's numbers.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return match self.state(period)? {
                    Some(st) => Err(Error::CorruptLake {
                        path,
                        reason: format!(
                            "the issued invoices of {period} (SHA-256 {}) are missing: restore the file (a copy is in the job's out/invoices/); they are never issued twice",
                            st.sha256
                        ),
                    }),
                    None => Ok(None),
                };
            }
            Err(e) => return Err(e).at(&path),
        };
        if let Some(st) = self.state(period)?
            && st.sha256 != sha256(&bytes)
        {
            return Err(Error::CorruptLake {
                path,
                reason: format!(
                    "the issued invoices of {period} do not match their recorded SHA-256 {} (changed after issue)",
                    st.sha256
                ),
            });
        }
        Ok(Some(bytes))
    }

    fn state(&self, period: &str) -> Result<Option<State>> {
        let path = self.state_file(period);
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| Error::CorruptLake {
                    path,
                    reason: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(&path),
        }
    }

    fn write_state(&self, st: &State) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(st).map_err(|e| Error::Render(e.to_string()))?;
        crate::stage::tables::atomic_write(&self.state_file(&st.period), &bytes)
    }

    /// Every adjustment recorded, in the order found.
    pub fn adjustments(&self) -> Result<Vec<Adjustment>> {
        let path = self.adjustments_file();
        match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| Error::CorruptLake {
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).at(&path),
        }
    }

    /// `period`'s invoices as issued, if they were.
    pub fn issued(&self, period: &str) -> Result<Option<Invoices>> {
        let Some(bytes) = self.issued_bytes(period)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::CorruptLake {
                path: self.file(period),
                reason: e.to_string(),
            })
    }

    /// The first UTC day that may hold events of a period not yet invoiced: the earliest
    /// end of the last issued period's invoices. `None` when nothing was issued.
    pub fn unbilled_from(&self) -> Result<Option<String>> {
        let Some(last) = self.periods()?.pop() else {
            return Ok(None);
        };
        let Some(f) = self.issued(&last)? else {
            return Ok(None);
        };
        let mut first: Option<i64> = None;
        for i in &f.invoices {
            let end = crate::time::parse_instant("period_end", &i.period_end)?;
            first = Some(first.map_or(end, |f| f.min(end)));
        }
        Ok(first.map(crate::time::date_str))
    }

    /// The first UTC day wholly inside the first issued month of every tenant: days before
    /// it may hold events of periods never issued (a lake's history before its first
    /// invoice), which retention keeps. `None` when nothing was issued.
    pub fn billed_from(&self) -> Result<Option<String>> {
        let Some(first) = self.periods()?.into_iter().next() else {
            return Ok(None);
        };
        let Some(f) = self.issued(&first)? else {
            return Ok(None);
        };
        let mut latest: Option<i64> = None;
        for i in &f.invoices {
            let start = crate::time::parse_instant("period_start", &i.period_start)?;
            latest = Some(latest.map_or(start, |l| l.max(start)));
        }
        // The first whole UTC day from the latest start on.
        Ok(latest.map(|l| {
            let day = crate::time::MICROS_PER_DAY;
            crate::time::date_str((l + day - 1).div_euclid(day) * day)
        }))
    }

    /// Closes `period`: issues it (with the adjustments not yet billed) if it was not, else
    /// leaves it as issued; first records adjustments for late events of periods issued
    /// before. Writes the issued bytes to `out` either way.
    pub fn close(
        &self,
        lake: &Lake,
        billing: &Billing,
        period: &str,
        out: &Path,
        at: i64,
    ) -> Result<Closed> {
        // One closing at a time per lake: two runs must not both record (and later both
        // bill) the same late events.
        let _lock = crate::lake::lock_dir(&self.dir)?;
        let mut closed = self.find_late(lake, billing)?;
        let bytes = match self.issued_bytes(period)? {
            Some(b) => b,
            None => {
                let mut inv = invoices(lake, billing, period, None)?;
                // Issued only once every period of the month has ended (a tenant anchored
                // on the 15th, or west of UTC, ends after the calendar month): until then
                // the file is a draft, recomputed by each run.
                let mut open_until = None;
                for i in &inv.invoices {
                    let end = crate::time::parse_instant("period_end", &i.period_end)?;
                    if end > at {
                        open_until = open_until.max(Some(i.period_end.clone()));
                    }
                }
                closed.adjustments_applied = self.bill_pending(&mut inv)?;
                let mut bytes =
                    serde_json::to_vec_pretty(&inv).map_err(|e| Error::Render(e.to_string()))?;
                bytes.push(b'\n');
                match open_until {
                    Some(end) => {
                        closed.open_until = Some(end);
                        bytes
                    }
                    None => {
                        let kept = self.issue(period, &bytes, lake.last_seq())?;
                        closed.issued_now = kept == bytes;
                        kept
                    }
                }
            }
        };
        let f: Invoices = serde_json::from_slice(&bytes).map_err(|e| Error::CorruptLake {
            path: self.file(period),
            reason: e.to_string(),
        })?;
        closed.invoices = f.invoices.len();
        std::fs::create_dir_all(out).at(out)?;
        let path = out.join(format!("{period}.json"));
        if std::fs::read(&path).ok().as_deref() != Some(&bytes[..]) {
            crate::stage::tables::atomic_write(&path, &bytes)?;
        }
        closed.path = path;
        Ok(closed)
    }

    /// Writes `bytes` as `period`'s issued file unless one exists (then that one's bytes
    /// are returned), and its state.
    fn issue(&self, period: &str, bytes: &[u8], seq: u64) -> Result<Vec<u8>> {
        std::fs::create_dir_all(&self.dir).at(&self.dir)?;
        let path = self.file(period);
        let tmp = crate::stage::tables::temp_path(&path);
        let linked = (|| {
            let mut f = std::fs::File::create(&tmp).at(&tmp)?;
            crate::fault::write_all("invoice.write", &mut f, bytes).at(&tmp)?;
            f.sync_all().at(&tmp)?;
            match std::fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
                Err(e) => Err(e).at(&path),
            }
        })();
        let _ = std::fs::remove_file(&tmp);
        if !linked? {
            return self
                .issued_bytes(period)?
                .ok_or_else(|| Error::CorruptLake {
                    path: path.clone(),
                    reason: "vanished while issuing".into(),
                });
        }
        if let Ok(d) = std::fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        crate::fault::check("invoice.state").at(&self.state_file(period))?;
        self.write_state(&State {
            period: period.to_string(),
            sha256: sha256(bytes),
            issued_seq: seq,
            checked_seq: seq,
            frozen: None,
        })?;
        Ok(bytes.to_vec())
    }

    /// Adds the adjustments that no issued invoice has billed yet to `inv`'s invoices (as
    /// lines of their own, counted in the totals). Returns how many.
    fn bill_pending(&self, inv: &mut Invoices) -> Result<usize> {
        let all = self.adjustments()?;
        if all.is_empty() {
            return Ok(0);
        }
        let mut billed = BTreeSet::new();
        for p in self.periods()? {
            if let Some(f) = self.issued(&p)? {
                for i in f.invoices {
                    billed.extend(i.adjustments.into_iter().map(|a| a.id));
                }
            }
        }
        let mut n = 0;
        for i in &mut inv.invoices {
            for a in all.iter().filter(|a| {
                a.tenant_id == i.tenant_id && a.period < inv.period && !billed.contains(&a.id)
            }) {
                i.total = i.total.saturating_add(a.amount);
                i.adjustments.push(a.clone());
                n += 1;
            }
        }
        Ok(n)
    }

    /// Looks at the commits since each issued period was last checked: late events of a
    /// period make it recomputed and its differences recorded as adjustments; removed
    /// events freeze it.
    fn find_late(&self, lake: &Lake, billing: &Billing) -> Result<Closed> {
        let mut closed = Closed::default();
        let last = lake.last_seq();
        let mut history = None;
        for period in self.periods()? {
            let Some(f) = self.issued(&period)? else {
                continue;
            };
            let mut st = match self.state(&period)? {
                Some(s) => s,
                // Issued, then a crash before its state: it was computed from the lake
                // as it is now, or close to it.
                None => {
                    let bytes = self.issued_bytes(&period)?.unwrap_or_default();
                    let st = State {
                        period: period.clone(),
                        sha256: sha256(&bytes),
                        issued_seq: last,
                        checked_seq: last,
                        frozen: None,
                    };
                    self.write_state(&st)?;
                    st
                }
            };
            if let Some(why) = &st.frozen {
                closed.frozen.push(format!("{period} ({why})"));
                continue;
            }
            if st.checked_seq >= last {
                continue;
            }
            let commits = match &history {
                Some(h) => h,
                None => history.insert(lake.history()?),
            };
            let (from, to) = span_days(&f)?;
            let inside = |d: &str| d >= from.as_str() && d <= to.as_str();
            let mut late = false;
            for c in commits.iter().filter(|c| c.seq > st.checked_seq) {
                let days: Vec<&str> = c
                    .partitions
                    .iter()
                    .map(String::as_str)
                    .chain(c.added.iter().map(|a| a.date.as_str()))
                    .chain(c.removed.iter().filter_map(|p| partition_of(p)))
                    .collect();
                if !days.iter().any(|d| inside(d)) {
                    continue;
                }
                match c.kind {
                    CommitKind::Retention | CommitKind::Forget => {
                        st.frozen = Some(format!(
                            "events of the period removed by {} at commit {}: not recomputed",
                            if c.kind == CommitKind::Retention {
                                "retention"
                            } else {
                                "forget"
                            },
                            c.seq
                        ));
                    }
                    // Restored events of a period not frozen (restored from another lake's
                    // archive, or removed before issue) count as late ones.
                    CommitKind::Ingest | CommitKind::Restore => late = true,
                    CommitKind::Compact => {}
                }
            }
            if let Some(why) = &st.frozen {
                closed.frozen.push(format!("{period} ({why})"));
            } else if late {
                let now = invoices(lake, billing, &period, None)?;
                let mut all = self.adjustments()?;
                let found = differences(&f, &now, &all, &period, last);
                if !found.is_empty() {
                    closed.adjustments_found += found.len();
                    all.extend(found);
                    std::fs::create_dir_all(&self.dir).at(&self.dir)?;
                    let bytes = serde_json::to_vec_pretty(&all)
                        .map_err(|e| Error::Render(e.to_string()))?;
                    crate::stage::tables::atomic_write(&self.adjustments_file(), &bytes)?;
                }
            }
            st.checked_seq = last;
            self.write_state(&st)?;
        }
        Ok(closed)
    }
}

/// `period`'s invoices for one tenant or all: as issued when they were, else computed from
/// the lake (a draft) with the adjustments no issued invoice has billed yet, as issuing
/// it now would bill them. The flag says which.
pub fn as_issued(
    lake: &Lake,
    billing: &Billing,
    period: &str,
    tenant: Option<&str>,
) -> Result<(Invoices, bool)> {
    crate::billing::invoice::parse_month(period)?;
    match Register::of(lake.root()).issued(period)? {
        Some(mut inv) => {
            // An unknown tenant is the same error either way.
            billing.select(tenant)?;
            if let Some(t) = tenant {
                inv.invoices.retain(|i| i.tenant_id == t);
            }
            Ok((inv, true))
        }
        None => {
            let mut inv = invoices(lake, billing, period, tenant)?;
            Register::of(lake.root()).bill_pending(&mut inv)?;
            Ok((inv, false))
        }
    }
}

/// What a recomputation `now` adds to the issued invoices `f` and the adjustments already
/// recorded for `period`, per tenant and item.
fn differences(
    f: &Invoices,
    now: &Invoices,
    recorded: &[Adjustment],
    period: &str,
    seq: u64,
) -> Vec<Adjustment> {
    // (tenant, item) -> (usage, amount) billed so far, and now.
    let mut billed = items(f);
    for a in recorded.iter().filter(|a| a.period == period) {
        let e = billed
            .entry((a.tenant_id.clone(), a.item.clone()))
            .or_default();
        e.0 += a.usage;
        e.1 += a.amount;
    }
    let fresh = items(now);
    // Only usage that changed is a correction: a price, plan or tenant edited after issue
    // (an amount or base fee that moved with the same usage, a tenant no longer listed)
    // applies from the next period, never backwards.
    let mut out = Vec::new();
    for (k, &(nu, na)) in &fresh {
        let Some(&(bu, ba)) = billed.get(k) else {
            continue;
        };
        let (du, da) = (nu - bu, na - ba);
        if du.is_zero() {
            continue;
        }
        out.push(Adjustment {
            id: format!("{period}/{}/{}/{seq}", k.0, k.1),
            period: period.to_string(),
            tenant_id: k.0.clone(),
            item: k.1.clone(),
            usage: du,
            amount: da,
            reason: format!(
                "late events for {period}: {} usage {bu} -> {nu} (amount {ba} -> {na}), found at lake commit {seq}",
                k.1
            ),
            lake_seq: seq,
        });
    }
    out
}

/// Usage and amount per (tenant, meter or `base_fee`) of a period's invoices.
fn items(inv: &Invoices) -> BTreeMap<(String, String), (Decimal, Decimal)> {
    let mut out: BTreeMap<(String, String), (Decimal, Decimal)> = BTreeMap::new();
    for i in &inv.invoices {
        for l in &i.lines {
            let e = out
                .entry((i.tenant_id.clone(), l.meter.clone()))
                .or_default();
            e.0 += l.usage;
            e.1 += l.amount;
        }
        out.entry((i.tenant_id.clone(), "base_fee".into()))
            .or_default()
            .1 += i.base_fee;
    }
    out
}

/// The UTC days an issued file's periods touch, a day wider on each side.
fn span_days(f: &Invoices) -> Result<(String, String)> {
    let mut lo = i64::MAX;
    let mut hi = i64::MIN;
    for i in &f.invoices {
        lo = lo.min(crate::time::parse_instant("period_start", &i.period_start)?);
        hi = hi.max(crate::time::parse_instant("period_end", &i.period_end)?);
    }
    if lo > hi {
        return Ok((String::new(), String::new()));
    }
    let day = crate::time::MICROS_PER_DAY;
    Ok((
        crate::time::date_str(lo - day),
        crate::time::date_str(hi + day),
    ))
}

/// `YYYY-MM-DD` of a data file's path (`events/date=YYYY-MM-DD/...`).
fn partition_of(path: &str) -> Option<&str> {
    let i = path.find("date=")? + 5;
    path.get(i..i + 10)
}

fn sha256(bytes: &[u8]) -> String {
    let d = sha2::Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::invoice::{Invoice, Line};

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn inv(tenant: &str, usage: &str, amount: &str) -> Invoice {
        Invoice {
            tenant_id: tenant.into(),
            plan: "basic".into(),
            previous_plan: None,
            period_start: "2026-09-01T00:00:00Z".into(),
            period_end: "2026-10-01T00:00:00Z".into(),
            lines: vec![Line {
                meter: "api_calls".into(),
                unit: "calls".into(),
                usage: d(usage),
                included: Some(d("1000")),
                overage_units: Decimal::ZERO,
                amount: d(amount),
                pricing: String::new(),
            }],
            base_fee: d("10"),
            total: d("10") + d(amount),
            adjustments: Vec::new(),
        }
    }

    fn file(invoices: Vec<Invoice>) -> Invoices {
        let all = Invoices {
            period: "2026-09".into(),
            currency: "EUR".into(),
            invoices,
        };
        // As read back from the issued bytes.
        serde_json::from_slice(&serde_json::to_vec(&all).unwrap()).unwrap()
    }

    #[test]
    fn only_what_changed_since_the_invoice_and_its_adjustments_is_new() {
        let issued = file(vec![inv("a", "1500", "0.50"), inv("b", "10", "0")]);
        let now = Invoices {
            period: "2026-09".into(),
            currency: "EUR".into(),
            invoices: vec![inv("a", "2500", "1.50"), inv("b", "10", "0")],
        };
        let found = differences(&issued, &now, &[], "2026-09", 7);
        assert_eq!(found.len(), 1);
        let a = &found[0];
        assert_eq!(
            (a.tenant_id.as_str(), a.item.as_str(), a.usage, a.amount),
            ("a", "api_calls", d("1000"), d("1.00"))
        );
        assert_eq!(a.id, "2026-09/a/api_calls/7");
        // Recorded, the same recomputation adds nothing; a further late event adds its own.
        assert!(differences(&issued, &now, &found, "2026-09", 8).is_empty());
        let later = Invoices {
            invoices: vec![inv("a", "2600", "1.60"), inv("b", "10", "0")],
            ..now.clone()
        };
        let more = differences(&issued, &later, &found, "2026-09", 9);
        assert_eq!(
            (more.len(), more[0].usage, more[0].amount),
            (1, d("100"), d("0.10"))
        );
        // Adjustments of another period do not count against this one.
        let other = Adjustment {
            period: "2026-08".into(),
            ..found[0].clone()
        };
        assert_eq!(differences(&issued, &now, &[other], "2026-09", 8).len(), 1);
    }

    #[test]
    fn an_issued_file_is_created_once_and_checked_against_its_checksum() {
        let dir = tempfile::tempdir().unwrap();
        let reg = Register::of(dir.path());
        assert_eq!(reg.unbilled_from().unwrap(), None);
        let bytes = serde_json::to_vec(&Invoices {
            period: "2026-09".into(),
            currency: "EUR".into(),
            invoices: vec![inv("a", "1", "0")],
        })
        .unwrap();
        assert_eq!(reg.issue("2026-09", &bytes, 3).unwrap(), bytes);
        // A second issue of the period keeps the first's bytes.
        assert_eq!(reg.issue("2026-09", b"{}", 4).unwrap(), bytes);
        assert_eq!(reg.periods().unwrap(), vec!["2026-09".to_string()]);
        assert_eq!(reg.unbilled_from().unwrap().as_deref(), Some("2026-10-01"));
        assert_eq!(reg.billed_from().unwrap().as_deref(), Some("2026-09-01"));
        std::fs::write(dir.path().join(DIR).join("2026-09.json"), b"{\"x\":1}").unwrap();
        let err = reg.issued_bytes("2026-09").unwrap_err().to_string();
        assert!(
            err.contains("2026-09.json") && err.contains("SHA-256"),
            "{err}"
        );
        // Deleted after issue: an error, not a month to issue again.
        std::fs::remove_file(dir.path().join(DIR).join("2026-09.json")).unwrap();
        let err = reg.issued_bytes("2026-09").unwrap_err().to_string();
        assert!(
            err.contains("2026-09.json") && err.contains("missing"),
            "{err}"
        );
    }

    #[test]
    fn partitions_are_read_from_data_file_paths() {
        assert_eq!(
            partition_of("events/date=2026-10-01/part-00000003-0000.parquet"),
            Some("2026-10-01")
        );
        assert_eq!(partition_of("events/x.parquet"), None);
    }
}
