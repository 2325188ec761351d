//! The stored form of a [`ScramCredential`], version 1.
//!
//! [`ScramCredential::to_record`] writes one JSON object, fields in this order, with no
//! whitespace:
//!
//! | field | JSON type | notes |
//! |---|---|---|
//! | `version` | number | 1 |
//! | `mechanism` | string | `SCRAM-SHA-256` or `SCRAM-SHA-512` |
//! | `salt` | string | standard base64 (RFC 4648, padded) of the salt; not empty |
//! | `iterations` | number | 4096 ..= 16384 ([`ScramMechanism::MIN_ITERATIONS`], [`ScramMechanism::MAX_ITERATIONS`]) |
//! | `stored_key` | string | base64 of `H(HMAC(SaltedPassword, "Client Key"))`: 32 bytes (SHA-256) or 64 (SHA-512) |
//! | `server_key` | string | base64 of `HMAC(SaltedPassword, "Server Key")`, the same length |
//!
//! Readers look at `version` first and refuse one they do not know rather than guess; a
//! newer broker adds versions, never changes this one. Version 1 refuses unknown fields.

use base64::Engine;
use serde::Deserialize;

use super::{BASE64, ScramCredential, ScramError, ScramMechanism};

const RECORD_VERSION_1: u32 = 1;

impl ScramCredential {
    /// The stored form, version 1 (see the module doc).
    pub fn to_record(&self) -> String {
        // Written by hand rather than through serde so that it cannot fail: the mechanism
        // name and base64 need no JSON escaping.
        format!(
            r#"{{"version":{},"mechanism":"{}","salt":"{}","iterations":{},"stored_key":"{}","server_key":"{}"}}"#,
            RECORD_VERSION_1,
            self.mechanism.name(),
            BASE64.encode(&self.salt),
            self.iterations,
            BASE64.encode(&self.stored_key),
            BASE64.encode(&self.server_key),
        )
    }

