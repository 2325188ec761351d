use base64::Engine as _;
use x509_parser::asn1_rs::{Any, Class, Header, Length, Tag};

use super::*;

// Test certificates, made with `openssl req -x509 -newkey ec -pkeyopt
// ec_paramgen_curve:P-256 -nodes -days 36500` and the subject shown. Each test's
// expected string is what Java 17's `X500Principal.getName()` printed for the same file.

/// `openssl req -x509 -subj '/C=US/O=Acme/CN=alice'` (EC P-256).
const SIMPLE: &str = concat!(
    "MIIBVDCB+wIULylX0hWaJmg0SZ1sVYsYKvnFaoMwCgYIKoZIzj0EAwIwLDELMAkGA1UEBhMCVVMxDTALBgNVBAoM",
    "BEFjbWUxDjAMBgNVBAMMBWFsaWNlMCAXDTI2MTIwNjIxMTcyMVoYDzIxMjYxMTEyMjExNzIxWjAsMQswCQYDVQQG",
    "EwJVUzENMAsGA1UECgwEQWNtZTEOMAwGA1UEAwwFYWxpY2UwWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAARjwL4/",
    "1ytNDI/D8jWA0VCgNeTYe1gtLCWcT5iclt88bGjb2F1FFQ1hho8zNw17BTL6AVyjiTP3Skw2rwObuLtVMAoGCCqG",
    "SM49BAMCA0gAMEUCIQChW0wkG/ITLx3+0/0J1GuIOyEkimuakXY8EdGraYAc/AIgeYE/vl07dAC5FCZBiXvVtZ+a",
    "OwAZr/LK1QIoSSHmOTM=",
);

/// `-multivalue-rdn -subj '/DC=com/DC=example/C=US/ST=California/L=San Francisco/O=Acme, Inc./OU=eng+UID=7/CN=alice/emailAddress=alice@example.com'`:
/// DC and UID keywords, a comma, a multi-valued RDN, an attribute without a keyword.
const MULTI_VALUED: &str = concat!(
    "MIICmzCCAkECFA5idWZCUgesO5FlUbWbe6UCHMtHMAoGCCqGSM49BAMCMIHOMRMwEQYKCZImiZPyLGQBGRYDY29t",
    "MRcwFQYKCZImiZPyLGQBGRYHZXhhbXBsZTELMAkGA1UEBhMCVVMxEzARBgNVBAgMCkNhbGlmb3JuaWExFjAUBgNV",
    "BAcMDVNhbiBGcmFuY2lzY28xEzARBgNVBAoMCkFjbWUsIEluYy4xHTAKBgNVBAsMA2VuZzAPBgoJkiaJk/IsZAEB",
    "DAE3MQ4wDAYDVQQDDAVhbGljZTEgMB4GCSqGSIb3DQEJARYRYWxpY2VAZXhhbXBsZS5jb20wIBcNMjYxMjA2MjEx",
    "MjQ2WhgPMjEyNjExMTIyMTEyNDZaMIHOMRMwEQYKCZImiZPyLGQBGRYDY29tMRcwFQYKCZImiZPyLGQBGRYHZXhh",
    "bXBsZTELMAkGA1UEBhMCVVMxEzARBgNVBAgMCkNhbGlmb3JuaWExFjAUBgNVBAcMDVNhbiBGcmFuY2lzY28xEzAR",
    "BgNVBAoMCkFjbWUsIEluYy4xHTAKBgNVBAsMA2VuZzAPBgoJkiaJk/IsZAEBDAE3MQ4wDAYDVQQDDAVhbGljZTEg",
    "MB4GCSqGSIb3DQEJARYRYWxpY2VAZXhhbXBsZS5jb20wWTATBgcqhkjOPQIBBggqhkjOPQMBBwNCAATaxvayPKl0",
    "QbfFoGuZcXVOXBSu2pWLF7eY/BAkuJPfC5eKJSC6IaTFVzZZfFzOFwwIa0J6dIDUTGij4VDn+2v2MAoGCCqGSM49",
    "BAMCA0gAMEUCIQC+jBoQ8A0FmEujZYxtS8Qx0Iak85d1+ChOPzKuMukm4wIgZvBCBiSbyNL1P+GHTlJ/rcl0mDtu",
    "van06R0g/7NdTGc=",
);

