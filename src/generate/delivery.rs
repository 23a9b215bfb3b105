//! How a rendered event reaches the output, as in real pipelines: most on time, a share
//! late (deferred 1 to 72 hours), some twice (a retry within the hour or the next), some
//! malformed (broken in one of six ways an ingest must reject). The counts go into the
//! hour's [`GenSummary`], the ground truth an ingest must reproduce.

use rand::Rng;

use super::GenConfig;
use super::GenSummary;
use super::render::Ev;
use super::tenants::TenantGen;

/// A line waiting for a later hour (late events and retries), in generation order.
pub(super) struct Deferred {
    pub(super) hour: i64,
    pub(super) line: Vec<u8>,
}

/// Per-hour output of one tenant.
#[derive(Default)]
pub(super) struct HourOut {
    pub(super) lines: Vec<u8>,
    pub(super) deferred: Vec<Deferred>,
    pub(super) stats: GenSummary,
}

impl TenantGen {
    /// Writes one event, possibly late, duplicated or malformed. The line is rendered in
    /// place at the end of the hour's output and moved out only when it is deferred.
    pub(super) fn emit(&mut self, cfg: &GenConfig, hour: i64, e: &Ev<'_>, o: &mut HourOut) {
        let start = o.lines.len();
        self.render(e, &mut o.lines);
        let r: f64 = self.rng.random();
        if r < cfg.bad_rate {
            o.stats.malformed += 1;
            let bad = corrupt(&o.lines[start..], self.rng.random_range(0..6));
            o.lines.truncate(start);
            o.lines.extend_from_slice(&bad);
            return;
        }
        o.stats.events += 1;
        match o
            .stats
            .value_sums
            .iter_mut()
            .find(|(k, _)| k.as_str() == e.meter)
        {
            Some((_, v)) => *v += e.value,
            None => {
                o.stats.value_sums.insert(e.meter.to_string(), e.value);
            }
        }
        if r < cfg.bad_rate + cfg.dup_rate {
            o.stats.duplicates += 1;
            let later = hour + self.rng.random_range(0..2);
            o.deferred.push(Deferred {
                hour: later,
                line: o.lines[start..].to_vec(),
            });
        }
        if self.rng.random::<f64>() < cfg.late_rate {
            o.stats.late += 1;
            let later = hour + self.rng.random_range(1..=72);
            o.deferred.push(Deferred {
                hour: later,
                line: o.lines[start..].to_vec(),
            });
            o.lines.truncate(start);
        }
    }
}

/// Breaks a valid line in one of the ways real pipelines do.
fn corrupt(line: &[u8], how: u32) -> Vec<u8> {
    let s = String::from_utf8_lossy(line);
    let s = s.trim_end();
    let out = match how {
        0 => s[..s.len() / 2].to_string(), // truncated write
        1 => s.replacen("\"tenant_id\"", "\"tenant\"", 1), // missing tenant_id
        2 => s.replacen("\"value\":", "\"value\":-", 1), // negative value
        3 => s.replacen("\"ts\":\"", "\"ts\":\"not-a-time ", 1), // bad timestamp
        4 => s.replacen("\"id\":\"evt-", "\"id\":\"evt/", 1), // path separator in id
        _ => s.replacen("\"meter\":\"", "\"meter\":\"\",\"x\":\"", 1), // empty meter
    };
    let mut v = out.into_bytes();
    v.push(b'\n');
    v
}
