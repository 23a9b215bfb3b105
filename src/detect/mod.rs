//! Anomaly and abuse detection on one series: small [`Detector`]s over plain slices, their
//! flags combined per point (risk score, severity) and merged into incidents.
//!
//! Every detector is causal: the point at index `i` is judged only on points `..=i` (its
//! expected value and scale come from points before it), as it would be live, so appending
//! points never changes an earlier flag. Each states its warm-up, the history it needs
//! before it flags anything ([`Detector::warmup`]).
//!
//! - [`zscore::Rolling`]: |z| against the mean and standard deviation of a trailing window.
//! - [`zscore::Robust`]: the same with the median and MAD, so a spike cannot hide by
//!   inflating the spread.
//! - [`zscore::Seasonal`]: robust z of the residual after the same phase (hour of the week
//!   for hourly data, day of the week for daily, time of day for finer data) over the last
//!   seasons, so a normal Monday peak or nightly lull is not flagged.
//! - [`velocity::Velocity`]: a rise of more than +500 % within an hour (with a minimum
//!   volume), or a drop below 10 % of the expected level.
//! - [`pattern::OffHours`]: usage in the series' quiet hours far above its norm for that
//!   hour. The user-level patterns (bot-like regularity, one user far above its peers, a
//!   burst of new users) need events, not a series: see the anomaly stage, `stage::anomalies`.
//!
//! Severity and risk come from a flag's strength, its score over its threshold (1 at the
//! threshold): low below 1.5, medium below 2.5, high below 4, critical from 4. The risk
//! score (0-100) of a point combines every detector that fired there:
//! `100 · (1 − Π (1 − p_d))` with `p_d = 1 − 0.6 · e^{−(strength_d − 1)}` (0.4 at the
//! threshold, rising toward 1).

pub mod likelihood;
pub mod pattern;
pub mod velocity;
pub mod zscore;

use serde::Serialize;

use crate::time::{MICROS_PER_DAY, MICROS_PER_HOUR};

/// One series to judge: instants (UTC µs, increasing) and values.
#[derive(Debug, Clone, Copy)]
pub struct SeriesView<'a> {
    /// Instants.
    pub ts: &'a [i64],
    /// Values.
    pub values: &'a [f64],
    /// The usual step between points (µs).
    pub step: i64,
}

impl SeriesView<'_> {
    /// Points in `span` µs (at least 1).
    pub fn points_in(&self, span: i64) -> usize {
        (span / self.step.max(1)).max(1) as usize
    }
}

/// One flagged point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Flag {
    /// Index of the point.
    pub index: usize,
    /// What the detector expected there.
    pub expected: f64,
    /// The detector's score (|z| for z-scores, the relative change for velocity).
    pub score: f64,
    /// Score over the detector's threshold (≥ 1).
    pub strength: f64,
    /// Which detector.
    pub detector: DetectorKind,
}

/// The detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DetectorKind {
    /// Rolling z-score.
    Zscore,
    /// Median/MAD z-score.
    Robust,
    /// Z-score of the residual after the seasonal profile.
    Seasonal,
    /// A sudden rise within an hour.
    VelocitySpike,
    /// A sudden drop below the expected level.
    VelocityDrop,
    /// Activity in quiet hours far above their norm.
    OffHours,
    /// One user calling at near-constant intervals.
    Bot,
    /// One user far above its peers, or a burst of new users.
    UserBurst,
}

impl DetectorKind {
    /// The name used in outputs and `--detectors`.
    pub fn name(self) -> &'static str {
        match self {
            DetectorKind::Zscore => "zscore",
            DetectorKind::Robust => "robust",
            DetectorKind::Seasonal => "seasonal",
            DetectorKind::VelocitySpike => "velocity_spike",
            DetectorKind::VelocityDrop => "velocity_drop",
            DetectorKind::OffHours => "off_hours",
            DetectorKind::Bot => "bot",
            DetectorKind::UserBurst => "user_burst",
        }
    }

    /// Whether the detector points to abuse rather than a fault.
    pub fn is_pattern(self) -> bool {
        matches!(
            self,
            DetectorKind::OffHours | DetectorKind::Bot | DetectorKind::UserBurst
        )
    }
}

impl std::fmt::Display for DetectorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A detector of anomalies in one series.
pub trait Detector: Send + Sync {
    /// Its name.
    fn name(&self) -> &'static str;
    /// Points of history it needs before it flags anything.
    fn warmup(&self, s: &SeriesView) -> usize;
    /// Appends its flags for `s` to `out`, in index order.
    fn detect(&self, s: &SeriesView, out: &mut Vec<Flag>);
}

