//! Z-score detectors: rolling (mean and standard deviation of a trailing window), robust
//! (median and MAD of the window) and seasonal (robust z of the residual after the same
//! phase's median over the last seasons).
//!
//! Warm-ups: rolling and robust flag once `min(window, 30)` points precede the point (the
//! window grows to its full length meanwhile); seasonal needs two whole seasons and then 30
//! residuals. A series with no season (steps of a week or longer) gets no seasonal flags.

use std::collections::VecDeque;

use super::{Detector, DetectorKind, Flag, SeriesView, default_window};
use crate::time::{MICROS_PER_DAY, MICROS_PER_HOUR};

/// The smallest scale a z-score divides by, relative to the level: a flat series that
/// moves by a hair is not a 10⁹-sigma event.
const REL_FLOOR: f64 = 1e-3;

fn floor(level: f64) -> f64 {
    (REL_FLOOR * level.abs()).max(1e-9)
}

fn flag(
    index: usize,
    expected: f64,
    z: f64,
    threshold: f64,
    detector: DetectorKind,
) -> Option<Flag> {
    (z.abs() > threshold).then(|| Flag {
        index,
        expected,
        score: z.abs(),
        strength: z.abs() / threshold,
        detector,
    })
}

/// |z| against the mean and sample standard deviation of the previous `window` points.
#[derive(Debug, Clone)]
pub struct Rolling {
    /// Trailing window (None: [`default_window`]).
    pub window: Option<usize>,
    /// |z| threshold.
    pub threshold: f64,
}

impl Detector for Rolling {
    fn name(&self) -> &'static str {
        "zscore"
    }

    fn warmup(&self, s: &SeriesView) -> usize {
        self.window.unwrap_or_else(|| default_window(s)).min(30)
    }

    fn detect(&self, s: &SeriesView, out: &mut Vec<Flag>) {
        let y = s.values;
        let w = self.window.unwrap_or_else(|| default_window(s));
        let warm = self.warmup(s);
        // Sums of (y − shift) over the window, recomputed every `w` points so rounding
        // cannot drift; the shift keeps them small for large levels.
        let mut shift = y.first().copied().unwrap_or(0.0);
        let (mut s1, mut s2) = (0.0, 0.0);
        let thr2 = self.threshold * self.threshold;
        // 1/n and 1/(n − 1), recomputed only while the window grows.
        let mut inv = (0usize, 0.0, 0.0);
        let mut reset = w + 1; // counts down to 0 at i = w, 2w, ...: exact recomputations
        for i in 0..y.len() {
            reset -= 1;
            let n = i.min(w);
            if n >= warm.max(2) {
                if n != inv.0 {
                    inv = (n, 1.0 / n as f64, 1.0 / (n as f64 - 1.0));
                }
                let mean = s1 * inv.1;
                let var = (s2 - s1 * mean) * inv.2;
                let level = mean + shift;
                // Compare squares; the square root and the division only for flags (plain
                // comparisons: the values are finite).
                let d = y[i] - level;
                let fl = REL_FLOOR * level.abs();
                let fl2 = if fl > 1e-9 { fl * fl } else { 1e-18 };
                if d * d > thr2 * (if var > fl2 { var } else { fl2 }) {
                    let var = var.max(0.0);
                    let fl = floor(level);
                    let sd = var.sqrt().max(fl);
                    if let Some(f) = flag(i, level, d / sd, self.threshold, DetectorKind::Zscore) {
                        out.push(f);
                    }
                }
            }
            // Slide: add y[i], drop y[i − w]; every w points (a countdown, not i % w)
            // recompute the sums exactly.
            if i >= w && reset == 0 {
                reset = w;
                shift = y[i + 1 - w..=i].iter().sum::<f64>() / w as f64;
                s1 = 0.0;
                s2 = 0.0;
                for &v in &y[i + 1 - w..=i] {
                    s1 += v - shift;
                    s2 += (v - shift) * (v - shift);
                }
            } else {
                let d = y[i] - shift;
                s1 += d;
                s2 += d * d;
                if i >= w {
                    let o = y[i - w] - shift;
                    s1 -= o;
                    s2 -= o * o;
                }
            }
        }
    }
}