    /// Parses a stored form written by [`ScramCredential::to_record`] of any version this
    /// broker knows.
    pub fn from_record(record: &str) -> Result<ScramCredential, ScramError> {
        #[derive(Deserialize)]
        struct Versioned {
            version: u64,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RecordV1 {
            #[allow(dead_code)] // read through `Versioned`; listed so it is not unknown
            version: u64,
            mechanism: String,
            salt: String,
            iterations: u32,
            stored_key: String,
            server_key: String,
        }

        let versioned: Versioned = serde_json::from_str(record).map_err(json_error)?;
        if versioned.version != u64::from(RECORD_VERSION_1) {
            return Err(ScramError::UnsupportedRecordVersion {
                version: versioned.version,
            });
        }
        let fields: RecordV1 = serde_json::from_str(record).map_err(json_error)?;
        let mechanism = ScramMechanism::from_name(&fields.mechanism).ok_or_else(|| {
            invalid_record("the mechanism is neither SCRAM-SHA-256 nor SCRAM-SHA-512")
        })?;
        let salt = BASE64
            .decode(&fields.salt)
            .map_err(|_| invalid_record("the salt is not base64"))?;
        if salt.is_empty() {
            return Err(invalid_record("the salt is empty"));
        }
        let iterations = fields.iterations;
        if !(ScramMechanism::MIN_ITERATIONS..=ScramMechanism::MAX_ITERATIONS).contains(&iterations)
        {
            return Err(invalid_record(&format!(
                "{iterations} iterations is outside {}..={}",
                ScramMechanism::MIN_ITERATIONS,
                ScramMechanism::MAX_ITERATIONS
            )));
        }
        let key = |encoded: &str, name: &str| -> Result<Vec<u8>, ScramError> {
            let key = BASE64
                .decode(encoded)
                .map_err(|_| invalid_record(&format!("the {name} is not base64")))?;
            if key.len() != mechanism.key_len() {
                return Err(invalid_record(&format!(
                    "the {name} is {} bytes; {} takes {}",
                    key.len(),
                    mechanism.name(),
                    mechanism.key_len()
                )));
            }
            Ok(key)
        };
        Ok(ScramCredential {
            mechanism,
            salt,
            iterations,
            stored_key: key(&fields.stored_key, "stored key")?,
            server_key: key(&fields.server_key, "server key")?,
        })
    }
}

fn invalid_record(reason: &str) -> ScramError {
    ScramError::InvalidRecord {
        reason: reason.to_string(),
    }
}

/// Where and what kind of JSON error, without serde's text, which can quote values.
fn json_error(error: serde_json::Error) -> ScramError {
    let kind = match error.classify() {
        serde_json::error::Category::Io => "an I/O error",
        serde_json::error::Category::Syntax => "a JSON syntax error",
        serde_json::error::Category::Data => "a missing, unknown or mistyped field",
        serde_json::error::Category::Eof => "the record ends early",
    };
    ScramError::InvalidRecord {
        reason: format!("{kind} at line {}, column {}", error.line(), error.column()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unb64(text: &str) -> Vec<u8> {
        BASE64.decode(text).expect("test base64")
    }

    /// The credential of the RFC 7677 example (user "user", password "pencil").
    fn rfc7677_credential() -> ScramCredential {
        ScramCredential::from_password(
            ScramMechanism::Sha256,
            b"pencil",
            &unb64("W22ZaJ0SNY7soEsUEjb6gQ=="),
            4096,
        )
    }

    /// The RFC 7677 credential in the version 1 record format. A change to the format must
    /// add a version, not break this.
    const RFC7677_RECORD_V1: &str = concat!(
        r#"{"version":1,"mechanism":"SCRAM-SHA-256","salt":"W22ZaJ0SNY7soEsUEjb6gQ==","#,
        r#""iterations":4096,"stored_key":"WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=","#,
        r#""server_key":"wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="}"#
    );

    #[test]
    fn record_v1_is_stable_and_parses() {
        assert_eq!(rfc7677_credential().to_record(), RFC7677_RECORD_V1);
        assert_eq!(
            ScramCredential::from_record(RFC7677_RECORD_V1).expect("v1 parses"),
            rfc7677_credential()
        );
        // Field order and whitespace are not significant to the reader.
        let reordered = r#"{ "server_key": "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "stored_key": "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=", "iterations": 4096,
        "salt": "W22ZaJ0SNY7soEsUEjb6gQ==", "mechanism": "SCRAM-SHA-256", "version": 1 }"#;
        assert_eq!(
            ScramCredential::from_record(reordered).expect("parses"),
            rfc7677_credential()
        );
    }

    #[test]
    fn records_round_trip() {
        for mechanism in [ScramMechanism::Sha256, ScramMechanism::Sha512] {
            for iterations in [
                ScramMechanism::MIN_ITERATIONS,
                ScramMechanism::MAX_ITERATIONS,
            ] {
                let credential = ScramCredential::generate(mechanism, b"pw", iterations);
                let parsed = ScramCredential::from_record(&credential.to_record()).expect("parses");
                assert_eq!(parsed, credential);
                assert!(parsed.verify_password(b"pw"));
            }
        }
    }

    #[test]
    fn invalid_records_are_refused_without_quoting_them() {
        let stored_key = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=";
        let server_key = "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
        let edit = |from: &str, to: &str| RFC7677_RECORD_V1.replacen(from, to, 1);
        let cases = [
            String::new(),
            "not json".into(),
            "[]".into(),
            r#"{"mechanism":"SCRAM-SHA-256"}"#.into(),
            edit(r#""version":1"#, r#""version":"1""#),
            edit(r#""version":1,"#, ""),
            edit("SCRAM-SHA-256", "SCRAM-SHA-1"),
            edit(r#""salt":"W22ZaJ0SNY7soEsUEjb6gQ==""#, r#""salt":"""#),
            edit("W22ZaJ0SNY7soEsUEjb6gQ==", "not base64!"),
            edit("4096", "4095"),
            edit("4096", "16385"),
            edit("4096", "-1"),
            edit(stored_key, "AAAA"),
            edit(server_key, "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2d"),
            edit(
                r#""iterations":4096,"#,
                r#""iterations":4096,"extra":true,"#,
            ),
            edit("4096", &format!(r#""{stored_key}""#)),
            RFC7677_RECORD_V1.replace("SCRAM-SHA-256", "SCRAM-SHA-512"),
        ];
        for record in cases {
            let error = ScramCredential::from_record(&record).expect_err("invalid record");
            assert!(
                matches!(error, ScramError::InvalidRecord { .. }),
                "{record}: {error}"
            );
            let shown = error.to_string();
            assert!(
                !shown.contains(stored_key) && !shown.contains(server_key),
                "{shown}"
            );
        }
        assert!(matches!(
            ScramCredential::from_record(&edit(r#""version":1"#, r#""version":2"#)),
            Err(ScramError::UnsupportedRecordVersion { version: 2 })
        ));
    }
}