/// Default incident gap: flags at most half a day apart are one incident (one alert per
/// series per half day, unless it escalates).
pub const DEFAULT_COOLDOWN: i64 = 12 * MICROS_PER_HOUR;

/// Which detectors run, and their settings. By default the seasonal, velocity and pattern
/// detectors: the plain rolling and robust z-scores judge a value against the whole
/// window's spread, so on a series with a daily cycle they flag its normal peaks (every
/// afternoon of a B2B tenant's API calls); they are there for series without one.
#[derive(Debug, Clone)]
pub struct DetectConfig {
    /// Rolling z-score.
    pub zscore: bool,
    /// Median/MAD z-score.
    pub robust: bool,
    /// Seasonal z-score.
    pub seasonal: bool,
    /// Velocity (spikes and drops).
    pub velocity: bool,
    /// Patterns (off-hours on series; bots and user bursts on the lake).
    pub pattern: bool,
    /// |z| threshold of the z-score detectors (and the off-hours detector).
    pub threshold: f64,
    /// Relative rise within an hour that counts as a spike (5.0 = +500 %).
    pub spike_ratio: f64,
    /// Level below which a drop counts, as a share of the expected level (0.1 = −90 %).
    pub drop_ratio: f64,
    /// Minimum volume: a spike must reach it, a drop must fall from at least it.
    pub min_volume: f64,
    /// Trailing window of the rolling and robust z-scores (None: a week of points, 30 to
    /// 1,000), at most 1,000,000.
    pub window: Option<usize>,
    /// Flags at most this far apart (µs) belong to one incident; only its first point and
    /// escalations are reported.
    pub cooldown: i64,
    /// The seasonal detector's anomaly likelihood: (short mean length, tail probability),
    /// or None (see [`likelihood`]).
    pub likelihood: Option<(usize, f64)>,
    /// A one-sided run of seasonal flags this long (µs) is a level shift (0: never).
    pub level_shift: i64,
    /// The seasonal detector leaves alone a value the last seasons held near its phase,
    /// give or take this many scale units (None: off; see [`zscore::Seasonal`]).
    pub seen_before: Option<f64>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            zscore: false,
            robust: false,
            seasonal: true,
            velocity: true,
            pattern: true,
            threshold: 3.0,
            spike_ratio: 5.0,
            drop_ratio: 0.1,
            min_volume: 20.0,
            window: None,
            cooldown: DEFAULT_COOLDOWN,
            likelihood: None,
            level_shift: 0,
            seen_before: None,
        }
    }
}

/// The plain-series default of `seen_before` (scale units).
pub const SEEN_MARGIN: f64 = 0.25;

impl DetectConfig {
    /// The defaults for a plain series (`detect --series`: any numeric series, no users or
    /// business hours behind it), chosen by leave-one-category-out cross-validation on the
    /// open NAB categories (`benches/accuracy/loco.py`, see the README): the seasonal
    /// detector alone at |z| > 3.5, gated by the anomaly likelihood (mean |z| of 3 points,
    /// tail 10⁻³), values seen near the same phase before left alone, a one-sided run of
    /// 2 hours taken as a level shift, incidents 3 hours apart. No pattern detectors: off
    /// hours and fraud mean nothing on a series that is not usage.
    pub fn series() -> Self {
        DetectConfig {
            velocity: false,
            pattern: false,
            threshold: 3.5,
            cooldown: 3 * MICROS_PER_HOUR,
            likelihood: Some((3, 1e-3)),
            level_shift: 2 * MICROS_PER_HOUR,
            seen_before: Some(SEEN_MARGIN),
            ..DetectConfig::default()
        }
    }