/// A sorted sliding window: median and MAD in O(window).
#[derive(Debug, Clone)]
pub struct SortedWindow {
    sorted: Vec<f64>,
    order: VecDeque<f64>,
    cap: usize,
}

impl SortedWindow {
    /// An empty window of at most `cap` values.
    pub fn new(cap: usize) -> Self {
        // Capacity grows with the values pushed, not with `cap`: a window longer than its
        // series (or a 1-µs step's "hour") costs nothing.
        let reserve = cap.min(4096) + 1;
        SortedWindow {
            sorted: Vec::with_capacity(reserve),
            order: VecDeque::with_capacity(reserve),
            cap: cap.max(1),
        }
    }

    /// Values held.
    pub fn len(&self) -> usize {
        self.sorted.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.sorted.is_empty()
    }

    /// Adds `v`, dropping the oldest value when full. When full, the values between the
    /// oldest's place and the new one's shift by one place, once, instead of the whole tail
    /// twice (a remove, then an insert).
    pub fn push(&mut self, v: f64) {
        self.order.push_back(v);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            let a = &mut self.sorted;
            let out = a.partition_point(|&x| x < old);
            let into = a.partition_point(|&x| x < v);
            if into <= out {
                // v goes at `into`; a[into..out] move right over the oldest.
                a.copy_within(into..out, into + 1);
                a[into] = v;
            } else {
                // a[out + 1..into] move left over the oldest; v goes just before `into`.
                a.copy_within(out + 1..into, out);
                a[into - 1] = v;
            }
            return;
        }
        let at = self.sorted.partition_point(|&x| x < v);
        self.sorted.insert(at, v);
    }

    /// The k-th largest value held (1 = the maximum; k = 1 % of the window, at least 3, as
    /// in [`SortedWindow::scale`]), or None while fewer than 2k + 1 are held.
    pub fn upper_tail(&self) -> Option<f64> {
        let n = self.sorted.len();
        let k = (n / 100).max(3);
        (n > 2 * k).then(|| self.sorted[n - k])
    }

    /// The median (0 when empty).
    pub fn median(&self) -> f64 {
        let n = self.sorted.len();
        match n {
            0 => 0.0,
            _ if n % 2 == 1 => self.sorted[n / 2],
            _ => 0.5 * (self.sorted[n / 2 - 1] + self.sorted[n / 2]),
        }
    }

    /// The median absolute deviation from `m` (the window's median). The deviations below
    /// `m` and those at or above it are two sorted runs of the window (read outward from
    /// `m`), so their median is an order statistic of two sorted arrays, found by binary
    /// search in O(log n) instead of merging half the window at every point (a quarter of
    /// the detection stage's time on hourly series).
    pub fn mad(&self, m: f64) -> f64 {
        let a = &self.sorted;
        let n = a.len();
        if n == 0 {
            return 0.0;
        }
        let j = a.partition_point(|&x| x < m);
        let want = n / 2; // 0-based rank of the upper median
        let d = kth_deviation(a, j, m, want);
        if n % 2 == 1 {
            d
        } else {
            0.5 * (kth_deviation(a, j, m, want - 1) + d)
        }
    }

    /// A robust scale: the larger of
    /// - 1.4826 · MAD (or 1.2533 · the mean absolute deviation when more than half the
    ///   values are equal and the MAD is 0): the standard deviation for normal data, blind
    ///   to the tails;
    /// - the spread between the k-th smallest and k-th largest values (k = 1 % of the
    ///   window, at least 3) over the spread of those ranks in a normal sample: also the
    ///   standard deviation for normal data, but larger for heavy-tailed data, where
    ///   excursions of "3 MADs" are routine and flagging them would bury real anomalies.
    ///   Its k − 1 outermost values on each side cannot move it, so a few spikes in the
    ///   window do not mask the next one;
    ///
    /// floored relative to `m`.
    pub fn scale(&self, m: f64) -> f64 {
        let n = self.sorted.len();
        let core = self.core_scale(m);
        let k = (n / 100).max(3);
        let tail = if n > 2 * k + 1 {
            let spread = self.sorted[n - k] - self.sorted[k - 1];
            spread / (2.0 * tail_quantile(k, n))
        } else {
            0.0
        };
        core.max(tail).max(floor(m))
    }

    /// The first part of [`SortedWindow::scale`] alone: 1.4826 · MAD (or 1.2533 · the mean
    /// absolute deviation when the MAD is 0), blind to the tails.
    pub fn core_scale(&self, m: f64) -> f64 {
        let mad = self.mad(m);
        if mad > 0.0 {
            1.4826 * mad
        } else {
            let n = self.sorted.len().max(1) as f64;
            1.2533 * self.abs_dev_sum(m) / n
        }
    }

    /// Σ |v − m| over the window, the bits a plain sum in ascending order gives, from the
    /// values that differ from `m` alone. The MAD is 0 when more than half the window
    /// equals `m` (a sparse meter's hours are mostly 0), and each of those adds +0.0, which
    /// leaves a sum that is not -0.0 as it is: summing the whole window at every point was
    /// the anomalies stage's largest cost on the 1,000-tenant lake.
    fn abs_dev_sum(&self, m: f64) -> f64 {
        let a = &self.sorted;
        if a.is_empty() {
            return a.iter().map(|v| (v - m).abs()).sum::<f64>();
        }
        let below = a.partition_point(|&x| x < m);
        let above = below + a[below..].partition_point(|&x| x <= m);
        // From +0.0: the plain sum starts at -0.0, but its first term, +0.0 or not, makes
        // it the same as this from there on.
        a[..below]
            .iter()
            .chain(&a[above..])
            .fold(0.0, |s, v| s + (v - m).abs())
    }
}

