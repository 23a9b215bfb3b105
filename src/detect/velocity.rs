//! Velocity: sudden rises and drops.
//!
//! - Spike: the value exceeds the previous hour's level by more than `spike_ratio`
//!   (+500 % by default) and reaches `min_volume` (so 1 → 6 calls is not an incident). The
//!   previous hour's level is the previous point for hourly or coarser series (if it is
//!   one step back), else the mean of the points in the hour before; and the value must
//!   be above the series' usual highs (the k-th largest of the last week, k = 1 % of the
//!   points, at least 3: a series that bursts routinely is not flagged for it). Warm-up:
//!   one hour (the usual-highs rule applies once 7 points are known). With `seen_before`,
//!   a spike to a value the last seasons already held near the same phase (see
//!   [`super::zscore::Profile::seen_range`]) is routine too.
//! - Drop: a run of points each below `drop_ratio` (10 %) of its expected level, once the
//!   run has lost at least `min_volume` in total (Σ expected: a small tenant at 0 for a
//!   day has broken as surely as a big one at 0 for an hour), stays below the ratio in
//!   total, and its total miss exceeds `threshold` robust standard deviations (1.4826 MAD)
//!   of the series' usual misses of its expected level (the last week of them), times
//!   √length: a sparse series (0 one hour, 500 the next) drops to 0 routinely. On
//!   sub-hourly series the run must have lasted an hour, so one low reading is not a
//!   broken integration. The expected level is the median of the same phase over the last
//!   seasons (see [`super::zscore::Profile`]; hourly series use the hour of the day until
//!   they have two weeks), or, for series without a season, the median of the previous
//!   week of points. Warm-up: two seasons (or 30 points), then 30 misses.
//!
//! Strength (score over threshold): a spike's relative rise over `spike_ratio`; a drop's
//! `drop_ratio · expected / value`, capped at 10.

use std::collections::VecDeque;

use super::zscore::{Profile, SortedWindow};
use super::{Detector, DetectorKind, Flag, SeriesView, default_window};
use crate::time::MICROS_PER_HOUR;

/// Spikes and drops.
#[derive(Debug, Clone)]
pub struct Velocity {
    /// Relative rise that counts as a spike (5.0 = +500 %).
    pub spike_ratio: f64,
    /// Share of the expected level below which a drop counts.
    pub drop_ratio: f64,
    /// Minimum volume of a spike (its value) and of a drop (its expected level).
    pub min_volume: f64,
    /// How many robust standard deviations of the series' usual misses a drop must exceed.
    pub threshold: f64,
    /// A spike to a value the last seasons held near its phase is routine (see
    /// [`Profile::seen_range`]); any margin counts as on (a spike has no scale to widen by).
    pub seen_before: Option<f64>,
}

