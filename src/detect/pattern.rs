//! Off-hours activity: usage in a series' quiet hours far above its own norm for that hour.
//!
//! Hours of the day (UTC: a tenant's local 3 AM is a fixed UTC hour, so its quiet hours
//! are learned without knowing its zone) whose median over the last two weeks is at most a
//! quarter of the median hour are quiet (a series whose median hour is 0, sparse usage,
//! has no quiet hours to speak of). A point in a quiet hour is flagged when it reaches
//! `min_volume` and the median hour's level, and exceeds that hour's median by more than
//! `threshold` robust standard deviations of that hour (see
//! [`SortedWindow::scale`]; at least √median, the Poisson spread of a count, and at least
//! 1). Series with steps over an hour get no flags. Warm-up: seven days.

use super::zscore::SortedWindow;
use super::{Detector, DetectorKind, Flag, SeriesView, median};
use crate::time::{MICROS_PER_DAY, MICROS_PER_HOUR};

/// Days of history per hour of the day.
const DAYS: usize = 14;

/// Off-hours activity.
#[derive(Debug, Clone)]
pub struct OffHours {
    /// Robust z threshold within the hour.
    pub threshold: f64,
    /// Minimum value to flag.
    pub min_volume: f64,
}

impl Detector for OffHours {
    fn name(&self) -> &'static str {
        "off_hours"
    }

    fn warmup(&self, s: &SeriesView) -> usize {
        s.points_in(7 * MICROS_PER_DAY)
    }

    fn detect(&self, s: &SeriesView, out: &mut Vec<Flag>) {
        if s.step > MICROS_PER_HOUR || s.ts.is_empty() {
            return;
        }
        let per_hour = s.points_in(MICROS_PER_HOUR);
        let mut hours: Vec<SortedWindow> = (0..24)
            .map(|_| SortedWindow::new(DAYS * per_hour))
            .collect();
        let mut meds = [0.0f64; 24];
        let start = s.ts[0];
        for (i, (&t, &v)) in s.ts.iter().zip(s.values).enumerate() {
            let h = (t.rem_euclid(MICROS_PER_DAY) / MICROS_PER_HOUR) as usize;
            if t - start >= 7 * MICROS_PER_DAY && v >= self.min_volume {
                let mut all = meds;
                let typical = median(&mut all);
                let m = meds[h];
                // A quiet hour, and a value as high as a normal hour's and far above this
                // hour's own spread.
                if typical > 0.0 && m <= 0.25 * typical && v >= typical {
                    let sd = hours[h].scale(m).max(m.max(0.0).sqrt()).max(1.0);
                    let z = (v - m) / sd;
                    if z > self.threshold {
                        out.push(Flag {
                            index: i,
                            expected: m,
                            score: z,
                            strength: z / self.threshold,
                            detector: DetectorKind::OffHours,
                        });
                    }
                }
            }
            hours[h].push(v);
            meds[h] = hours[h].median();
        }
    }
}
