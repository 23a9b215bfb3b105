//! Events column by column ([`EventBuf`]): what ingest parses records into, buffers per
//! day and writes to lake files, with no allocation per event.
//!
//! Strings of one column share one buffer (`data` plus end offsets), the way Arrow lays
//! them out; a buffered event costs its bytes plus about 90 bytes of offsets and scalars,
//! against ~340 for an owned [`UsageEvent`] with its five heap strings.

use crate::event::UsageEvent;

/// A column of strings in one buffer.
#[derive(Debug, Default, Clone)]
pub struct Strs {
    data: String,
    ends: Vec<usize>,
}

impl Strs {
    /// The `i`-th string.
    #[inline]
    pub fn get(&self, i: usize) -> &str {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.data[start..self.ends[i]]
    }

    #[inline]
    fn push(&mut self, s: &str) {
        self.data.push_str(s);
        self.ends.push(self.data.len());
    }

    /// Bytes of string data.
    pub fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Events in columns, in insertion order, each with its dedup key.
#[derive(Debug, Default, Clone)]
pub struct EventBuf {
    /// `ts`, UTC µs.
    pub ts: Vec<i64>,
    /// `value`.
    pub value: Vec<f64>,
    /// Dedup keys (see `ingest::dedup_key`); 0 when the buffer was built from events.
    pub key: Vec<u128>,
    id: Strs,
    tenant: Strs,
    user: Strs,
    has_user: Vec<bool>,
    meter: Strs,
    props: Strs,
}

/// One event's fields, borrowed: what a parser hands over to be stored.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    /// `id`.
    pub id: &'a str,
    /// `ts`, UTC µs.
    pub ts: i64,
    /// `tenant_id`.
    pub tenant: &'a str,
    /// `user_id`.
    pub user: Option<&'a str>,
    /// `meter`.
    pub meter: &'a str,
    /// `value`.
    pub value: f64,
    /// `properties`, compact JSON.
    pub props: &'a str,
    /// Dedup key.
    pub key: u128,
}

/// Rows of a buffer to write: all but `skip` (ascending row numbers).
#[derive(Debug, Clone, Copy)]
pub struct Part<'a> {
    /// The events.
    pub buf: &'a EventBuf,
    /// Rows left out (duplicates found after the buffer was filled), ascending.
    pub skip: &'a [u32],
}

impl Part<'_> {
    /// Row numbers that are kept, ascending.
    pub fn rows(&self) -> impl Iterator<Item = usize> + '_ {
        let mut skip = self.skip.iter().peekable();
        (0..self.buf.len()).filter(move |&i| {
            if skip.peek().is_some_and(|&&s| s as usize == i) {
                skip.next();
                false
            } else {
                true
            }
        })
    }
}

/// Fixed bytes per buffered event: five offsets, ts, value, key and the user flag.
const ROW_OVERHEAD: usize = 5 * 8 + 8 + 8 + 16 + 1;

impl EventBuf {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Heap bytes the events take (data, not capacity), for memory budgets.
    pub fn bytes(&self) -> usize {
        self.len() * ROW_OVERHEAD
            + self.id.data_len()
            + self.tenant.data_len()
            + self.user.data_len()
            + self.meter.data_len()
            + self.props.data_len()
    }

    /// Appends one event.
    #[inline]
    pub fn push(&mut self, r: Row<'_>) {
        self.id.push(r.id);
        self.ts.push(r.ts);
        self.tenant.push(r.tenant);
        self.user.push(r.user.unwrap_or(""));
        self.has_user.push(r.user.is_some());
        self.meter.push(r.meter);
        self.value.push(r.value);
        self.props.push(r.props);
        self.key.push(r.key);
    }

    /// Columns of `events` (keys 0).
    pub fn from_events(events: &[UsageEvent]) -> Self {
        let mut b = EventBuf::default();
        for e in events {
            b.push_event(e, 0);
        }
        b
    }

