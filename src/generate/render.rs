//! One event as an NDJSON line, written byte by byte (itoa for integers, ryu for other
//! numbers, a hand-rolled RFC 3339 formatter): rendering is most of the generator's time.

use crate::time::MICROS_PER_DAY;

use super::tenants::TenantGen;

/// One event's fields before rendering.
pub(super) struct Ev<'a> {
    pub(super) ts: i64,
    pub(super) user: Option<u32>,
    pub(super) meter: &'a str,
    pub(super) value: f64,
    pub(super) props: &'a [(&'a str, PropV<'a>)],
}

impl<'a> Ev<'a> {
    pub(super) fn new(
        ts: i64,
        user: Option<u32>,
        meter: &'a str,
        value: f64,
        props: &'a [(&'a str, PropV<'a>)],
    ) -> Self {
        Ev {
            ts,
            user,
            meter,
            value,
            props,
        }
    }
}

/// A property value: a string or a number.
pub(super) enum PropV<'a> {
    S(&'a str),
    N(f64),
}

impl TenantGen {
    /// Appends `e` as one line to `out`, with this tenant's next event id.
    pub(super) fn render(&mut self, e: &Ev<'_>, out: &mut Vec<u8>) {
        self.next_id += 1;
        // Ids carry the seed, so two data sets generated with different seeds never collide.
        out.extend_from_slice(b"{\"id\":\"evt-");
        out.extend_from_slice(self.id_prefix.as_bytes());
        out.push(b'-');
        out.extend_from_slice(itoa::Buffer::new().format(self.next_id).as_bytes());
        out.extend_from_slice(b"\",\"ts\":\"");
        push_ts(out, e.ts);
        out.extend_from_slice(b"\",\"tenant_id\":\"");
        out.extend_from_slice(self.id.as_bytes());
        if let Some(u) = e.user {
            out.extend_from_slice(b"\",\"user_id\":\"u-");
            out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
        }
        out.extend_from_slice(b"\",\"meter\":\"");
        out.extend_from_slice(e.meter.as_bytes());
        out.extend_from_slice(b"\",\"value\":");
        push_num(out, e.value);
        out.extend_from_slice(b",\"properties\":{");
        for (i, (k, v)) in e.props.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.push(b'"');
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(b"\":");
            match v {
                PropV::S(s) => {
                    out.push(b'"');
                    out.extend_from_slice(s.as_bytes());
                    out.push(b'"');
                }
                PropV::N(n) => push_num(out, *n),
            }
        }
        out.extend_from_slice(b"}}\n");
    }
}

/// Fast RFC 3339 (`YYYY-MM-DDTHH:MM:SS.ffffffZ`) of µs since the epoch, digit by digit
/// (chrono's formatter was a third of the generator's time).
fn push_ts(out: &mut Vec<u8>, ts: i64) {
    fn digits(out: &mut Vec<u8>, v: i64, n: usize) {
        let start = out.len();
        out.resize(start + n, b'0');
        let mut v = v;
        for i in (0..n).rev() {
            out[start + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    }
    let days = ts.div_euclid(MICROS_PER_DAY);
    let rem = ts.rem_euclid(MICROS_PER_DAY);
    // Civil from days (Howard Hinnant), proleptic Gregorian.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    digits(out, y, 4);
    out.push(b'-');
    digits(out, m, 2);
    out.push(b'-');
    digits(out, d, 2);
    out.push(b'T');
    digits(out, rem / 3_600_000_000, 2);
    out.push(b':');
    digits(out, rem / 60_000_000 % 60, 2);
    out.push(b':');
    digits(out, rem / 1_000_000 % 60, 2);
    out.push(b'.');
    digits(out, rem % 1_000_000, 6);
    out.push(b'Z');
}

/// Integral values as integers (`1`, not `1.0`), others in ryu's shortest form.
fn push_num(out: &mut Vec<u8>, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        out.extend_from_slice(itoa::Buffer::new().format(v as i64).as_bytes());
    } else {
        out.extend_from_slice(ryu::Buffer::new().format(v).as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_render_like_chrono() {
        for ts in [
            0i64,
            1,
            86_399_999_999,
            951_782_400_000_000,
            1_790_000_123_456_789,
            4_102_444_799_999_999,
        ] {
            let mut out = Vec::new();
            push_ts(&mut out, ts);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                crate::time::rfc3339_micros(ts),
                "{ts}"
            );
        }
    }
}
