//! Shards: a stable split of the lake's tenants among N workers (`--shard I/N`).
//!
//! Tenant `t` belongs to shard `xxh3_64(t) mod N`, the 64-bit XXH3 hash (seed 0) of its
//! id's UTF-8 bytes. XXH3 is a specified algorithm, so the split is the same on every
//! machine, version and run, and a scheduler outside meterlake can compute it too. Every
//! series (tenant × meter, and any breakdown under it) belongs to exactly one shard, so N
//! workers that each compute their shard's part of a derived table together compute
//! the whole table, and no row twice. `I` counts from 0, as a Kubernetes Indexed Job
//! numbers its pods (`JOB_COMPLETION_INDEX`).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// Workers a shard count may name at most (a guard against a typo such as `0/100000000`).
pub const MAX_SHARDS: u32 = 65_536;

/// One of N shards of the lake's tenants: worker `index` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Shard {
    /// This worker's index, `0 <= index < count`.
    pub index: u32,
    /// The number of workers.
    pub count: u32,
}

impl Default for Shard {
    fn default() -> Self {
        Shard::ALL
    }
}

impl Shard {
    /// The one shard of an unsharded run: every tenant.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Worker `index` of `count`; an error names the parameter when `index >= count`,
    /// `count` is 0 or above [`MAX_SHARDS`].
    pub fn new(index: u32, count: u32) -> Result<Shard> {
        if count == 0 || count > MAX_SHARDS || index >= count {
            return Err(Error::InvalidParameter {
                name: "--shard",
                reason: format!(
                    "{index}/{count}: needs I/N with 0 <= I < N and 1 <= N <= {MAX_SHARDS}"
                ),
            });
        }
        Ok(Shard { index, count })
    }

    /// The `count` shards, by index.
    pub fn all(count: u32) -> Result<Vec<Shard>> {
        (0..count).map(|i| Shard::new(i, count)).collect()
    }

    /// Whether this is the whole lake (N = 1).
    pub fn is_all(&self) -> bool {
        self.count == 1
    }

    /// The shard a tenant belongs to among `count`.
    pub fn index_of(tenant: &str, count: u32) -> u32 {
        (xxhash_rust::xxh3::xxh3_64(tenant.as_bytes()) % u64::from(count.max(1))) as u32
    }

    /// Whether `tenant` belongs to this shard.
    pub fn holds(&self, tenant: &str) -> bool {
        self.is_all() || Shard::index_of(tenant, self.count) == self.index
    }

    /// The folder a sharded derived table keeps this shard's part in: `shard=I-of-N`.
    pub fn dir_name(&self) -> String {
        format!("shard={}-of-{}", self.index, self.count)
    }

    /// The shard whose folder is named `name` ([`Shard::dir_name`]), if it is one.
    pub fn from_dir_name(name: &str) -> Option<Shard> {
        let (i, n) = name.strip_prefix("shard=")?.split_once("-of-")?;
        Shard::new(i.parse().ok()?, n.parse().ok()?).ok()
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = Error;

    /// `I/N`, e.g. `2/8`.
    fn from_str(s: &str) -> Result<Shard> {
        let bad = || Error::InvalidParameter {
            name: "--shard",
            reason: format!("`{s}`: expected I/N (worker I of N, from 0), e.g. 0/4"),
        };
        let (i, n) = s.trim().split_once('/').ok_or_else(bad)?;
        let i: u32 = i.trim().parse().map_err(|_| bad())?;
        let n: u32 = n.trim().parse().map_err(|_| bad())?;
        Shard::new(i, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_with_the_parameter_named() {
        assert_eq!(
            "2/8".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 8 }
        );
        assert_eq!(" 0 / 1 ".parse::<Shard>().unwrap(), Shard::ALL);
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2", "0/999999999"] {
            let e = bad.parse::<Shard>().unwrap_err().to_string();
            assert!(e.contains("--shard"), "{bad}: {e}");
        }
        let s = Shard::new(4, 7).unwrap();
        assert_eq!(Shard::from_dir_name(&s.dir_name()), Some(s));
        assert_eq!(s.to_string(), "4/7");
    }

    /// The split is XXH3 (checked against the algorithm's published value for the empty
    /// input), every tenant lands in exactly one shard, and the shards are not lopsided.
    #[test]
    fn every_tenant_lands_in_exactly_one_shard() {
        assert_eq!(xxhash_rust::xxh3::xxh3_64(b""), 0x2D06_8005_38D3_94C2);
        let tenants: Vec<String> = (0..2_000).map(|i| format!("tenant-{i:04}")).collect();
        for n in [1u32, 3, 7] {
            let mut sizes = vec![0usize; n as usize];
            for t in &tenants {
                let owners: Vec<u32> = (0..n)
                    .filter(|&i| Shard::new(i, n).unwrap().holds(t))
                    .collect();
                assert_eq!(owners.len(), 1, "{t} in {n} shards: {owners:?}");
                sizes[owners[0] as usize] += 1;
            }
            let expected = tenants.len() / n as usize;
            for s in sizes {
                assert!(s > expected * 8 / 10 && s < expected * 12 / 10, "{n}: {s}");
            }
        }
    }
}