    /// Parses `--detectors zscore,robust,...` (all five names: zscore, robust, seasonal,
    /// velocity, pattern).
    pub fn with_detectors(mut self, list: &str) -> crate::Result<Self> {
        self.zscore = false;
        self.robust = false;
        self.seasonal = false;
        self.velocity = false;
        self.pattern = false;
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "zscore" => self.zscore = true,
                "robust" => self.robust = true,
                "seasonal" => self.seasonal = true,
                "velocity" => self.velocity = true,
                "pattern" => self.pattern = true,
                other => {
                    return Err(crate::Error::InvalidParameter {
                        name: "--detectors",
                        reason: format!(
                            "unknown detector `{other}` (zscore, robust, seasonal, velocity, pattern)"
                        ),
                    });
                }
            }
        }
        if !(self.zscore || self.robust || self.seasonal || self.velocity || self.pattern) {
            return Err(crate::Error::InvalidParameter {
                name: "--detectors",
                reason: "names no detector".into(),
            });
        }
        Ok(self)
    }

    /// Checks the settings, naming the one that is off: by its `detect` flag, or by its
    /// field where the flag is in another unit (`--spike-percent` and `--drop-percent`
    /// become `spike_ratio` and `drop_ratio`; the CLI checks those percentages itself).
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |name: &'static str, reason: String| {
            Err(crate::Error::InvalidParameter { name, reason })
        };
        if !(self.threshold.is_finite() && self.threshold > 0.0) {
            return bad(
                "--threshold",
                format!("{} is not a positive number", self.threshold),
            );
        }
        if !(self.spike_ratio.is_finite() && self.spike_ratio > 0.0) {
            return bad(
                "spike_ratio",
                format!("{} is not positive", self.spike_ratio),
            );
        }
        if !(self.drop_ratio > 0.0 && self.drop_ratio < 1.0) {
            return bad(
                "drop_ratio",
                format!("{} is not in (0, 1)", self.drop_ratio),
            );
        }
        if !(self.min_volume.is_finite() && self.min_volume >= 0.0) {
            return bad("--min-volume", format!("{} is not ≥ 0", self.min_volume));
        }
        if self.cooldown < 0 {
            return bad("--cooldown", "must not be negative".into());
        }
        if let Some((points, tail)) = self.likelihood {
            if !(tail > 0.0 && tail < 0.5) {
                return bad(
                    "--likelihood",
                    format!("{tail} is not a tail probability in (0, 0.5)"),
                );
            }
            if !(1..=1000).contains(&points) {
                return bad("--likelihood-points", format!("{points} is not 1 to 1,000"));
            }
        }
        if self
            .seen_before
            .is_some_and(|m| !(m.is_finite() && m >= 0.0))
        {
            return bad("--seen-before", "the margin must be a number ≥ 0".into());
        }
        if self.level_shift < 0 {
            return bad("--level-shift", "must not be negative".into());
        }
        if self.window.is_some_and(|w| !(3..=1_000_000).contains(&w)) {
            return bad("--window", "must be 3 to 1,000,000 points".into());
        }
        Ok(())
    }

    /// The series detectors it selects.
    pub fn detectors(&self) -> Vec<Box<dyn Detector>> {
        let mut d: Vec<Box<dyn Detector>> = Vec::new();
        if self.zscore {
            d.push(Box::new(zscore::Rolling {
                window: self.window,
                threshold: self.threshold,
            }));
        }
        if self.robust {
            d.push(Box::new(zscore::Robust {
                window: self.window,
                threshold: self.threshold,
            }));
        }
        if self.seasonal {
            d.push(Box::new(zscore::Seasonal {
                threshold: self.threshold,
                likelihood: self.likelihood,
                level_shift: self.level_shift,
                seen_before: self.seen_before,
            }));
        }
        if self.velocity {
            d.push(Box::new(velocity::Velocity {
                spike_ratio: self.spike_ratio,
                drop_ratio: self.drop_ratio,
                min_volume: self.min_volume,
                threshold: self.threshold,
                seen_before: self.seen_before,
            }));
        }
        if self.pattern {
            d.push(Box::new(pattern::OffHours {
                threshold: self.threshold,
                min_volume: self.min_volume,
            }));
        }
        d
    }
}

/// The median of `v` (reordered; 0 when empty).
pub fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => 0.5 * (v[n / 2 - 1] + v[n / 2]),
    }
}

/// The default trailing window: a week of points, 30 to 1,000.
pub fn default_window(s: &SeriesView) -> usize {
    s.points_in(7 * MICROS_PER_DAY).clamp(30, 1000)
}

/// Severity of a flag of the given strength.
pub fn severity(strength: f64) -> Severity {
    match strength {
        s if s >= 4.0 => Severity::Critical,
        s if s >= 2.5 => Severity::High,
        s if s >= 1.5 => Severity::Medium,
        _ => Severity::Low,
    }
}

/// How bad an anomaly is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Just over the threshold.
    Low,
    /// 1.5× the threshold.
    Medium,
    /// 2.5×.
    High,
    /// 4× or more.
    Critical,
}