impl Detector for Velocity {
    fn name(&self) -> &'static str {
        "velocity"
    }

    fn warmup(&self, s: &SeriesView) -> usize {
        s.points_in(MICROS_PER_HOUR)
    }

    fn detect(&self, s: &SeriesView, out: &mut Vec<Flag>) {
        let (ts, y) = (s.ts, s.values);
        let coarse = s.step >= MICROS_PER_HOUR;
        // Sub-hourly: a running sum over the points in the hour before.
        let mut hour: VecDeque<usize> = VecDeque::new();
        let mut hour_sum = 0.0;
        let mut profile = Profile::new(s);
        let mut recent = SortedWindow::new(default_window(s));
        // The current run of low points: its start, Σ expected, Σ observed, length.
        let mut run: Option<(i64, f64, f64, usize)> = None;
        let w = default_window(s);
        // v − expected per point (NaN before the expectation exists), read back only when a
        // drop is a candidate.
        let mut misses: Vec<f64> = Vec::with_capacity(y.len());
        let mut scratch: Vec<f64> = Vec::new();
        let seen_window = self.seen_before.map(|_| super::zscore::phase_window(s));
        for i in 0..y.len() {
            let v = y[i];
            // Spike.
            let base = if coarse {
                (i > 0 && ts[i] - ts[i - 1] <= s.step.max(MICROS_PER_HOUR)).then(|| y[i - 1])
            } else {
                while let Some(&j) = hour.front() {
                    if ts[i] - ts[j] > MICROS_PER_HOUR {
                        hour_sum -= y[j];
                        hour.pop_front();
                    } else {
                        break;
                    }
                }
                // A full hour of history (its first point an hour back, give or take a step).
                let full = i > 0
                    && hour
                        .front()
                        .is_some_and(|&j| ts[i] - ts[j] >= MICROS_PER_HOUR - s.step);
                (full && !hour.is_empty()).then(|| hour_sum / hour.len() as f64)
            };
            // A rise the series makes routinely (its values this high are in the top 1 % of
            // the last week) is its normal burstiness, not an incident. Checked only for
            // candidates: the scan is O(window).
            let mut spike = None;
            if let Some(b) = base
                && v >= self.min_volume
                && b >= 0.0
                && v > b * (1.0 + self.spike_ratio)
                && !upper_tail(&y[i.saturating_sub(w)..i], &mut scratch).is_some_and(|q| v <= q)
            {
                // From zero, the rise is measured against the minimum volume (and capped:
                // with no minimum volume, a rise from 0 is "a million-fold", not infinite).
                let from = b.max(self.min_volume / (1.0 + self.spike_ratio));
                let rise = if from > 0.0 {
                    (v / from - 1.0).min(1e6)
                } else {
                    1e6
                };
                spike = Some(Flag {
                    index: i,
                    expected: b,
                    score: rise,
                    strength: (rise / self.spike_ratio).max(1.0),
                    detector: DetectorKind::VelocitySpike,
                });
            }
            if !coarse {
                hour.push_back(i);
                hour_sum += v;
            }
            // Drop.
            let expected = match &mut profile {
                Some(p) => p.feed(ts[i], v).or_fallback(),
                None => {
                    let e = (recent.len() >= 30).then(|| recent.median());
                    recent.push(v);
                    e
                }
            };
            // A spike to a value the last seasons held near this time of day is routine.
            if let Some(f) = spike {
                let seen = seen_window.is_some_and(|w| {
                    profile
                        .as_ref()
                        .and_then(|p| p.seen_range(w))
                        .is_some_and(|(_, hi)| v <= hi)
                });
                if !seen {
                    out.push(f);
                }
            }
            // A run of points each below the ratio of its expected level. The run counts
            // once it has lost at least `min_volume` (Σ expected), stays below the ratio in
            // total, and its total miss exceeds `threshold` usual misses (robust standard
            // deviation of the last week's misses, × √length for a run of independent
            // misses): a sparse series (0 one hour, 500 the next) drops to 0 routinely, a
            // small tenant at 0 for a whole day has broken.
            let low = expected.is_some_and(|e| e > 0.0 && v < self.drop_ratio * e);
            if low {
                let e = expected.unwrap_or(0.0);
                let r = run.get_or_insert((ts[i], 0.0, 0.0, 0usize));
                r.1 += e;
                r.2 += v;
                r.3 += 1;
            } else {
                run = None;
            }
            let below = run.is_some_and(|(_, sum_e, sum_v, len)| {
                sum_e >= self.min_volume.max(f64::MIN_POSITIVE)
                    && sum_v < self.drop_ratio * sum_e
                    && {
                        scratch.clear();
                        scratch.extend(
                            misses[i.saturating_sub(w)..i]
                                .iter()
                                .filter(|m| !m.is_nan()),
                        );
                        scratch.len() >= 30
                            && sum_e - sum_v
                                > self.threshold * mad_scale(&mut scratch) * (len as f64).sqrt()
                    }
            });
            misses.push(expected.map_or(f64::NAN, |e| v - e));
            // Sub-hourly series: the drop must have lasted an hour (a lone low reading is noise).
            let sustained =
                coarse || run.is_some_and(|(t0, ..)| ts[i] - t0 >= MICROS_PER_HOUR - s.step);
            if let Some(e) = expected
                && below
                && sustained
            {
                let strength = (self.drop_ratio * e / v.max(e * 1e-12)).min(10.0);
                out.push(Flag {
                    index: i,
                    expected: e,
                    score: 1.0 - v / e,
                    strength: strength.max(1.0),
                    detector: DetectorKind::VelocityDrop,
                });
            }
        }
    }
}

/// The k-th largest of `window` (k = 1 % of it, at least 3), or None when it holds fewer
/// than 2k + 1 values: the same order statistic as [`SortedWindow::scale`] uses.
fn upper_tail(window: &[f64], scratch: &mut Vec<f64>) -> Option<f64> {
    let n = window.len();
    let k = (n / 100).max(3);
    if n <= 2 * k {
        return None;
    }
    scratch.clear();
    scratch.extend_from_slice(window);
    let (_, kth, _) = scratch.select_nth_unstable_by(n - k, f64::total_cmp);
    Some(*kth)
}

/// 1.4826 · the MAD of `v` (reordered in place), or 1.2533 · the mean absolute deviation
/// when the MAD is 0 (as [`SortedWindow::core_scale`]).
fn mad_scale(v: &mut [f64]) -> f64 {
    let median = |v: &mut [f64]| -> f64 {
        let n = v.len();
        let (_, hi, _) = v.select_nth_unstable_by(n / 2, f64::total_cmp);
        let hi = *hi;
        if n % 2 == 1 {
            hi
        } else {
            let lo = v[..n / 2].iter().copied().fold(f64::MIN, f64::max);
            0.5 * (lo + hi)
        }
    };
    if v.is_empty() {
        return 0.0;
    }
    let m = median(v);
    v.iter_mut().for_each(|x| *x = (*x - m).abs());
    let mad = median(v);
    if mad > 0.0 {
        1.4826 * mad
    } else {
        1.2533 * v.iter().sum::<f64>() / v.len() as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_statistics_match_the_sorted_window() {
        let xs: Vec<f64> = (0..400).map(|i| ((i * 7919) % 263) as f64 * 0.5).collect();
        let mut w = SortedWindow::new(400);
        xs.iter().for_each(|&x| w.push(x));
        let mut scratch = Vec::new();
        assert_eq!(upper_tail(&xs, &mut scratch), w.upper_tail());
        let mut copy = xs.clone();
        assert!((mad_scale(&mut copy) - w.core_scale(w.median())).abs() < 1e-9);
        let mut odd = xs[..101].to_vec();
        let mut w = SortedWindow::new(101);
        xs[..101].iter().for_each(|&x| w.push(x));
        assert!((mad_scale(&mut odd) - w.core_scale(w.median())).abs() < 1e-9);
    }
}
