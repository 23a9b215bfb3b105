//! The canonical field names and the tracker aliases accepted for them: as JSON keys
//! ([`canonical`]) and as CSV or Parquet column names ([`aliases`]). Adding an alias means
//! adding it to both (a test checks they agree).

/// Canonical field of a plain (non-CloudEvents) record, with the tracker aliases.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Canon {
    Id,
    Ts,
    Tenant,
    User,
    Meter,
    Value,
    Props,
}

pub(crate) fn canonical(key: &str) -> Option<Canon> {
    Some(match key {
        "id" => Canon::Id,
        "ts" | "timestamp" => Canon::Ts,
        "tenant_id" => Canon::Tenant,
        "user_id" => Canon::User,
        "meter" | "event_type" | "event_name" | "metric_type" => Canon::Meter,
        "value" | "quantity" | "metric_value" => Canon::Value,
        "properties" | "metadata" => Canon::Props,
        _ => return None,
    })
}

/// Column names accepted for a canonical field in CSV and Parquet inputs.
pub(crate) fn aliases(field: &str) -> &'static [&'static str] {
    match field {
        "id" => &["id"],
        "ts" => &["ts", "timestamp"],
        "tenant_id" => &["tenant_id"],
        "user_id" => &["user_id"],
        "meter" => &["meter", "event_type", "event_name", "metric_type"],
        "value" => &["value", "quantity", "metric_value"],
        "properties" => &["properties", "metadata"],
        _ => &[],
    }
}

const FIELDS: [&str; 7] = [
    "id",
    "ts",
    "tenant_id",
    "user_id",
    "meter",
    "value",
    "properties",
];

/// The canonical field a CSV or Parquet column name stands for.
pub(crate) fn field_of(name: &str) -> Option<&'static str> {
    FIELDS.into_iter().find(|f| aliases(f).contains(&name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keys_and_column_names_accept_the_same_aliases() {
        let canon = [
            ("id", Canon::Id),
            ("ts", Canon::Ts),
            ("tenant_id", Canon::Tenant),
            ("user_id", Canon::User),
            ("meter", Canon::Meter),
            ("value", Canon::Value),
            ("properties", Canon::Props),
        ];
        for (field, c) in canon {
            assert!(FIELDS.contains(&field), "{field}");
            for alias in aliases(field) {
                assert_eq!(canonical(alias), Some(c), "{field}: {alias}");
                assert_eq!(field_of(alias), Some(field), "{field}: {alias}");
            }
        }
        for key in [
            "timestamp",
            "event_type",
            "event_name",
            "metric_type",
            "quantity",
            "metric_value",
            "metadata",
        ] {
            let c = canonical(key).expect(key);
            let (field, _) = canon.iter().find(|(_, k)| *k == c).expect(key);
            assert!(aliases(field).contains(&key), "{key}");
        }
    }
}