/// The k-th smallest (0-based) of the deviations |x − m| of sorted `a`, where `a[..j]` are
/// below `m`: those deviations, read from `j − 1` down, and `a[j..]`'s, read up, are two
/// ascending runs `l` and `r`. The answer takes some `x` values from `l` and `k + 1 − x`
/// from `r`; `x` is found by binary search.
fn kth_deviation(a: &[f64], j: usize, m: f64, k: usize) -> f64 {
    let l = |t: usize| m - a[j - 1 - t];
    let r = |t: usize| a[j + t] - m;
    let (p, q, c) = (j, a.len() - j, k + 1);
    let (mut lo, mut hi) = (c.saturating_sub(q), c.min(p));
    loop {
        let x = (lo + hi) / 2;
        if x > 0 && c - x < q && l(x - 1) > r(c - x) {
            hi = x - 1; // too many from l
        } else if c - x > 0 && x < p && r(c - x - 1) > l(x) {
            lo = x + 1; // too few from l
        } else {
            let from_l = (x > 0).then(|| l(x - 1));
            let from_r = (c - x > 0).then(|| r(c - x - 1));
            return match (from_l, from_r) {
                (Some(a), Some(b)) => a.max(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => 0.0,
            };
        }
    }
}

/// The standard normal quantile of the k-th largest of n values (plotting position
/// (k − 0.5) / n), cached per (k, n) since windows keep their size.
fn tail_quantile(k: usize, n: usize) -> f64 {
    use std::cell::Cell;
    thread_local! {
        static LAST: Cell<(usize, usize, f64)> = const { Cell::new((0, 0, 0.0)) };
    }
    LAST.with(|c| {
        let (lk, ln, q) = c.get();
        if (lk, ln) == (k, n) {
            return q;
        }
        let p = (k as f64 - 0.5) / n as f64;
        let q = crate::forecast::normal_quantile(1.0 - 2.0 * p);
        c.set((k, n, q));
        q
    })
}

/// |z| against the median and MAD of the previous `window` points.
#[derive(Debug, Clone)]
pub struct Robust {
    /// Trailing window (None: [`default_window`]).
    pub window: Option<usize>,
    /// |z| threshold.
    pub threshold: f64,
}

impl Detector for Robust {
    fn name(&self) -> &'static str {
        "robust"
    }

    fn warmup(&self, s: &SeriesView) -> usize {
        self.window.unwrap_or_else(|| default_window(s)).min(30)
    }

    fn detect(&self, s: &SeriesView, out: &mut Vec<Flag>) {
        let w = self.window.unwrap_or_else(|| default_window(s));
        let warm = self.warmup(s);
        let mut win = SortedWindow::new(w);
        for (i, &v) in s.values.iter().enumerate() {
            if win.len() >= warm.max(2) {
                let m = win.median();
                let z = (v - m) / win.scale(m);
                if let Some(f) = flag(i, m, z, self.threshold, DetectorKind::Robust) {
                    out.push(f);
                }
            }
            win.push(v);
        }
    }
}