/// `-subj '/O=a\+b=c<d>e;f"g\\h#i/CN=#hash lead/OU= lead and trail /street=1 Main St./serialNumber=42'`:
/// every special character, a leading `#`, leading and trailing spaces, STREET, and a
/// PrintableString without a keyword.
const ESCAPES: &str = concat!(
    "MIIB2TCCAX8CFARdxpLeOCw+FiR0Fvd6bOBqWuLHMAoGCCqGSM49BAMCMG4xGjAYBgNVBAoMEWErYj1jPGQ+ZTtm",
    "ImdcaCNpMRMwEQYDVQQDDAojaGFzaCBsZWFkMRkwFwYDVQQLDBAgbGVhZCBhbmQgdHJhaWwgMRMwEQYDVQQJDAox",
    "IE1haW4gU3QuMQswCQYDVQQFEwI0MjAgFw0yNjEyMDYyMTEyNDZaGA8yMTI2MTExMjIxMTI0NlowbjEaMBgGA1UE",
    "CgwRYStiPWM8ZD5lO2YiZ1xoI2kxEzARBgNVBAMMCiNoYXNoIGxlYWQxGTAXBgNVBAsMECBsZWFkIGFuZCB0cmFp",
    "bCAxEzARBgNVBAkMCjEgTWFpbiBTdC4xCzAJBgNVBAUTAjQyMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEfPuw",
    "azsYxYhmndyK9+Xx6OkipipuRVYTgSkAj0ncuDh8C5VYr6zutJo6I30L8WsDwIhbUQs5fQnoSHVUKcR4TzAKBggq",
    "hkjOPQQDAgNIADBFAiATYLbEXkKX88bjaLnusinLSsRXhK/5AxUnqukcKhWcdAIhAK4E0C9Nciu3/xGpHjbwXC1p",
    "/ip2KJ6SmsDuF7Sx95RM",
);

/// `string_mask=pkix`, `-utf8 -subj '/C=FR/CN=José_1'`: the CN is a BMPString.
const BMP_STRING: &str = concat!(
    "MIIBQjCB6wIUGQONvPmJ66g0Yjo1ssOze3ByvpwwCgYIKoZIzj0EAwIwJDELMAkGA1UEBhMCRlIxFTATBgNVBAMe",
    "DABKAG8AcwDpAF8AMTAgFw0yNjEyMDYyMTEyNDZaGA8yMTI2MTExMjIxMTI0NlowJDELMAkGA1UEBhMCRlIxFTAT",
    "BgNVBAMeDABKAG8AcwDpAF8AMTBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABKZ4aT4MkieCsY1cYnXbzjMBZpVv",
    "PUGIWX6HBUJdIrXKUaKhCPrAO0gBj3lE1g5NPudC//LZmPyvhoxOLR92mlYwCgYIKoZIzj0EAwIDRgAwQwIgGr8M",
    "3T7V+G1DrEQvb34vLW6DxmgK1zgZCOLPY8nw4+MCH1emri3tzbtMwGvQ67VQb1ymeRrynewq7DpATN2fLrQ=",
);

fn der(base64: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(base64)
        .expect("a test certificate")
}

#[test]
fn subject_prints_most_specific_first() {
    assert_eq!(
        subject_dn(&der(SIMPLE)).expect("parses"),
        "CN=alice,O=Acme,C=US"
    );
}

#[test]
fn subject_prints_keywords_multi_valued_rdns_and_oids_as_java_does() {
    assert_eq!(
        subject_dn(&der(MULTI_VALUED)).expect("parses"),
        "1.2.840.113549.1.9.1=#1611616c696365406578616d706c652e636f6d,CN=alice,OU=eng+UID=7,\
         O=Acme\\, Inc.,L=San Francisco,ST=California,C=US,DC=example,DC=com"
    );
}

