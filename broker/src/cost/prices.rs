//! The price table (`cost_price_table`): what each counted unit costs, in US dollars.
//!
//! The defaults are AWS's published list prices for S3 Standard in us-east-1 and for data
//! transfer between availability zones of one region (docs/cost.md cites the pages and
//! the date they were read). A table is TOML, from a file or inline; every key is
//! optional (a missing one keeps its default) and an unknown key or a negative, NaN or
//! infinite price is refused at start-up. `zero = true` starts from an all-zero table
//! (MinIO on your own disks: no request or transfer fees) before applying the other keys.
//!
//! ```toml
//! put_per_1000 = 0.005        # PUT, COPY, POST, LIST (multipart: create, each part, complete)
//! get_per_1000 = 0.0004       # GET, SELECT, HEAD
//! storage_per_gb_month = 0.023
//! read_per_gb = 0.0           # retrieval fee per GB read back (0 for S3 Standard)
//! inter_zone_per_gb = 0.02    # $0.01 out of one zone + $0.01 into the other
//! ```
//!
//! A GB here is 2^30 bytes, as AWS bills it; a month is 730 hours, as AWS prices it.

use serde::Deserialize;

/// Bytes in a billed GB.
pub const GB: f64 = (1u64 << 30) as f64;
/// Milliseconds in a billed month (730 hours).
pub const MONTH_MS: f64 = 730.0 * 3600.0 * 1000.0;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriceTable {
    pub put_per_1000: f64,
    pub get_per_1000: f64,
    pub storage_per_gb_month: f64,
    pub read_per_gb: f64,
    pub inter_zone_per_gb: f64,
}