/// The season of a series: its duration (µs) and points per season, or None when the
/// step is a week or longer (or irregular beyond use). Hourly and daily series have a
/// weekly season (hour of the week, day of the week: usage differs between a Monday and a
/// Sunday); finer series a daily one (a week of 5-minute points would take weeks to warm
/// up and a median over thousands of slots).
pub fn season_of(s: &SeriesView) -> Option<(i64, usize)> {
    let dur = if s.step < MICROS_PER_HOUR {
        MICROS_PER_DAY
    } else if s.step <= MICROS_PER_DAY {
        7 * MICROS_PER_DAY
    } else {
        return None;
    };
    let points = (dur / s.step.max(1)) as usize;
    (2..=10_000).contains(&points).then_some((dur, points))
}

/// The phase of instant `t` in a season of `dur` µs split into `points` slots.
pub fn phase(t: i64, dur: i64, points: usize) -> usize {
    let slot = dur / points as i64;
    ((t.rem_euclid(dur) / slot.max(1)) as usize).min(points - 1)
}

/// Seasons a phase's expected value is the median of (at most 4: see `Slots::median`).
pub const SEASONS: usize = 4;

/// One season's per-phase memory of the last [`SEASONS`] values, in a flat ring per
/// phase. The phase of the next point is tracked incrementally (one step on), so a regular
/// series never divides.
#[derive(Debug, Clone)]
struct Slots {
    dur: i64,
    points: usize,
    slot: i64,
    vals: Vec<[f64; SEASONS]>,
    /// Values held per phase (≤ SEASONS) and the next position to overwrite.
    fill: Vec<(u8, u8)>,
    last: Option<(i64, usize)>,
}

impl Slots {
    fn new(dur: i64, points: usize) -> Slots {
        Slots {
            dur,
            points,
            slot: (dur / points as i64).max(1),
            vals: vec![[0.0; SEASONS]; points],
            fill: vec![(0, 0); points],
            last: None,
        }
    }

    #[inline]
    fn phase(&mut self, t: i64) -> usize {
        let p = match self.last {
            Some((lt, lp)) if t - lt == self.slot => {
                if lp + 1 == self.points {
                    0
                } else {
                    lp + 1
                }
            }
            Some((lt, lp)) if t == lt => lp,
            _ => phase(t, self.dur, self.points),
        };
        self.last = Some((t, p));
        p
    }

    #[inline]
    fn median(&self, p: usize, min: usize) -> Option<f64> {
        let n = self.fill[p].0 as usize;
        if n < min.max(1) {
            return None;
        }
        // At most 4 values: the median is what remains without the extremes. A full slot
        // (the steady state) in straight-line code.
        if n == SEASONS {
            // Plain comparisons (values are finite): one instruction each, unlike f64::min.
            let mn = |a: f64, b: f64| if a < b { a } else { b };
            let mx = |a: f64, b: f64| if a > b { a } else { b };
            let [a, b, c, d] = self.vals[p];
            let lo = mn(mn(a, b), mn(c, d));
            let hi = mx(mx(a, b), mx(c, d));
            return Some(0.5 * (a + b + c + d - lo - hi));
        }
        let v = &self.vals[p][..n];
        let (lo, hi, sum) = v.iter().fold((f64::MAX, f64::MIN, 0.0), |(lo, hi, s), &x| {
            (lo.min(x), hi.max(x), s + x)
        });
        Some(match n {
            1 => v[0],
            2 => 0.5 * sum,
            3 => sum - lo - hi,
            _ => 0.5 * (sum - lo - hi),
        })
    }