#[test]
fn subject_escapes_as_java_does() {
    assert_eq!(
        subject_dn(&der(ESCAPES)).expect("parses"),
        "2.5.4.5=#13023432,STREET=1 Main St.,OU=\\ lead and trail\\ ,CN=\\#hash lead,\
         O=a\\+b\\=c\\<d\\>e\\;f\\\"g\\\\h\\#i"
    );
}

#[test]
fn subject_reads_a_bmp_string_as_utf8_like_java() {
    // Java decodes the UTF-16 bytes as UTF-8: NULs become \00, a lone é byte U+FFFD.
    assert_eq!(
        subject_dn(&der(BMP_STRING)).expect("parses"),
        "CN=\\00J\\00o\\00s\\00\u{FFFD}\\00_\\001,C=FR"
    );
}

#[test]
fn a_damaged_certificate_is_an_error() {
    let mut bytes = der(SIMPLE);
    bytes.truncate(100);
    let err = subject_dn(&bytes).expect_err("truncated");
    assert!(
        err.to_string()
            .starts_with("the client certificate cannot be parsed: "),
        "{err}"
    );
    assert!(subject_dn(b"").is_err());
    assert!(subject_dn(b"-----BEGIN CERTIFICATE-----").is_err());
}

#[test]
fn values_escape_nul_and_surrounding_blanks() {
    assert_eq!(escape("a\0b"), "a\\00b");
    assert_eq!(escape(" \ra b\r "), "\\ \\\ra b\\\r\\ ");
    assert_eq!(escape("  "), "\\ \\ ");
    assert_eq!(escape(""), "");
    assert_eq!(escape("x\\"), "x\\\\");
    assert_eq!(escape("é_*@"), "é_*@");
}

#[test]
fn hex_values_are_reencoded_der() {
    let long = vec![0x41u8; 200];
    let value = Any::new(
        Header::new(
            Class::Universal,
            false,
            Tag::OctetString,
            Length::Definite(200),
        ),
        &long,
    );
    let encoded = super::der(&value);
    assert_eq!(&encoded[..3], &[0x04, 0x81, 200]);
    assert_eq!(encoded.len(), 203);
    let tagged = Any::new(
        Header::new(Class::ContextSpecific, true, Tag(200), Length::Definite(1)),
        &[7],
    );
    assert_eq!(super::der(&tagged), [0xbf, 0x81, 0x48, 0x01, 0x07]);
    assert_eq!(hex(&[0x00, 0xab, 0x10]), "00ab10");
}

const KAFKA_DOC_RULES: &str = "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,\
    RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,DEFAULT";

fn map(rules: &str, dn: &str) -> String {
    PrincipalMapper::parse(rules)
        .expect("valid rules")
        .map(dn)
        .expect("a rule applies")
}

#[test]
fn kafka_documentation_rules_map_as_in_kafka() {
    let mapper = PrincipalMapper::parse(KAFKA_DOC_RULES).expect("valid rules");
    let name = |dn: &str| mapper.map(dn).expect("DEFAULT applies");
    assert_eq!(
        name("CN=kafka-client,OU=ServiceUsers,O=Unknown,L=Unknown,ST=Unknown,C=Unknown"),
        "kafka-client"
    );
    assert_eq!(
        name("CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US"),
        "duke@sme"
    );
    assert_eq!(name("CN=alice,O=Acme,C=US"), "CN=alice,O=Acme,C=US");
    assert_eq!(
        mapper.to_string(),
        "[RULE:^CN=(.*?),OU=ServiceUsers.*$/$1, RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L, DEFAULT]"
    );
}

