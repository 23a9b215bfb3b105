//! Anomaly likelihood: whether a detector's recent scores are in the far tail of that same
//! series' own score history, so a series whose residuals routinely reach |z| = 4 needs
//! more than 4 to be flagged and a calm one does not (a per-series adaptive threshold).
//!
//! This is the step Numenta's HTM detector puts after its raw scores (Ahmad et al. 2017,
//! "Unsupervised real-time anomaly detection for streaming data", §3.3): the mean of the
//! last `short` scores is compared with the mean and standard deviation of those short means
//! over the last `long` points, and its Gaussian tail probability is the likelihood. A
//! point passes when that tail is below `tail` (e.g. 10⁻⁴). Scores are capped at
//! [`CAP`] so one huge spike cannot blind the statistics for a whole window, and nothing
//! passes during the first [`LEARN`] short means (the statistics are not known yet).
//! Causal: a point is judged against the short means before it.

use std::collections::VecDeque;

/// Scores are capped here before they enter the statistics.
pub const CAP: f64 = 10.0;
/// Short means learned before anything passes.
pub const LEARN: usize = 100;

/// The anomaly likelihood of one series' stream of scores.
#[derive(Debug, Clone)]
pub struct Likelihood {
    short: VecDeque<f64>,
    short_len: usize,
    short_sum: f64,
    long: VecDeque<f64>,
    long_len: usize,
    s1: f64,
    s2: f64,
    since_exact: usize,
    z_min: f64,
}

impl Likelihood {
    /// Short means of `short` scores, judged against the last `long` of them; a point
    /// passes when its tail probability is below `tail` (0 < tail < 0.5).
    pub fn new(short: usize, long: usize, tail: f64) -> Likelihood {
        let short_len = short.max(1);
        let long_len = long.max(LEARN);
        Likelihood {
            short: VecDeque::with_capacity(short_len),
            short_len,
            short_sum: 0.0,
            long: VecDeque::with_capacity(long_len.min(1 << 16)),
            long_len,
            s1: 0.0,
            s2: 0.0,
            since_exact: 0,
            // One-sided: P(Z > z_min) = tail.
            z_min: crate::forecast::normal_quantile(1.0 - 2.0 * tail.clamp(1e-12, 0.499)),
        }
    }

    /// Feeds the next score (≥ 0); whether the recent scores are far in the tail of this
    /// series' history.
    pub fn feed(&mut self, score: f64) -> bool {
        let a = if score.is_finite() {
            score.clamp(0.0, CAP)
        } else {
            CAP
        };
        if self.short.len() == self.short_len
            && let Some(old) = self.short.pop_front()
        {
            self.short_sum -= old;
        }
        self.short.push_back(a);
        self.short_sum += a;
        let m = self.short_sum / self.short.len() as f64;
        let n = self.long.len();
        let pass = n >= LEARN && {
            let mean = self.s1 / n as f64;
            let var = ((self.s2 - self.s1 * mean) / (n as f64 - 1.0)).max(0.0);
            // A floor on the spread: a perfectly regular score stream is not infinitely sure.
            let sd = var.sqrt().max(0.05 * mean.abs()).max(1e-3);
            (m - mean) / sd > self.z_min
        };
        if self.long.len() == self.long_len
            && let Some(old) = self.long.pop_front()
        {
            self.s1 -= old;
            self.s2 -= old * old;
        }
        self.long.push_back(m);
        self.s1 += m;
        self.s2 += m * m;
        // Recompute the sums now and then so rounding cannot drift.
        self.since_exact += 1;
        if self.since_exact >= self.long_len {
            self.since_exact = 0;
            self.s1 = self.long.iter().sum();
            self.s2 = self.long.iter().map(|x| x * x).sum();
        }
        pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_only_scores_far_above_the_series_own_history() {
        // A calm stream (scores 0.5..1.5), then a score of 6: it passes; the same 6 in a
        // stream that routinely reaches 6 does not.
        let mut calm = Likelihood::new(1, 1000, 1e-4);
        let mut noisy = Likelihood::new(1, 1000, 1e-4);
        for i in 0..500 {
            let u = ((i * 37) % 11) as f64 / 10.0;
            assert!(!calm.feed(0.5 + u), "calm {i}");
            noisy.feed(if i % 7 == 0 { 6.0 } else { 0.5 + u });
        }
        assert!(calm.feed(6.0));
        assert!(!noisy.feed(6.0));
        // Nothing passes while learning.
        let mut fresh = Likelihood::new(1, 1000, 1e-4);
        assert!((0..LEARN).all(|_| !fresh.feed(100.0)));
    }
}
