//! Velocity: sudden rises and drops.
//!
//! - Spike: the value exceeds the previous hour's level by more than `spike_ratio`
//!   (+500 % by default) and reaches `min_volume` (so 1 → 6 calls is not an incident). The
//!   previous hour's level is the previous point for hourly or coarser series (if it is
//!   one step back), else the mean of the points in the hour before; and the value must
//!   be above the series' usual highs (the k-th largest of the last week, k = 1 % of the
//!   points, at least 3: a series that bursts routinely is not flagged for it). Warm-up:
//!   one hour (the usual-highs rule applies once 7 points are known).
//! - Drop: the value falls below `drop_ratio` (10 %) of the expected level, and the
//!   expected level is at least `min_volume`, and the fall exceeds `threshold` robust
//!   standard deviations (1.4826 MAD) of the series' usual misses of its expected level
//!   (the last week of them; a sparse series, 0 one hour and 500 the next, drops to 0 routinely); on
//!   sub-hourly series every point of the last hour must have, so one low reading is not a
//!   broken integration. The expected level is the median of the same
//!   phase over the last seasons (see [`super::zscore::Profile`]; hourly series use the
//!   hour of the day until they have two weeks), or, for series without a season, the median of the previous week of points. Warm-up: two seasons (or 30
//!   points), then 30 misses.
//!
//! Strength (score over threshold): a spike's relative rise over `spike_ratio`; a drop's
//! `drop_ratio · expected / value`, capped at 10.

use std::collections::VecDeque;

use super::zscore::{Profile, SortedWindow};
use super::{Detector, Flag, HOUR, Kind, SeriesView, default_window};

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
}

impl Detector for Velocity {
    fn name(&self) -> &'static str {
        "velocity"
    }

    fn warmup(&self, s: &SeriesView) -> usize {
        s.points_in(HOUR)
    }

    fn detect(&self, s: &SeriesView, out: &mut Vec<Flag>) {
        let (ts, y) = (s.ts, s.values);
        let coarse = s.step >= HOUR;
        // Sub-hourly: a running sum over the points in the hour before.
        let mut hour: VecDeque<usize> = VecDeque::new();
        let mut hour_sum = 0.0;
        let mut profile = Profile::new(s);
        let mut recent = SortedWindow::new(default_window(s));
        let mut drop_since: Option<i64> = None;
        let mut history = SortedWindow::new(default_window(s));
        let mut misses = SortedWindow::new(default_window(s));
        for i in 0..y.len() {
            let v = y[i];
            // Spike.
            let base = if coarse {
                (i > 0 && ts[i] - ts[i - 1] <= s.step.max(HOUR)).then(|| y[i - 1])
            } else {
                while let Some(&j) = hour.front() {
                    if ts[i] - ts[j] > HOUR {
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
                        .is_some_and(|&j| ts[i] - ts[j] >= HOUR - s.step);
                (full && !hour.is_empty()).then(|| hour_sum / hour.len() as f64)
            };
            // A rise the series makes routinely (its values this high are in the top 1 % of
            // the last week) is its normal burstiness, not an incident.
            let routine = history.upper_tail().is_some_and(|q| v <= q);
            if let Some(b) = base
                && v >= self.min_volume
                && b >= 0.0
                && v > b * (1.0 + self.spike_ratio)
                && !routine
            {
                // From zero, the rise is measured against the minimum volume.
                let rise = v / b.max(self.min_volume / (1.0 + self.spike_ratio)) - 1.0;
                out.push(Flag {
                    index: i,
                    expected: b,
                    score: rise,
                    strength: (rise / self.spike_ratio).max(1.0),
                    detector: Kind::VelocitySpike,
                });
            }
            if !coarse {
                hour.push_back(i);
                hour_sum += v;
            }
            history.push(v);
            // Drop.
            let expected = match &mut profile {
                Some(p) => {
                    let e = p.expected_or_fallback(ts[i], 2);
                    p.push(ts[i], v);
                    e
                }
                None => {
                    let e = (recent.len() >= 30).then(|| recent.median());
                    recent.push(v);
                    e
                }
            };
            // Below the ratio, and by more than the series' usual misses of its expected
            // level: a sparse series (0 one hour, 500 the next) drops to 0 routinely.
            let usual_miss = misses.core_scale(misses.median());
            let below = expected.is_some_and(|e| {
                e >= self.min_volume.max(f64::MIN_POSITIVE)
                    && v < self.drop_ratio * e
                    && misses.len() >= 30
                    && e - v > self.threshold * usual_miss
            });
            if let Some(e) = expected {
                misses.push(v - e);
            }
            if !below {
                drop_since = None;
            } else if drop_since.is_none() {
                drop_since = Some(ts[i]);
            }
            // Sub-hourly series: the drop must have lasted an hour (a lone low reading is noise).
            let sustained = coarse || drop_since.is_some_and(|t0| ts[i] - t0 >= HOUR - s.step);
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
                    detector: Kind::VelocityDrop,
                });
            }
        }
    }
}