#[test]
fn kafka_mapper_test_cases() {
    let rules = [
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L",
        "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L",
        "RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U",
        "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U",
        "DEFAULT",
    ]
    .join(", ");
    let mapper = PrincipalMapper::parse(&rules).expect("valid rules");
    let cases = [
        ("CN=Duke,OU=ServiceUsers,O=Org,C=US", "duke"),
        ("CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US", "duke@sme"),
        ("cn=duke,ou=sme,dc=mycp,dc=com", "DUKE@SME"),
        ("cN=duke,OU=JavaSoft,O=Sun Microsystems", "DUKE"),
        (
            "OU=JavaSoft,O=Sun Microsystems,C=US",
            "OU=JavaSoft,O=Sun Microsystems,C=US",
        ),
    ];
    for (dn, want) in cases {
        assert_eq!(mapper.map(dn).expect("a rule applies"), want, "{dn}");
    }
}

#[test]
fn kafka_valid_rules_parse() {
    for rules in [
        "DEFAULT",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, DEFAULT",
        "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/",
        "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L",
        "RULE:^cn=(.?),ou=(.?),dc=(.?),dc=(.?)$/$1@$2/U",
        "RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/",
        "RULE:^CN=([^,DEFAULT,]+)(,.*|$)/$1/",
    ] {
        assert!(PrincipalMapper::parse(rules).is_ok(), "{rules}");
    }
}

#[test]
fn kafka_invalid_rules_are_refused() {
    for rules in [
        "default",
        "DEFAUL",
        "DEFAULT/L",
        "DEFAULT/U",
        "RULE:CN=(.*?),OU=ServiceUsers.*/$1",
        "rule:^CN=(.*?),OU=ServiceUsers.*$/$1/",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/L",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/U",
        "RULE:^CN=(.*?),OU=ServiceUsers.*$/LU",
    ] {
        let err = PrincipalMapper::parse(rules).expect_err(rules);
        assert!(
            matches!(err, PrincipalError::InvalidRule { .. }),
            "{rules}: {err}"
        );
    }
    let err = PrincipalMapper::parse("RULE:^CN=(.*?)$/$1/L/U").expect_err("left over");
    assert_eq!(
        err.to_string(),
        "ssl_principal_mapping_rules: the rule \"RULE:^CN=(.*?)$/$1/L/U\" is not valid: `/U` is left over; \
         a rule is DEFAULT or RULE:pattern/replacement/ with an optional L or U"
    );
}

#[test]
fn rule_lists_split_as_in_kafka() {
    let cases = [
        ("DEFAULT", "[DEFAULT]"),
        ("RULE://", "[RULE:/]"),
        ("RULE:/.*/", "[RULE:/.*]"),
        ("RULE:/.*/L", "[RULE:/.*/L]"),
        ("RULE://,DEFAULT", "[RULE:/, DEFAULT]"),
        ("  RULE:// ,  DEFAULT  ", "[RULE:/, DEFAULT]"),
        (
            "  RULE:   /     / ,  DEFAULT  ",
            "[RULE:   /     , DEFAULT]",
        ),
        (
            "  RULE:  /     /U   ,DEFAULT  ",
            "[RULE:  /     /U, DEFAULT]",
        ),
        (
            "  RULE:([A-Z]*)/$1/U   ,RULE:([a-z]+)/$1/,   DEFAULT  ",
            "[RULE:([A-Z]*)/$1/U, RULE:([a-z]+)/$1, DEFAULT]",
        ),
        (",,RULE://,,,DEFAULT,,", "[RULE:/, DEFAULT]"),
        (
            ",  , RULE: /   /    ,,,   DEFAULT, ,   ",
            "[RULE: /   , DEFAULT]",
        ),
        (
            "     ,  , RULE:   /  /U    ,,  ,DEFAULT, ,",
            "[RULE:   /  /U, DEFAULT]",
        ),
        (r"RULE:\/\\\(\)\n\t/\/\//", r"[RULE:\/\\\(\)\n\t/\/\/]"),
        (
            r"RULE:\**\/+/*/L,RULE:\/*\**/**/",
            r"[RULE:\**\/+/*/L, RULE:\/*\**/**]",
        ),
        (
            r"RULE:,RULE:,/,RULE:,\//U,RULE:,/RULE:,/,RULE:,RULE:,/L,RULE:,/L,RULE:, DEFAULT, /DEFAULT/,DEFAULT",
            r"[RULE:,RULE:,/,RULE:,\//U, RULE:,/RULE:,, RULE:,RULE:,/L,RULE:,/L, RULE:, DEFAULT, /DEFAULT, DEFAULT]",
        ),
    ];
    for (rules, want) in cases {
        let mapper = PrincipalMapper::parse(rules).expect(rules);
        assert_eq!(mapper.to_string(), want, "{rules}");
    }
}

