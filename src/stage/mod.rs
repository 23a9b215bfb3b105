//! The stages over the lake: each reads the lake (through rollups and billing), runs one
//! kind of analysis, and writes a derived table under the lake ([`tables`]).
//!
//! | stage | runs | writes |
//! |---|---|---|
//! | [`forecast`] | the models of [`crate::forecast`] on every tenant × meter rollup series | `forecasts/` |
//! | [`anomalies`] | the detectors of [`crate::detect`] on the series, abuse patterns on the events | `anomalies/` |
//! | [`quotas`] | billing's quota evaluation with projections, once per job | `quotas/` |
//! | [`alerts`] | thresholds, limits, cost and anomaly alerts from the above; webhook delivery | `alerts/` |
//! | [`refresh`] | the stages above for the tenants whose events changed (what `serve` runs every interval) | the same tables |
//! | [`invoices`] | a closed month's invoices issued once, late events of issued months as adjustments | `_invoices/` |
//! | [`notify`] | alerts sent by e-mail, Slack or webhook by rules, with digests, quiet hours and escalation | `alerts/deliveries.parquet` |
//!
//! The pure algorithms live beside, not here: [`crate::forecast`] and [`crate::detect`]
//! take plain series and import nothing of the lake, rollups or billing. A stage is the
//! glue between them and the lake: it reads series, fans them out with rayon, and stores
//! what they found.
//!
//! Layer: stages import the lake, rollups, usage and billing below them, and never the
//! reports, jobs, server or CLI above them.

pub mod alerts;
pub mod anomalies;
pub mod forecast;
pub mod invoices;
pub mod notify;
pub mod quotas;
pub mod refresh;
pub mod tables;