impl Severity {
    /// The name used in outputs.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// The risk (0-100) of a point where detectors fired with these strengths.
pub fn risk(strengths: impl IntoIterator<Item = f64>) -> f64 {
    let calm: f64 = strengths
        .into_iter()
        .map(|s| 0.6 * (-(s - 1.0).max(0.0)).exp())
        .product();
    (100.0 * (1.0 - calm)).clamp(0.0, 100.0)
}

/// One flagged point with every detector that fired there.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Index in the series.
    pub index: usize,
    /// The strongest flag.
    pub top: Flag,
    /// Every detector that fired, strongest first.
    pub detectors: Vec<DetectorKind>,
    /// Combined risk, 0-100.
    pub risk: f64,
    /// Whether it is reported: it opens an incident or makes it more severe (see
    /// [`report`]).
    pub reported: bool,
}

/// Runs `detectors` over `s`: one [`Point`] per flagged index, in index order.
pub fn detect_points(s: &SeriesView, detectors: &[Box<dyn Detector>]) -> Vec<Point> {
    let mut flags = Vec::new();
    for d in detectors {
        d.detect(s, &mut flags);
    }
    combine(flags)
}

/// Groups flags by index (any order in): strongest first, risk over all of them.
pub fn combine(mut flags: Vec<Flag>) -> Vec<Point> {
    flags.sort_by(|a, b| {
        a.index
            .cmp(&b.index)
            .then(b.strength.total_cmp(&a.strength))
            .then(a.detector.cmp(&b.detector))
    });
    let mut out: Vec<Point> = Vec::new();
    for f in flags {
        match out.last_mut() {
            Some(p) if p.index == f.index => {
                // Flags come strongest first: a detector counts once, at its strongest
                // (two bot users in one hour are one detector firing).
                if !p.detectors.contains(&f.detector) {
                    p.detectors.push(f.detector);
                    p.risk = risk([p.risk_strength(), f.strength]);
                }
            }
            _ => out.push(Point {
                index: f.index,
                top: f,
                detectors: vec![f.detector],
                risk: risk([f.strength]),
                reported: true,
            }),
        }
    }
    out
}

impl Point {
    /// The strength that gives this point's current risk on its own.
    fn risk_strength(&self) -> f64 {
        // Inverse of `risk` for one flag.
        let calm = (1.0 - self.risk / 100.0).max(1e-12);
        1.0 - (calm / 0.6).ln()
    }

    /// Whether abuse patterns fired here.
    pub fn fraud_suspect(&self) -> bool {
        self.detectors.iter().any(|k| k.is_pattern())
    }
}

/// Consecutive flagged points of one series: one incident.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// First and last flagged index.
    pub first: usize,
    /// Last flagged index.
    pub last: usize,
    /// The strongest point's flag.
    pub top: Flag,
    /// Every detector that fired in it.
    pub detectors: Vec<DetectorKind>,
    /// Highest risk of its points.
    pub risk: f64,
    /// Points flagged.
    pub points: usize,
}

impl Incident {
    /// Severity of its strongest flag.
    pub fn severity(&self) -> Severity {
        severity(self.top.strength)
    }

    /// Whether abuse patterns fired in it.
    pub fn fraud_suspect(&self) -> bool {
        self.detectors.iter().any(|k| k.is_pattern())
    }
}

/// Whether flagged point `p` continues an incident whose last point is `last`: the next
/// index, or at most `cooldown` µs later.
/// With a cooldown, by time alone (rows next to each other can be far apart in time when a
/// series has gaps); without one, the next row.
fn continues(ts: &[i64], last: usize, p: usize, cooldown: i64) -> bool {
    if cooldown > 0 {
        ts[p] - ts[last] <= cooldown
    } else {
        p == last + 1
    }
}

/// Merges flagged points into incidents: points at most `cooldown` µs apart (with a zero
/// cooldown, flags on consecutive rows).
pub fn incidents(points: &[Point], ts: &[i64], cooldown: i64) -> Vec<Incident> {
    let mut out: Vec<Incident> = Vec::new();
    for p in points {
        match out.last_mut() {
            Some(inc) if continues(ts, inc.last, p.index, cooldown) => {
                inc.last = p.index;
                inc.points += 1;
                inc.risk = inc.risk.max(p.risk);
                if p.top.strength > inc.top.strength {
                    inc.top = p.top;
                }
                for k in &p.detectors {
                    if !inc.detectors.contains(k) {
                        inc.detectors.push(*k);
                    }
                }
            }
            _ => out.push(Incident {
                first: p.index,
                last: p.index,
                top: p.top,
                detectors: p.detectors.clone(),
                risk: p.risk,
                points: 1,
            }),
        }
    }
    out
}

