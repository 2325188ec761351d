//! `ssl_principal_mapping_rules`, Kafka's `ssl.principal.mapping.rules`.
//!
//! Syntax: a list of rules separated by commas or line breaks (whitespace around them is
//! ignored), each either `DEFAULT` (the DN unchanged) or `RULE:pattern/replacement/`
//! with an optional `L` or `U` after the last `/` (lower- or upper-case the result). A
//! `/` inside the pattern or replacement is written `\/`. Each line is split exactly as
//! Kafka splits the list, with Kafka's own splitting expression, so odd lists (commas
//! inside a pattern, empty entries) read the same as in Kafka.
//!
//! Evaluation: the first rule whose pattern matches the whole DN gives the name: the DN
//! with every match of the pattern replaced (Java's `String.replaceAll`), `$1`…`$n`
//! and `${name}` naming groups, `\` quoting the next character, and a `$n` beyond the
//! pattern's groups kept as text (Kafka escapes those). No matching rule: the client is
//! refused ([`PrincipalError::NoMatchingRule`]), as in Kafka.
//!
//! Patterns are Java regular expressions run by the `regex` crate. The common syntax
//! behaves the same; `\d`, `\w` and `\s` are rewritten to Java's ASCII classes, `\Q…\E`
//! to escaped text, and `\<`, `\>` to the literal characters Java reads. Java-only
//! constructs (lookaround, backreferences, possessive quantifiers) are refused when the
//! rules are read, not at a client's connection.
//!
//! Three deliberate differences from Kafka:
//! - a line break separates rules: Kafka silently skips a rule followed by a line break
//!   and no comma (its `.` stops at line ends), which no operator means;
//! - an empty rule list means `DEFAULT` (Kafka would then refuse every client);
//! - a replacement naming a group that a pattern without groups cannot have is refused
//!   at start-up (Kafka fails each connection the rule matches).

use std::collections::HashMap;
use std::fmt;
use std::sync::LazyLock;

use regex::{Captures, Regex};

use super::PrincipalError;

/// Java's `.`: any character but a line terminator.
const JAVA_DOT: &str = r"[^\n\r\x{85}\x{2028}\x{2029}]";
/// Java's `\s`: ASCII whitespace only.
const JAVA_SPACE: &str = r"[\t\n\x0B\x0C\r ]";

/// Kafka's rule expression, with Java's `.` spelled out. Groups: 1 `DEFAULT`, 2 the
/// pattern, 3 the replacement, 4 the case flag; the last alternative matches anything
/// (an empty or malformed entry).
fn rule_expression() -> String {
    let escaped_or_plain = format!(r"(?:\\{JAVA_DOT}|[^\\/])*");
    format!(
        r"(DEFAULT)|RULE:({escaped_or_plain})/({escaped_or_plain})/([LU]?){JAVA_DOT}*?|{JAVA_DOT}*?"
    )
}

/// Kafka's `RULE_SPLITTER`: one rule, then a comma or the end (of a line: lines are
/// split first, so Java's `$` reduces to the end of the text).
static SPLITTER: LazyLock<Regex> = LazyLock::new(|| {
    compile_static(&format!(
        r"{JAVA_SPACE}*({}){JAVA_SPACE}*(?:,{JAVA_SPACE}*|\z)",
        rule_expression()
    ))
});

/// Kafka's `RULE_PARSER`, anchored at the start as Java's `lookingAt` is.
static PARSER: LazyLock<Regex> =
    LazyLock::new(|| compile_static(&format!("^(?:{})", rule_expression())));

/// Compiles one of the two constant expressions above, which the tests exercise; a
/// failure is a bug in this file, never input.
fn compile_static(expression: &str) -> Regex {
    match Regex::new(expression) {
        Ok(regex) => regex,
        Err(err) => panic!("the built-in rule expression does not compile: {err}"),
    }
}

/// Kafka's `SslPrincipalMapper`: rules tried in order, the first that matches the DN
/// naming the principal.
#[derive(Debug, Clone)]
pub struct PrincipalMapper {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Rewrite(Rewrite),
}