    #[inline]
    fn push(&mut self, p: usize, v: f64) {
        let (n, next) = &mut self.fill[p];
        self.vals[p][*next as usize] = v;
        *next = ((*next as usize + 1) % SEASONS) as u8;
        *n = (*n + 1).min(SEASONS as u8);
    }
}

/// The expected value of each phase: the median of its last [`SEASONS`] values (a past
/// spike at that phase cannot shift it much). Hourly series have a weekly profile (hour of
/// the week) and a daily one (hour of the day) that the drop detector falls back on until
/// the weekly one has two weeks.
#[derive(Debug, Clone)]
pub struct Profile {
    main: Slots,
    fallback: Option<Slots>,
    first: Option<i64>,
}

/// What a profile expected at a point, before learning it.
#[derive(Debug, Clone, Copy)]
pub struct Expected {
    /// The main profile's median, once the phase has two seasons.
    pub main: Option<f64>,
    /// Else the fallback's (hourly series: hour of the day).
    pub fallback: Option<f64>,
}

impl Profile {
    /// An empty profile for the series' season (None if it has none).
    pub fn new(s: &SeriesView) -> Option<Profile> {
        let (dur, points) = season_of(s)?;
        let fallback = (dur == 7 * MICROS_PER_DAY && s.step < MICROS_PER_DAY)
            .then(|| Slots::new(MICROS_PER_DAY, points / 7))
            .filter(|f| f.points >= 2);
        Some(Profile {
            main: Slots::new(dur, points),
            fallback,
            first: None,
        })
    }

    /// Points per (main) season.
    pub fn points(&self) -> usize {
        self.main.points
    }

    /// The second smallest and second largest value the last seasons held at the phases
    /// within `w` of the one just fed (its own newest value, the point being judged, left
    /// out), or None with fewer than 4 such values. A value inside that range has been seen
    /// at this time of day before: a daily job whose start drifts by a few minutes.
    pub fn seen_range(&self, w: usize) -> Option<(f64, f64)> {
        let (_, p) = self.main.last?;
        let n = self.main.points;
        let (mut lo, mut hi) = ([f64::MAX; 2], [f64::MIN; 2]);
        let mut count = 0;
        for k in 0..=2 * w.min(n / 2) {
            let q = (p + n + k - w.min(n / 2)) % n;
            let (held, next) = self.main.fill[q];
            for j in 0..held as usize {
                if q == p && (j + 1) % SEASONS == next as usize % SEASONS {
                    continue; // the value just fed
                }
                let x = self.main.vals[q][j];
                if x < lo[1] {
                    lo = if x < lo[0] { [x, lo[0]] } else { [lo[0], x] };
                }
                if x > hi[1] {
                    hi = if x > hi[0] { [x, hi[0]] } else { [hi[0], x] };
                }
                count += 1;
            }
        }
        (count >= 4).then_some((lo[1], hi[1]))
    }

    /// The expected values at instant `t` (points come in time order), then learns `v`.
    #[inline]
    pub fn feed(&mut self, t: i64, v: f64) -> Expected {
        let p = self.main.phase(t);
        let mut main = self.main.median(p, 2);
        let held = self.main.fill[p].0;
        self.main.push(p, v);
        let fallback = self.fallback.as_mut().and_then(|f| {
            let q = f.phase(t);
            let e = if main.is_none() || held == 2 {
                f.median(q, 2)
            } else {
                None
            };
            f.push(q, v);
            e
        });
        // Two seasons' median is their mean: one spike a week ago would inflate it. With
        // the fallback's median as a third opinion, the middle of the three is robust.
        if held == 2
            && let (Some(_), Some(fb)) = (main, fallback)
        {
            let [a, b] = [self.main.vals[p][0], self.main.vals[p][1]];
            main = Some(fb.clamp(a.min(b), a.max(b)));
        }
        let fallback = if main.is_some() { None } else { fallback };
        // Once every phase of the main profile has two seasons, the fallback is done.
        match self.first {
            None => self.first = Some(t),
            Some(t0) if self.fallback.is_some() && t - t0 >= 3 * self.main.dur => {
                self.fallback = None
            }
            _ => {}
        }
        Expected { main, fallback }
    }
}