    /// Appends an event, with its dedup key.
    pub fn push_event(&mut self, e: &UsageEvent, key: u128) {
        self.push(Row {
            id: &e.id,
            ts: e.ts,
            tenant: &e.tenant_id,
            user: e.user_id.as_deref(),
            meter: &e.meter,
            value: e.value,
            props: &e.properties,
            key,
        });
    }

    /// Event `i` as an owned [`UsageEvent`].
    pub fn event(&self, i: usize) -> UsageEvent {
        UsageEvent {
            id: self.id(i).to_string(),
            ts: self.ts[i],
            tenant_id: self.tenant(i).to_string(),
            user_id: self.user(i).map(str::to_string),
            meter: self.meter(i).to_string(),
            value: self.value[i],
            properties: self.props(i).to_string(),
        }
    }

    /// Reserves room for `factor` times the events held now, column by column in the same
    /// proportions (a parser's estimate of what is still to come).
    pub fn reserve_scaled(&mut self, factor: f64) {
        let more = |n: usize| (n as f64 * factor).ceil() as usize;
        let rows = more(self.len());
        self.ts.reserve(rows);
        self.value.reserve(rows);
        self.key.reserve(rows);
        self.has_user.reserve(rows);
        for s in [
            &mut self.id,
            &mut self.tenant,
            &mut self.user,
            &mut self.meter,
            &mut self.props,
        ] {
            s.ends.reserve(rows);
            s.data.reserve(more(s.data.len()));
        }
    }

    /// `id` of event `i`.
    #[inline]
    pub fn id(&self, i: usize) -> &str {
        self.id.get(i)
    }
    /// `tenant_id` of event `i`.
    #[inline]
    pub fn tenant(&self, i: usize) -> &str {
        self.tenant.get(i)
    }
    /// `user_id` of event `i`.
    #[inline]
    pub fn user(&self, i: usize) -> Option<&str> {
        self.has_user[i].then(|| self.user.get(i))
    }
    /// `meter` of event `i`.
    #[inline]
    pub fn meter(&self, i: usize) -> &str {
        self.meter.get(i)
    }
    /// `properties` (compact JSON) of event `i`.
    #[inline]
    pub fn props(&self, i: usize) -> &str {
        self.props.get(i)
    }

    /// String column `col` (0 id, 1 tenant_id, 2 user_id, 3 meter, 4 properties, the lake
    /// schema's order), with its presence flags when it is nullable.
    pub(crate) fn strings(&self, col: usize) -> (&Strs, Option<&[bool]>) {
        match col {
            0 => (&self.id, None),
            1 => (&self.tenant, None),
            2 => (&self.user, Some(&self.has_user)),
            3 => (&self.meter, None),
            _ => (&self.props, None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_events_and_counts_bytes() {
        let events = vec![
            UsageEvent {
                id: "e1".into(),
                ts: 5,
                tenant_id: "t".into(),
                user_id: None,
                meter: "m".into(),
                value: 2.0,
                properties: "{}".into(),
            },
            UsageEvent {
                id: "é2".into(),
                ts: 7,
                tenant_id: "tt".into(),
                user_id: Some(String::new()),
                meter: "mm".into(),
                value: 0.5,
                properties: r#"{"a":1}"#.into(),
            },
        ];
        let b = EventBuf::from_events(&events);
        assert_eq!((0..b.len()).map(|i| b.event(i)).collect::<Vec<_>>(), events);
        let strings: usize = events
            .iter()
            .map(|e| {
                e.id.len()
                    + e.tenant_id.len()
                    + e.user_id.as_ref().map_or(0, String::len)
                    + e.meter.len()
                    + e.properties.len()
            })
            .sum();
        assert_eq!(b.bytes(), 2 * ROW_OVERHEAD + strings);
        let part = Part {
            buf: &b,
            skip: &[0],
        };
        assert_eq!(part.rows().collect::<Vec<_>>(), vec![1]);
    }
}