#[derive(Debug, Clone)]
struct Rewrite {
    /// As written, for display.
    pattern: String,
    replacement: String,
    /// The pattern anchored at both ends: Java's `Matcher.matches()`.
    whole: Regex,
    /// The pattern as is, for the replace-every-match pass.
    search: Regex,
    pieces: Vec<Piece>,
    case: Case,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Group(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

impl PrincipalMapper {
    /// Reads a rule list (see the module doc); every syntax error, bad pattern or bad
    /// replacement is reported here, naming the rule.
    pub fn parse(rules: &str) -> Result<PrincipalMapper, PrincipalError> {
        let mut parsed = Vec::new();
        for line in rules.split(['\n', '\r', '\u{85}', '\u{2028}', '\u{2029}']) {
            let trimmed = line.trim_matches(|c: char| c <= ' ');
            for split in SPLITTER.captures_iter(trimmed) {
                let Some(text) = split.get(1) else { continue };
                if let Some(rule) = parse_rule(text.as_str())? {
                    parsed.push(rule);
                }
            }
        }
        if parsed.is_empty() {
            parsed.push(Rule::Default);
        }
        Ok(PrincipalMapper { rules: parsed })
    }

    /// The mapper of the rule `DEFAULT`: every DN is its own name.
    pub fn default_rules() -> PrincipalMapper {
        PrincipalMapper {
            rules: vec![Rule::Default],
        }
    }

    /// The principal name for a certificate subject (as [`super::subject_dn`] prints it).
    pub fn map(&self, dn: &str) -> Result<String, PrincipalError> {
        self.rules
            .iter()
            .find_map(|rule| match rule {
                Rule::Default => Some(dn.to_string()),
                Rule::Rewrite(rewrite) => rewrite.apply(dn),
            })
            .ok_or_else(|| PrincipalError::NoMatchingRule { dn: dn.to_string() })
    }
}

impl Default for PrincipalMapper {
    fn default() -> PrincipalMapper {
        PrincipalMapper::default_rules()
    }
}

/// As Kafka prints a mapper: `[RULE:pattern/replacement/L, DEFAULT]`.
impl fmt::Display for PrincipalMapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match rule {
                Rule::Default => f.write_str("DEFAULT")?,
                Rule::Rewrite(rewrite) => {
                    write!(f, "RULE:{}/{}", rewrite.pattern, rewrite.replacement)?;
                    match rewrite.case {
                        Case::Keep => {}
                        Case::Lower => f.write_str("/L")?,
                        Case::Upper => f.write_str("/U")?,
                    }
                }
            }
        }
        f.write_str("]")
    }
}

/// One entry of the split list: `None` for an empty entry (ignored, as in Kafka).
fn parse_rule(text: &str) -> Result<Option<Rule>, PrincipalError> {
    let invalid = |reason: String| PrincipalError::InvalidRule {
        rule: text.to_string(),
        reason,
    };
    let Some(parsed) = PARSER.captures(text) else {
        return Err(invalid(
            "it is neither DEFAULT nor RULE:pattern/replacement/".into(),
        ));
    };
    let end = parsed.get(0).map_or(0, |m| m.end());
    if end != text.len() {
        return Err(invalid(format!(
            "`{}` is left over; a rule is DEFAULT or RULE:pattern/replacement/ with an optional L or U",
            &text[end..]
        )));
    }
    if parsed.get(1).is_some() {
        return Ok(Some(Rule::Default));
    }
    let (Some(pattern), Some(replacement)) = (parsed.get(2), parsed.get(3)) else {
        return Ok(None);
    };
    let case = match parsed.get(4).map(|m| m.as_str()) {
        Some("L") => Case::Lower,
        Some("U") => Case::Upper,
        _ => Case::Keep,
    };
    let translated = translate_java_regex(pattern.as_str()).map_err(|reason| {
        invalid(format!(
            "the pattern is not a supported regular expression: {reason}"
        ))
    })?;
    let compile = |expression: &str| {
        Regex::new(expression).map_err(|err| {
            invalid(format!(
                "the pattern is not a supported regular expression: {err}"
            ))
        })
    };
    let search = compile(&translated)?;
    let whole = compile(&format!(r"^(?:{translated})\z"))?;
    let pieces = parse_replacement(replacement.as_str(), &search).map_err(invalid)?;
    Ok(Some(Rule::Rewrite(Rewrite {
        pattern: pattern.as_str().to_string(),
        replacement: replacement.as_str().to_string(),
        whole,
        search,
        pieces,
        case,
    })))
}

/// Rewrites the Java constructs the `regex` crate reads differently (see the module doc),
/// and refuses Java's possessive quantifiers (`a*+`), which the crate would read as a
/// repeated repetition with a different meaning.
fn translate_java_regex(java: &str) -> Result<String, String> {
    let mut out = String::with_capacity(java.len() + 16);
    let mut chars = java.chars();
    let mut class_depth = 0usize;
    let mut after_quantifier = false;
    while let Some(c) = chars.next() {
        if c != '\\' {
            if class_depth == 0 && after_quantifier && c == '+' {
                return Err("possessive quantifiers (such as `*+`) are not supported".into());
            }
            after_quantifier = class_depth == 0 && matches!(c, '*' | '+' | '?' | '}');
            match c {
                '[' => class_depth += 1,
                ']' => class_depth = class_depth.saturating_sub(1),
                _ => {}
            }
            out.push(c);
            continue;
        }
        after_quantifier = false;
        let Some(escaped) = chars.next() else {
            // A trailing backslash: let the regex compiler report it.
            out.push('\\');
            break;
        };
        match escaped {
            'd' => out.push_str("[0-9]"),
            'D' => out.push_str("[^0-9]"),
            'w' => out.push_str("[0-9A-Za-z_]"),
            'W' => out.push_str("[^0-9A-Za-z_]"),
            's' => out.push_str(JAVA_SPACE),
            'S' => out.push_str(r"[^\t\n\x0B\x0C\r ]"),
            '<' | '>' => out.push(escaped),
            'Q' => {
                let rest = chars.as_str();
                let (quoted, after) = match rest.find(r"\E") {
                    Some(at) => (&rest[..at], &rest[at + 2..]),
                    None => (rest, ""),
                };
                out.push_str(&regex::escape(quoted));
                chars = after.chars();
            }
            other => {
                out.push('\\');
                out.push(other);
            }
        }
    }
    Ok(out)
}