impl Expected {
    /// The main profile's expectation, else the fallback's: good enough to tell a level
    /// that has collapsed (−90 %), not to judge a Saturday by the weekdays before it.
    pub fn or_fallback(self) -> Option<f64> {
        self.main.or(self.fallback)
    }
}

/// Robust z of the residual after the series' expected value.
///
/// Two causal predictors run side by side: the seasonal profile (the same phase's median
/// over the last [`SEASONS`] seasons) and the recent level (the median of the last hour of
/// points, at least 3). The expected value is the profile's unless the recent level has
/// predicted the series better over the last season (exponentially weighted mean absolute
/// error, span one season): a strongly seasonal series is judged against its profile, so a
/// normal Monday peak or nightly lull is not flagged; a series without a real season (or
/// after a lasting level change) is judged against its level, instead of against a noisy
/// profile of past days. The z-score divides by the robust scale of the last week of
/// residuals (see [`SortedWindow::scale`]).
///
/// Two options make it adapt to the series:
/// - `likelihood`: a flag also needs the anomaly likelihood of the recent |z| (see
///   [`super::likelihood`]) to be in the far tail of this series' own history;
/// - `level_shift`: when the residuals stay on one side beyond the threshold for that long
///   (µs), the level has shifted: the recent level becomes the predictor at once and the
///   residual scale restarts after the shift, so a lasting change is one incident, not one
///   per cooldown until the seasonal profile has caught up.
#[derive(Debug, Clone)]
pub struct Seasonal {
    /// |z| threshold.
    pub threshold: f64,
    /// Anomaly likelihood: (short mean length, tail probability), or None.
    pub likelihood: Option<(usize, f64)>,
    /// Length of a one-sided run of flags that counts as a level shift (µs; 0: never).
    pub level_shift: i64,
    /// A value within the range the last seasons held near its phase (see
    /// [`Profile::seen_range`] and [`phase_window`]), widened by this many robust scale
    /// units, is routine, not flagged (None: off).
    pub seen_before: Option<f64>,
}

/// The phase neighbourhood the seasonal detector's "seen before" rule looks at: ±30 minutes
/// for series finer than an hour, ±1 hour for hourly series, none for daily ones.
pub fn phase_window(s: &SeriesView) -> usize {
    if s.step < MICROS_PER_HOUR {
        (30 * 60 * 1_000_000 / s.step.max(1)) as usize
    } else if s.step < MICROS_PER_DAY {
        1
    } else {
        0
    }
}

/// Days of short means the likelihood's statistics cover.
const LIKELIHOOD_DAYS: i64 = 28;

/// Residuals the seasonal detector's scale comes from.
const RESIDUALS: usize = 30;