#[test]
fn empty_rule_lists_mean_default() {
    for rules in ["", "   ", ",   , , ,      , , ,   ", "\n\n"] {
        let mapper = PrincipalMapper::parse(rules).expect("empty is fine");
        assert_eq!(mapper.to_string(), "[DEFAULT]");
        assert_eq!(mapper.map("CN=a").expect("default"), "CN=a");
    }
    assert_eq!(
        PrincipalMapper::default().map("CN=b,O=c").expect("default"),
        "CN=b,O=c"
    );
}

#[test]
fn line_breaks_separate_rules() {
    let rules = "RULE:^CN=([^,]*),OU=ops.*$/$1/U\nRULE:^CN=([^,]*).*$/$1/\r\nDEFAULT";
    let mapper = PrincipalMapper::parse(rules).expect("valid rules");
    assert_eq!(
        mapper.to_string(),
        "[RULE:^CN=([^,]*),OU=ops.*$/$1/U, RULE:^CN=([^,]*).*$/$1, DEFAULT]"
    );
    assert_eq!(mapper.map("CN=ann,OU=ops,O=x").expect("first rule"), "ANN");
    assert_eq!(mapper.map("CN=bob,O=x").expect("second rule"), "bob");
    // Kafka's documented layout: a comma and a line break.
    let documented = "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/,\n  RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L,\n  DEFAULT";
    assert_eq!(
        map(documented, "CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US"),
        "duke@sme"
    );
}

#[test]
fn no_matching_rule_refuses_the_client() {
    let mapper =
        PrincipalMapper::parse("RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/").expect("valid rules");
    let err = mapper.map("CN=alice,O=Acme").expect_err("no rule applies");
    assert_eq!(
        err.to_string(),
        "ssl_principal_mapping_rules: no rule applies to the client certificate subject \"CN=alice,O=Acme\""
    );
}

#[test]
fn escaped_commas_in_names_survive() {
    let rules = r"RULE:^CN=((\\, *|\w)+)(,.*|$)/$1/,DEFAULT";
    assert_eq!(
        map(rules, r"CN=Tkac\, Adam,OU=ITZ,DC=geodis,DC=cz"),
        r"Tkac\, Adam"
    );
}

#[test]
fn patterns_must_match_the_whole_dn() {
    // Unanchored, the pattern still has to cover the DN, as Java's matches() does.
    let mapper = PrincipalMapper::parse("RULE:CN=([a-z]+)/$1/").expect("valid rules");
    assert_eq!(mapper.map("CN=alice").expect("whole match"), "alice");
    assert!(mapper.map("CN=alice,O=Acme").is_err());
}

