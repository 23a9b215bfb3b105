//! `clap::ValueEnum` for the library's named enums (granularity, model, fill, report kind
//! and format, input format), so the library itself stays free of clap.
//!
//! Each enum has a plain API in its own module (`ALL`, `name`, `FromStr`, `Display`); the
//! impls here build on it and add the one-line help `--help` shows for each value. The
//! help repeats the variant's doc comment, which is what the derive showed before.

use clap::ValueEnum;
use clap::builder::PossibleValue;

use crate::forecast::{Criterion, ModelKind};
use crate::rollup::Granularity;
use crate::series::Fill;
use crate::{ingest, report};

/// `ValueEnum` for `$t` over `$t::ALL` and `$t::name`, with each variant's help.
macro_rules! value_enum {
    ($t:ty { $($v:ident => $help:literal),+ $(,)? }) => {
        impl ValueEnum for $t {
            fn value_variants<'a>() -> &'a [Self] {
                &<$t>::ALL
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                let help = match self {
                    $(Self::$v => $help,)+
                };
                Some(PossibleValue::new(self.name()).help(help))
            }
        }
    };
}

value_enum!(Granularity {
    Hour => "One hour",
    Day => "One calendar day",
    Week => "One ISO week, Monday to Monday",
    Month => "One calendar month",
});

value_enum!(ModelKind {
    Auto => "Per series, the model with the lowest AICc (seasonal positive series) or backtest MASE",
    Linear => "Linear trend (with calendar dummies)",
    MovingAverage => "Mean of the last N values",
    SeasonalMovingAverage => "Mean of the same phase over the last K seasons",
    Ses => "Simple exponential smoothing",
    Holt => "Holt's linear trend",
    HoltDamped => "Holt's damped trend",
    HoltWinters => "Additive Holt-Winters",
    HoltWintersMul => "Multiplicative Holt-Winters, damped (fitted to the logarithms; positive series)",
    SesSeasonalMul => "Exponential smoothing with a multiplicative season and no trend (fitted to the logarithms; positive series)",
    Naive => "The last value",
    SeasonalNaive => "The value one season ago",
});

value_enum!(Criterion {
    Backtest => "The lowest MASE on rolling-origin backtest folds",
    Aicc => "The exponential smoothing model with the lowest AICc; models without a likelihood meet it in the backtest",
});

value_enum!(Fill {
    Interpolate => "Linear interpolation between the neighbours",
    Zero => "Zero (counts and sums: no event, no usage)",
    Previous => "The previous value (gauges)",
    None => "Not filled: the points are used as consecutive steps",
});

value_enum!(report::ReportKind {
    Summary => "Per tenant: totals per meter, quota percent, active alerts, overage cost",
    Detailed => "Day by day, trends, comparison with the previous period, peak times",
    Forecast => "Predictions with intervals, quota exceedance dates, expected overage, accuracy",
    Anomaly => "Incidents with risk scores, fraud suspects, status",
    Executive => "Platform KPIs, growth, revenue, top tenants and features, users, next month",
    Compliance => "What was ingested when, rejects, duplicates, retention and deletions",
});

value_enum!(report::Format {
    Json => "One JSON document",
    Csv => "One CSV file per table (the first at the given path, others beside it)",
    Markdown => "Markdown",
    Html => "One self-contained HTML page with SVG charts",
    Xlsx => "An Excel workbook, one sheet per table",
    Pdf => "A PDF document",
    Parquet => "One Parquet file per table (the first at the given path, others beside it)",
});

value_enum!(ingest::Format {
    Auto => "Detect from the extension, then the content",
    Ndjson => "Newline-delimited JSON events (canonical names or tracker aliases; CloudEvents lines too)",
    Csv => "CSV with a header row of canonical names",
    Cloudevents => "CloudEvents 1.0 JSON: one envelope, an array (batch) or NDJSON of envelopes",
    Parquet => "Parquet with the canonical columns",
});

#[cfg(test)]
mod tests {
    use super::*;

    /// Each enum's clap names are its library names, and parse back through `FromStr`.
    fn round_trips<T: ValueEnum + std::str::FromStr + PartialEq + std::fmt::Debug>() {
        for v in T::value_variants() {
            let name = v.to_possible_value().unwrap().get_name().to_string();
            assert_eq!(name.parse::<T>().ok().as_ref(), Some(v), "{name}");
            assert_eq!(name.to_uppercase().parse::<T>().ok().as_ref(), Some(v));
        }
        assert!("no-such-name".parse::<T>().is_err());
    }

    #[test]
    fn clap_names_are_the_library_names() {
        round_trips::<Granularity>();
        round_trips::<ModelKind>();
        round_trips::<Fill>();
        round_trips::<report::ReportKind>();
        round_trips::<report::Format>();
        round_trips::<ingest::Format>();
    }
}