impl Detector for Seasonal {
    fn name(&self) -> &'static str {
        "seasonal"
    }

    /// Two seasons and the residuals of its scale; with the likelihood, also the short
    /// means it learns before anything passes.
    fn warmup(&self, s: &SeriesView) -> usize {
        let learn = self.likelihood.map_or(0, |_| super::likelihood::LEARN);
        season_of(s).map_or(usize::MAX, |(_, p)| 2 * p + RESIDUALS + learn)
    }

    fn detect(&self, s: &SeriesView, out: &mut Vec<Flag>) {
        let Some(mut profile) = Profile::new(s) else {
            return;
        };
        let season_points = profile.points() as f64;
        let decay = 1.0 - 1.0 / season_points;
        let mut recent = SortedWindow::new(s.points_in(MICROS_PER_HOUR).max(3));
        let (mut err_profile, mut err_recent) = (0.0f64, 0.0f64);
        let mut resid = SortedWindow::new(default_window(s));
        let mut likelihood = self.likelihood.map(|(short, tail)| {
            let long = s
                .points_in(LIKELIHOOD_DAYS * MICROS_PER_DAY)
                .clamp(2 * super::likelihood::LEARN, 8640);
            super::likelihood::Likelihood::new(short, long, tail)
        });
        let seen_window = self.seen_before.map(|margin| (phase_window(s), margin));
        let shift_points = (self.level_shift > 0).then(|| s.points_in(self.level_shift).max(2));
        // The current one-sided run of over-threshold residuals: its sign and length.
        let mut run = (0.0f64, 0usize);
        for (i, (&t, &v)) in s.ts.iter().zip(s.values).enumerate() {
            let level = (!recent.is_empty()).then(|| recent.median());
            let expected = profile.feed(t, v).main;
            if let (Some(e_p), Some(e_r)) = (expected, level) {
                let e = if err_recent < err_profile { e_r } else { e_p };
                let r = v - e;
                if resid.len() >= RESIDUALS {
                    let m = resid.median();
                    let sc = resid.scale(m).max(floor(e));
                    let z = (r - m) / sc;
                    let likely = likelihood.as_mut().is_none_or(|l| l.feed(z.abs()));
                    // Only for candidates (cheap): a value seen near this phase in the
                    // last seasons, give or take `margin` scale units (noise), is routine.
                    let unseen = || {
                        seen_window.is_none_or(|(w, margin)| {
                            profile
                                .seen_range(w)
                                .is_none_or(|(lo, hi)| v > hi + margin * sc || v < lo - margin * sc)
                        })
                    };
                    if likely
                        && z.abs() > self.threshold
                        && unseen()
                        && let Some(f) = flag(i, e + m, z, self.threshold, DetectorKind::Seasonal)
                    {
                        out.push(f);
                    }
                    if z.abs() > self.threshold && (run.1 == 0 || z.signum() == run.0) {
                        run = (z.signum(), run.1 + 1);
                    } else {
                        run = (0.0, 0);
                    }
                    if shift_points.is_some_and(|p| run.1 >= p) {
                        // A level shift: judge by the recent level from now on (until the
                        // profile, which learns the new level, predicts better again) and
                        // measure the spread after the shift.
                        err_recent = 0.0;
                        err_profile = err_profile.max((v - e_p).abs());
                        resid = SortedWindow::new(default_window(s));
                        run = (0.0, 0);
                    }
                }
                resid.push(r);
                err_profile = decay * err_profile + (1.0 - decay) * (v - e_p).abs();
                err_recent = decay * err_recent + (1.0 - decay) * (v - e_r).abs();
            }
            recent.push(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sorted_window_median_and_mad_match_a_sort() {
        let xs = [5.0, 1.0, 9.0, 3.0, 3.0, 7.0, 2.0, 8.0, 100.0, 4.0, 6.0];
        let mut w = SortedWindow::new(6);
        for (k, &x) in xs.iter().enumerate() {
            w.push(x);
            let held: Vec<f64> = xs[(k + 1).saturating_sub(6)..=k].to_vec();
            let med = |v: &[f64]| {
                let mut v = v.to_vec();
                v.sort_by(f64::total_cmp);
                let n = v.len();
                if n % 2 == 1 {
                    v[n / 2]
                } else {
                    0.5 * (v[n / 2 - 1] + v[n / 2])
                }
            };
            let m = med(&held);
            assert_eq!(w.median(), m);
            let dev: Vec<f64> = held.iter().map(|v| (v - m).abs()).collect();
            assert_eq!(w.mad(m), med(&dev), "{held:?}");
        }
    }

    /// The merge of the deviations outward from the median: the former implementation,
    /// kept as the reference the binary search must reproduce bit for bit.
    fn mad_by_merge(a: &[f64], m: f64) -> f64 {
        let n = a.len();
        let mut j = a.partition_point(|&x| x < m);
        let mut i = j;
        let mut merged = Vec::new();
        while merged.len() < n {
            let left = (i > 0).then(|| m - a[i - 1]);
            let right = (j < n).then(|| a[j] - m);
            match (left, right) {
                (Some(l), Some(r)) if l <= r => {
                    i -= 1;
                    merged.push(l)
                }
                (Some(l), None) => {
                    i -= 1;
                    merged.push(l)
                }
                (_, Some(r)) => {
                    j += 1;
                    merged.push(r)
                }
                (None, None) => break,
            }
        }
        if n % 2 == 1 {
            merged[n / 2]
        } else {
            0.5 * (merged[n / 2 - 1] + merged[n / 2])
        }
    }

    proptest! {
        #[test]
        fn sorted_window_holds_the_last_values_sorted(
            xs in proptest::collection::vec(
                prop_oneof![-3.0..3.0f64, (0..4u8).prop_map(f64::from)],
                1..120,
            ),
            cap in 1usize..40,
        ) {
            let mut w = SortedWindow::new(cap);
            for (k, &x) in xs.iter().enumerate() {
                w.push(x);
                let mut want = xs[(k + 1).saturating_sub(cap)..=k].to_vec();
                want.sort_by(f64::total_cmp);
                prop_assert_eq!(&w.sorted, &want);
            }
        }

        /// The sum of absolute deviations from the values off the median alone is the
        /// plain sum over the whole window, bit for bit.
        #[test]
        fn abs_dev_sum_is_the_plain_sum(
            xs in proptest::collection::vec(
                prop_oneof![-3.0..3.0f64, (0..3u8).prop_map(f64::from), Just(-0.0), Just(1e300)],
                1..120,
            ),
            cap in 1usize..60,
        ) {
            let mut w = SortedWindow::new(cap);
            for &x in &xs {
                w.push(x);
                for m in [w.median(), 0.0, -0.0, 1.0, x] {
                    let plain: f64 = w.sorted.iter().map(|v| (v - m).abs()).sum();
                    prop_assert_eq!(w.abs_dev_sum(m).to_bits(), plain.to_bits(), "m {}", m);
                }
            }
        }

        #[test]
        fn mad_by_search_equals_the_merge(
            xs in proptest::collection::vec(
                prop_oneof![0.0..5.0f64, (0..4u8).prop_map(f64::from)],
                1..80,
            ),
            cap in 1usize..40,
        ) {
            let mut w = SortedWindow::new(cap);
            for &x in &xs {
                w.push(x);
                let m = w.median();
                prop_assert_eq!(w.mad(m).to_bits(), mad_by_merge(&w.sorted, m).to_bits());
            }
        }
    }

    #[test]
    fn robust_flags_a_spike_that_rolling_misses_after_an_earlier_one() {
        // Noise, a huge spike, then a second, smaller spike: the first inflates the rolling
        // standard deviation, not the MAD.
        let mut y: Vec<f64> = (0..200)
            .map(|i| 100.0 + ((i * 37) % 11) as f64 - 5.0)
            .collect();
        y[100] = 10_000.0;
        y[120] = 160.0;
        let ts: Vec<i64> = (0..200)
            .map(|i| i as i64 * super::MICROS_PER_HOUR)
            .collect();
        let s = SeriesView {
            ts: &ts,
            values: &y,
            step: super::MICROS_PER_HOUR,
        };
        let run = |d: &dyn Detector| {
            let mut f = Vec::new();
            d.detect(&s, &mut f);
            f.iter().map(|f| f.index).collect::<Vec<_>>()
        };
        let rolling = run(&Rolling {
            window: Some(50),
            threshold: 3.0,
        });
        let robust = run(&Robust {
            window: Some(50),
            threshold: 3.0,
        });
        assert!(
            rolling.contains(&100) && !rolling.contains(&120),
            "{rolling:?}"
        );
        assert!(robust.contains(&100) && robust.contains(&120), "{robust:?}");
        assert!(robust.iter().all(|&i| i == 100 || i == 120), "{robust:?}");
    }
}