#[test]
fn replacements_follow_java_replace_all() {
    // Each expectation is what Java 17 printed for dn.replaceAll(pattern, replacement).
    let cases = [
        ("RULE:.*/X/", "abc", "XX"),
        ("RULE:a|ab/X/", "ab", "Xb"),
        ("RULE:(a)(b)?/[$2]/", "a", "[]"),
        ("RULE:^(.*)$/$12/", "ab", "ab2"),
        ("RULE:^(a)(b)$/$01/", "ab", "a"),
        ("RULE:^(a)(b)$/$2$1$0/", "ab", "baab"),
        ("RULE:^(a)(b)$/$5-$1/", "ab", "$5-a"),
        (r"RULE:^(a)(b)$/\$1\\\q/", "ab", r"$1\q"),
        ("RULE:^(?<first>a)(b)$/${first}!/U", "ab", "A!"),
        ("RULE:^CN=(.*)$/$0/L", "CN=ÀB", "cn=àb"),
        (r"RULE:^(a)$/x\\/", "a", r"x\"),
    ];
    for (rules, dn, want) in cases {
        assert_eq!(map(rules, dn), want, "{rules} on {dn}");
    }
}

#[test]
fn bad_replacements_are_refused_at_start_up() {
    let cases = [
        (
            "RULE:^CN=alice$/$1/",
            "the replacement refers to group 1, and the pattern has no groups",
        ),
        (
            "RULE:^(a)$/$/",
            "a `$` in the replacement must be followed by a group number or {name}; write `\\$` for a dollar sign",
        ),
        (
            "RULE:^(a)$/$x/",
            "a `$` in the replacement must be followed by a group number or {name}; write `\\$` for a dollar sign",
        ),
        (
            "RULE:^(a)$/${b}/",
            "the replacement names the group `b`, which the pattern does not have",
        ),
        (
            "RULE:^(?<b>a)$/${b/",
            "the group name `${b` in the replacement has no closing `}`",
        ),
    ];
    for (rules, reason) in cases {
        match PrincipalMapper::parse(rules) {
            Err(PrincipalError::InvalidRule { reason: got, .. }) => {
                assert_eq!(got, reason, "{rules}")
            }
            other => panic!("{rules}: {other:?}"),
        }
    }
}

#[test]
fn patterns_read_as_java_reads_them() {
    // Java's \w, \d and \s are ASCII.
    let word = PrincipalMapper::parse(r"RULE:^CN=(\w+)$/$1/,RULE:^CN=(.+)$/other:$1/")
        .expect("valid rules");
    assert_eq!(word.map("CN=jose_1").expect("ascii"), "jose_1");
    assert_eq!(word.map("CN=José").expect("not \\w"), "other:José");
    assert_eq!(map(r"RULE:^CN=(\d+)\s(\S+)$/$2$1/", "CN=42 x"), "x42");
    assert!(
        PrincipalMapper::parse(r"RULE:^(\d)$/$1/")
            .expect("valid")
            .map("٣")
            .is_err()
    );
    // \Q…\E quotes, and \< \> are literal characters in Java.
    assert_eq!(map(r"RULE:^\Q(a.b)\E(.*)$/$1/", "(a.b)c"), "c");
    assert!(
        PrincipalMapper::parse(r"RULE:^\Q(a.b)\E$/x/")
            .expect("valid")
            .map("(axb)")
            .is_err()
    );
    assert_eq!(map(r"RULE:^CN=\<(.*)\>$/$1/", "CN=<x>"), "x");
    assert_eq!(map(r"RULE:^CN=[\w.]+,O=(.*)$/$1/", "CN=a.b,O=Acme"), "Acme");
    // A `+` inside a class or after an escaped quantifier character is no quantifier.
    assert_eq!(map(r"RULE:^CN=([*+]+)\++$/$1/", "CN=*+*++"), "*+*+");
}

#[test]
fn java_only_constructs_are_refused() {
    for rules in [
        r"RULE:^(?=CN)(.*)$/$1/",
        r"RULE:^(a)\1$/$1/",
        r"RULE:^a*+$/x/",
        r"RULE:^a{2}+$/x/",
        r"RULE:^(?>a)$/x/",
        r"RULE:^(a$/x/",
    ] {
        match PrincipalMapper::parse(rules) {
            Err(PrincipalError::InvalidRule { reason, .. }) => {
                assert!(
                    reason.starts_with("the pattern is not a supported regular expression"),
                    "{rules}: {reason}"
                )
            }
            other => panic!("{rules}: {other:?}"),
        }
    }
}

#[test]
fn certificate_names_flow_through_the_mapper() {
    let dn = subject_dn(&der(MULTI_VALUED)).expect("parses");
    let rules = r"RULE:^.*,CN=([^,]+),OU=([^,+]+)\+UID=(\d+),.*$/$1.$2.$3/U";
    assert_eq!(map(rules, &dn), "ALICE.ENG.7");
}
