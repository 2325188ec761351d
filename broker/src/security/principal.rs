//! The principal of a TLS client: its certificate's subject, printed as Kafka prints it,
//! then rewritten by `ssl_principal_mapping_rules`.
//!
//! Kafka takes the subject from Java's `X500Principal.getName()`, so ACLs and super users
//! written for a Kafka cluster name principals such as
//! `User:CN=alice,OU=eng+UID=7,O=Acme\, Inc.,C=US`. [`subject_dn`] prints the same
//! string byte for byte, Java's quirks included (see its doc); a principal that printed
//! differently would silently match none of the operator's ACLs.
//!
//! [`PrincipalMapper`] is Kafka's `SslPrincipalMapper`: the same rule syntax, the same
//! splitting of the rule list, the same first-match-wins evaluation.

mod mapping;
#[cfg(test)]
mod tests;

pub use mapping::PrincipalMapper;

use std::fmt::Write as _;

use x509_parser::asn1_rs::{Any, Class, Tag};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// Why a certificate gave no name, or a mapping rule was refused or matched nothing.
#[derive(Debug, thiserror::Error)]
pub enum PrincipalError {
    #[error("the client certificate cannot be parsed: {0}")]
    Certificate(String),
    #[error("ssl_principal_mapping_rules: the rule {rule:?} is not valid: {reason}")]
    InvalidRule { rule: String, reason: String },
    #[error(
        "ssl_principal_mapping_rules: no rule applies to the client certificate subject {dn:?}"
    )]
    NoMatchingRule { dn: String },
}

/// Attribute keywords Java prints in RFC 2253 form; any other attribute prints as its
/// dotted OID with a `#`-hex value (so emailAddress is
/// `1.2.840.113549.1.9.1=#16…`, as in Kafka).
const KEYWORDS: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.6", "C"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
];

/// The certificate's subject as Java's `X500Principal.getName()` prints it (RFC 2253
/// form), which is the name Kafka gives an mTLS client before the mapping rules:
/// - RDNs in reverse order of the certificate's sequence (most specific first), joined
///   by `,`; the attributes of a multi-valued RDN in encoded order, joined by `+`;
/// - `KEYWORD=value` for CN, C, L, ST, O, OU, STREET, DC and UID; every other attribute
///   as `dotted.oid=#hex` of its DER encoding (lower-case hex), and so is a known
///   attribute whose value is not a PrintableString, T61String, IA5String,
///   GeneralString, BMPString or UTF8String;
/// - the value's content bytes read as UTF-8 whatever its string type (invalid bytes
///   become U+FFFD, so a BMPString prints oddly, exactly as in Java);
/// - `,` `=` `+` `<` `>` `#` `;` `"` `\` escaped with `\` wherever they occur (Java
///   escapes `=` and every `#`, more than RFC 2253 asks), NUL as `\00`, and leading and
///   trailing spaces and carriage returns escaped with `\`.
pub fn subject_dn(cert_der: &[u8]) -> Result<String, PrincipalError> {
    let (_, cert) = X509Certificate::from_der(cert_der)
        .map_err(|err| PrincipalError::Certificate(err.to_string()))?;
    Ok(rfc2253(cert.subject()))
}

fn rfc2253(name: &X509Name<'_>) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| rdn.iter().map(attribute).collect::<Vec<_>>().join("+"))
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn attribute(attribute: &AttributeTypeAndValue<'_>) -> String {
    let oid = attribute.attr_type().to_id_string();
    let value = attribute.attr_value();
    match KEYWORDS.iter().find(|(known, _)| *known == oid) {
        Some((_, keyword)) if is_string(value) => {
            format!("{keyword}={}", escape(&String::from_utf8_lossy(value.data)))
        }
        Some((_, keyword)) => format!("{keyword}=#{}", hex(&der(value))),
        None => format!("{oid}=#{}", hex(&der(value))),
    }
}

/// The value types Java prints as text (its `AVA.isDerString`, non-canonical).
fn is_string(value: &Any<'_>) -> bool {
    value.header.class() == Class::Universal
        && value.header.is_primitive()
        && matches!(
            value.header.tag(),
            Tag::PrintableString
                | Tag::T61String
                | Tag::Ia5String
                | Tag::GeneralString
                | Tag::BmpString
                | Tag::Utf8String
        )
}

/// Java's RFC 2253 value escaping (`AVA.toRFC2253String`).
fn escape(value: &str) -> String {
    const SPECIALS: &str = ",=+<>#;\"\\";
    let mut escaped: Vec<char> = Vec::with_capacity(value.len());
    for c in value.chars() {
        if SPECIALS.contains(c) {
            escaped.extend(['\\', c]);
        } else if c == '\0' {
            escaped.extend(['\\', '0', '0']);
        } else {
            escaped.push(c);
        }
    }
    // Leading and trailing blanks are found in the escaped text, as Java does.
    let blank = |c: &char| *c == ' ' || *c == '\r';
    let lead = escaped.iter().take_while(|c| blank(c)).count();
    let trail = escaped.len() - escaped.iter().rev().take_while(|c| blank(c)).count();
    let mut out = String::with_capacity(escaped.len() + 4);
    for (i, c) in escaped.into_iter().enumerate() {
        if i < lead || i >= trail {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The DER encoding of a value: identifier, definite minimal length, content (Java
/// re-encodes the value the same way for the `#hex` form).
fn der(value: &Any<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.data.len() + 6);
    let class = (value.header.class() as u8) << 6;
    let constructed = if value.header.is_constructed() {
        0x20
    } else {
        0
    };
    let tag = value.header.tag().0;
    if tag < 31 {
        out.push(class | constructed | tag as u8);
    } else {
        out.push(class | constructed | 0x1f);
        let mut groups = Vec::new();
        let mut rest = tag;
        loop {
            groups.push((rest & 0x7f) as u8);
            rest >>= 7;
            if rest == 0 {
                break;
            }
        }
        let last = groups.len() - 1;
        for (i, group) in groups.into_iter().rev().enumerate() {
            out.push(if i < last { group | 0x80 } else { group });
        }
    }
    let len = value.data.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let first = bytes
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(bytes.len() - 1);
        out.push(0x80 | (bytes.len() - first) as u8);
        out.extend_from_slice(&bytes[first..]);
    }
    out.extend_from_slice(value.data);
    out
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}