/// Reads a replacement as Java's `Matcher.appendReplacement` does, after Kafka's
/// escaping of group numbers the pattern does not have.
fn parse_replacement(text: &str, pattern: &Regex) -> Result<Vec<Piece>, String> {
    let groups = pattern.captures_len() - 1;
    let names: HashMap<&str, usize> = pattern
        .capture_names()
        .enumerate()
        .filter_map(|(i, name)| name.map(|name| (name, i)))
        .collect();
    let mut pieces = Vec::new();
    let mut text_piece = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // The rule syntax pairs every backslash with a character, so a rule cannot
            // end its replacement with a lone one; refused all the same.
            '\\' => match chars.next() {
                Some(quoted) => text_piece.push(quoted),
                None => return Err("the replacement ends with a backslash that quotes nothing".into()),
            },
            '$' => match chars.peek().copied() {
                Some('{') => {
                    chars.next();
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("the group name `${{{name}` in the replacement has no closing `}}`")),
                        }
                    }
                    let Some(index) = names.get(name.as_str()) else {
                        return Err(format!("the replacement names the group `{name}`, which the pattern does not have"));
                    };
                    flush(&mut pieces, &mut text_piece);
                    pieces.push(Piece::Group(*index));
                }
                Some(digit @ '0'..='9') => {
                    let mut number = digit as usize - '0' as usize;
                    if number > groups {
                        if groups == 0 {
                            return Err(format!("the replacement refers to group {number}, and the pattern has no groups"));
                        }
                        // Kafka turns a reference beyond the groups into text.
                        text_piece.push('$');
                        continue;
                    }
                    chars.next();
                    // Java takes more digits while the number stays a group.
                    while let Some(next) = chars.peek().and_then(|c| c.to_digit(10)) {
                        let longer = number * 10 + next as usize;
                        if longer > groups {
                            break;
                        }
                        number = longer;
                        chars.next();
                    }
                    flush(&mut pieces, &mut text_piece);
                    pieces.push(Piece::Group(number));
                }
                _ => return Err("a `$` in the replacement must be followed by a group number or {name}; write `\\$` for a dollar sign".into()),
            },
            other => text_piece.push(other),
        }
    }
    flush(&mut pieces, &mut text_piece);
    Ok(pieces)
}

fn flush(pieces: &mut Vec<Piece>, text: &mut String) {
    if !text.is_empty() {
        pieces.push(Piece::Text(std::mem::take(text)));
    }
}

impl Rewrite {
    /// The name this rule gives the DN, or `None` when its pattern does not match the
    /// whole DN.
    fn apply(&self, dn: &str) -> Option<String> {
        if !self.whole.is_match(dn) {
            return None;
        }
        // Java's replaceAll: after a non-empty match the next search starts at its end
        // (and may find an empty match there); after an empty match, one character on.
        let mut out = String::with_capacity(dn.len());
        let mut copied_to = 0;
        let mut search_from = 0;
        while search_from <= dn.len() {
            let Some(found) = self.search.captures_at(dn, search_from) else {
                break;
            };
            let Some(whole) = found.get(0) else { break };
            out.push_str(&dn[copied_to..whole.start()]);
            self.append_replacement(&found, &mut out);
            copied_to = whole.end();
            search_from = if whole.is_empty() {
                whole.end() + dn[whole.end()..].chars().next().map_or(1, char::len_utf8)
            } else {
                whole.end()
            };
        }
        out.push_str(&dn[copied_to..]);
        Some(match self.case {
            Case::Keep => out,
            Case::Lower => out.to_lowercase(),
            Case::Upper => out.to_uppercase(),
        })
    }

    fn append_replacement(&self, found: &Captures<'_>, out: &mut String) {
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                // A group that took no part in the match adds nothing, as in Java.
                Piece::Group(index) => {
                    if let Some(group) = found.get(*index) {
                        out.push_str(group.as_str());
                    }
                }
            }
        }
    }
}