impl Default for PriceTable {
    /// AWS list prices: S3 Standard, us-east-1; inter-AZ transfer, both directions.
    fn default() -> Self {
        PriceTable {
            put_per_1000: 0.005,
            get_per_1000: 0.0004,
            storage_per_gb_month: 0.023,
            read_per_gb: 0.0,
            inter_zone_per_gb: 0.02,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableFile {
    #[serde(default)]
    zero: bool,
    put_per_1000: Option<f64>,
    get_per_1000: Option<f64>,
    storage_per_gb_month: Option<f64>,
    read_per_gb: Option<f64>,
    inter_zone_per_gb: Option<f64>,
}

impl PriceTable {
    pub const ZERO: PriceTable = PriceTable {
        put_per_1000: 0.0,
        get_per_1000: 0.0,
        storage_per_gb_month: 0.0,
        read_per_gb: 0.0,
        inter_zone_per_gb: 0.0,
    };

    /// The `cost_price_table` setting: empty for the defaults, a path to a TOML file, or
    /// the TOML itself (anything containing `=` or a newline is taken as inline TOML).
    pub fn from_setting(setting: &str) -> Result<PriceTable, String> {
        let setting = setting.trim();
        if setting.is_empty() {
            return Ok(PriceTable::default());
        }
        let text = if setting.contains('=') || setting.contains('\n') {
            setting.to_string()
        } else {
            std::fs::read_to_string(setting)
                .map_err(|e| format!("cannot read the price table file {setting}: {e}"))?
        };
        PriceTable::parse(&text)
    }

    /// Parses a TOML table; see the module doc for the keys.
    pub fn parse(text: &str) -> Result<PriceTable, String> {
        let file: TableFile =
            toml::from_str(text).map_err(|e| format!("not a valid price table: {e}"))?;
        let mut table = if file.zero {
            PriceTable::ZERO
        } else {
            PriceTable::default()
        };
        let fields = [
            ("put_per_1000", file.put_per_1000, &mut table.put_per_1000),
            ("get_per_1000", file.get_per_1000, &mut table.get_per_1000),
            (
                "storage_per_gb_month",
                file.storage_per_gb_month,
                &mut table.storage_per_gb_month,
            ),
            ("read_per_gb", file.read_per_gb, &mut table.read_per_gb),
            (
                "inter_zone_per_gb",
                file.inter_zone_per_gb,
                &mut table.inter_zone_per_gb,
            ),
        ];
        for (name, value, slot) in fields {
            if let Some(value) = value {
                if !value.is_finite() || value < 0.0 {
                    return Err(format!(
                        "price `{name}` = {value} is invalid: prices are finite and at least 0"
                    ));
                }
                *slot = value;
            }
        }
        Ok(table)
    }

    /// Dollars for `count` requests of `class`.
    pub fn requests(&self, class: strata_tiering::store::RequestClass, count: f64) -> f64 {
        use strata_tiering::store::RequestClass;
        let per_1000 = match class {
            RequestClass::Put => self.put_per_1000,
            RequestClass::Get => self.get_per_1000,
        };
        count * per_1000 / 1000.0
    }

    /// Dollars for keeping `bytes` stored for `ms` milliseconds.
    pub fn storage(&self, bytes: f64, ms: f64) -> f64 {
        bytes / GB * self.storage_per_gb_month * ms / MONTH_MS
    }

    pub fn read(&self, bytes: f64) -> f64 {
        bytes / GB * self.read_per_gb
    }

    pub fn inter_zone(&self, bytes: f64) -> f64 {
        bytes / GB * self.inter_zone_per_gb
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_tiering::store::RequestClass;

    #[test]
    fn defaults_partial_tables_and_the_zero_table() {
        assert_eq!(
            PriceTable::from_setting("").expect("ok"),
            PriceTable::default()
        );
        let t = PriceTable::parse("put_per_1000 = 1.0\nget_per_1000 = 0.1").expect("ok");
        assert_eq!(t.put_per_1000, 1.0);
        assert_eq!(t.get_per_1000, 0.1);
        assert_eq!(t.storage_per_gb_month, 0.023);
        let zero = PriceTable::from_setting("zero = true").expect("ok");
        assert_eq!(zero, PriceTable::ZERO);
        let zero_but_puts = PriceTable::parse("zero = true\nput_per_1000 = 2").expect("ok");
        assert_eq!(zero_but_puts.put_per_1000, 2.0);
        assert_eq!(zero_but_puts.get_per_1000, 0.0);
    }

    #[test]
    fn refuses_negative_prices_unknown_keys_and_missing_files() {
        let err = PriceTable::parse("get_per_1000 = -0.1").expect_err("refused");
        assert!(err.contains("get_per_1000"), "{err}");
        let err = PriceTable::parse("nan_price = nan").expect_err("refused");
        assert!(err.contains("nan_price"), "{err}");
        let err = PriceTable::parse("put_per_1000 = nan").expect_err("refused");
        assert!(err.contains("put_per_1000"), "{err}");
        let err = PriceTable::parse("put_per_1000 = \"cheap\"").expect_err("refused");
        assert!(err.contains("not a valid price table"), "{err}");
        let err = PriceTable::from_setting("/nonexistent/prices.toml").expect_err("refused");
        assert!(err.contains("/nonexistent/prices.toml"), "{err}");
    }

    #[test]
    fn from_a_file() {
        let dir = tempfile::tempdir().expect("ok");
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "inter_zone_per_gb = 0.04\n").expect("ok");
        let t = PriceTable::from_setting(path.to_str().expect("ok")).expect("ok");
        assert_eq!(t.inter_zone_per_gb, 0.04);
    }

    #[test]
    fn conversions() {
        let t = PriceTable::default();
        // 1 million PUTs: $5; 1 million GETs: $0.40.
        assert!((t.requests(RequestClass::Put, 1e6) - 5.0).abs() < 1e-9);
        assert!((t.requests(RequestClass::Get, 1e6) - 0.4).abs() < 1e-9);
        // 1 TiB for a month: 1024 × $0.023.
        assert!((t.storage(1024.0 * GB, MONTH_MS) - 23.552).abs() < 1e-9);
        // 1 GiB across zones: $0.02.
        assert!((t.inter_zone(GB) - 0.02).abs() < 1e-12);
        assert_eq!(t.read(GB), 0.0);
    }
}