/// Marks the points worth reporting, as an alerting system would: the first point of each
/// incident (see [`incidents`]), and a later one only when it raises the incident's
/// severity or comes from a detector that has not fired in it yet (a drop, then a burst:
/// new information). The rest stay in their incident's count. With `cooldown` 0 every
/// flagged point is reported.
pub fn report(points: &mut [Point], ts: &[i64], cooldown: i64) {
    if cooldown == 0 {
        points.iter_mut().for_each(|p| p.reported = true);
        return;
    }
    let mut last: Option<usize> = None;
    let mut worst = Severity::Low;
    let mut seen: Vec<DetectorKind> = Vec::new();
    for p in points.iter_mut() {
        let sev = severity(p.top.strength);
        p.reported = match last {
            Some(l) if continues(ts, l, p.index, cooldown) => {
                let up = sev > worst || p.detectors.iter().any(|k| !seen.contains(k));
                worst = worst.max(sev);
                up
            }
            _ => {
                worst = sev;
                seen.clear();
                true
            }
        };
        for k in &p.detectors {
            if !seen.contains(k) {
                seen.push(*k);
            }
        }
        last = Some(p.index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(index: usize, strength: f64, detector: DetectorKind) -> Flag {
        Flag {
            index,
            expected: 0.0,
            score: strength * 3.0,
            strength,
            detector,
        }
    }

    #[test]
    fn risk_grows_with_strength_and_agreement() {
        assert!((risk([1.0]) - 40.0).abs() < 1e-9);
        assert!(risk([2.0]) > risk([1.0]));
        assert!(risk([1.0, 1.0]) > risk([1.0]));
        assert!(risk([50.0, 50.0]) <= 100.0);
        let pts = combine(vec![
            flag(3, 1.0, DetectorKind::Robust),
            flag(3, 2.0, DetectorKind::VelocitySpike),
            flag(4, 1.2, DetectorKind::Zscore),
            flag(9, 1.0, DetectorKind::OffHours),
        ]);
        assert_eq!(pts.len(), 3);
        assert_eq!(
            pts[0].detectors,
            vec![DetectorKind::VelocitySpike, DetectorKind::Robust]
        );
        assert!((pts[0].risk - risk([1.0, 2.0])).abs() < 1e-9);
        // One detector firing twice at a point (two bot users in an hour) counts once.
        let twice = combine(vec![
            flag(1, 1.5, DetectorKind::Bot),
            flag(1, 1.0, DetectorKind::Bot),
        ]);
        assert!((twice[0].risk - risk([1.5])).abs() < 1e-9);
        let ts: Vec<i64> = (0..10).map(|i| i * MICROS_PER_HOUR).collect();
        let inc = incidents(&pts, &ts, 0);
        assert_eq!(inc.len(), 2);
        assert_eq!((inc[0].first, inc[0].last, inc[0].points), (3, 4, 2));
        assert_eq!(inc[0].top.detector, DetectorKind::VelocitySpike);
        assert!(!inc[0].fraud_suspect() && inc[1].fraud_suspect());
        // Within a 5-hour cooldown all three are one incident.
        assert_eq!(incidents(&pts, &ts, 5 * MICROS_PER_HOUR).len(), 1);
        let mut pts = pts;
        let reported = |pts: &[Point]| pts.iter().map(|p| p.reported).collect::<Vec<_>>();
        report(&mut pts, &ts, 5 * MICROS_PER_HOUR);
        // The first opens it; 4 and 9 are new detectors in it.
        assert_eq!(reported(&pts), [true, true, true]);
        // The same detector again: reported only when more severe.
        for p in &mut pts[1..] {
            p.top.detector = DetectorKind::VelocitySpike;
            p.detectors = vec![DetectorKind::VelocitySpike];
        }
        report(&mut pts, &ts, 5 * MICROS_PER_HOUR);
        assert_eq!(reported(&pts), [true, false, false]);
        pts[2].top.strength = 5.0;
        report(&mut pts, &ts, 5 * MICROS_PER_HOUR);
        assert_eq!(reported(&pts), [true, false, true]);
        assert_eq!(severity(1.0), Severity::Low);
        assert_eq!(severity(4.0), Severity::Critical);
    }
}
