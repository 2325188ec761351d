//! SASL/PLAIN (RFC 4616): the one message a client sends, parsed. The password is checked
//! elsewhere, against the user's stored SCRAM credential
//! ([`super::scram::ScramCredential::verify_password`]): the broker keeps no passwords.
//!
//! ```text
//! message = [authzid] NUL authcid NUL passwd
//! ```
//!
//! Rules, Kafka's where RFC 4616 leaves a choice:
//! - exactly two NULs, so none inside a field;
//! - the user name (authcid) is non-empty UTF-8 of at most 255 bytes;
//! - the password is non-empty, at most 255 bytes, kept as bytes (it is only ever hashed);
//! - the authorization id is empty or equal to the user name: a user acts only as itself.
//!
//! Errors never carry the password, nor anything from which its length could be read.

use std::fmt;

/// The longest user name or password accepted. RFC 4616 requires servers to accept up to
/// 255 bytes per field; going no further bounds the PBKDF2 input a client controls.
pub const MAX_FIELD_LEN: usize = 255;

/// A parsed SASL/PLAIN message.
#[derive(Clone, PartialEq, Eq)]
pub struct PlainCredentials {
    pub username: String,
    pub password: Vec<u8>,
}

/// Shows the user name, never the password.
impl fmt::Debug for PlainCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlainError {
    #[error(
        "a SASL/PLAIN message is authzid NUL user NUL password, with exactly two NULs; this \
         one has {found}"
    )]
    Separators { found: usize },
    #[error("the SASL/PLAIN user name is empty")]
    EmptyUsername,
    #[error("the SASL/PLAIN user name is longer than {MAX_FIELD_LEN} bytes")]
    UsernameTooLong,
    #[error("the SASL/PLAIN user name is not UTF-8")]
    UsernameNotUtf8,
    #[error("the SASL/PLAIN password is empty")]
    EmptyPassword,
    #[error("the SASL/PLAIN password is longer than {MAX_FIELD_LEN} bytes")]
    PasswordTooLong,
    #[error(
        "the SASL/PLAIN authorization id differs from the user name; Kafka lets a user act \
         only as itself"
    )]
    AuthzidMismatch,
}

/// Parses `[authzid] NUL authcid NUL passwd`.
pub fn parse(message: &[u8]) -> Result<PlainCredentials, PlainError> {
    let separators = message.iter().filter(|&&byte| byte == 0).count();
    let mut fields = message.splitn(3, |&byte| byte == 0);
    let (Some(authzid), Some(username), Some(password), 2) =
        (fields.next(), fields.next(), fields.next(), separators)
    else {
        return Err(PlainError::Separators { found: separators });
    };
    if username.is_empty() {
        return Err(PlainError::EmptyUsername);
    }
    if username.len() > MAX_FIELD_LEN {
        return Err(PlainError::UsernameTooLong);
    }
    let username = std::str::from_utf8(username).map_err(|_| PlainError::UsernameNotUtf8)?;
    if password.is_empty() {
        return Err(PlainError::EmptyPassword);
    }
    if password.len() > MAX_FIELD_LEN {
        return Err(PlainError::PasswordTooLong);
    }
    if !authzid.is_empty() && authzid != username.as_bytes() {
        return Err(PlainError::AuthzidMismatch);
    }
    Ok(PlainCredentials {
        username: username.to_string(),
        password: password.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(message: &[u8]) -> PlainCredentials {
        parse(message).expect("a valid SASL/PLAIN message")
    }

    #[test]
    fn without_authzid() {
        let credentials = parsed(b"\0alice\0secret");
        assert_eq!(credentials.username, "alice");
        assert_eq!(credentials.password, b"secret");
    }

    #[test]
    fn authzid_must_be_empty_or_the_user() {
        assert_eq!(parsed(b"alice\0alice\0secret").username, "alice");
        assert_eq!(
            parse(b"admin\0alice\0secret"),
            Err(PlainError::AuthzidMismatch)
        );
        assert_eq!(
            parse(b"alic\0alice\0secret"),
            Err(PlainError::AuthzidMismatch)
        );
    }

    #[test]
    fn exactly_two_nuls() {
        for (message, found) in [
            (&b""[..], 0),
            (b"alice", 0),
            (b"alice\0secret", 1),
            (b"\0alice\0sec\0ret", 3),
            (b"\0\0alice\0secret", 3),
            (b"\0alice\0secret\0", 3),
        ] {
            assert_eq!(
                parse(message),
                Err(PlainError::Separators { found }),
                "{message:?}"
            );
        }
    }

    #[test]
    fn user_name_and_password_are_not_empty() {
        assert_eq!(parse(b"\0\0secret"), Err(PlainError::EmptyUsername));
        assert_eq!(parse(b"\0alice\0"), Err(PlainError::EmptyPassword));
        assert_eq!(parse(b"\0\0"), Err(PlainError::EmptyUsername));
    }

    #[test]
    fn fields_of_up_to_255_bytes() {
        let longest = "u".repeat(MAX_FIELD_LEN);
        let message = [b"\0", longest.as_bytes(), b"\0", longest.as_bytes()].concat();
        let credentials = parsed(&message);
        assert_eq!(credentials.username, longest);
        assert_eq!(credentials.password.len(), MAX_FIELD_LEN);

        let too_long = "u".repeat(MAX_FIELD_LEN + 1);
        let message = [b"\0", too_long.as_bytes(), b"\0pw"].concat();
        assert_eq!(parse(&message), Err(PlainError::UsernameTooLong));
        let message = [b"\0alice\0", too_long.as_bytes()].concat();
        assert_eq!(parse(&message), Err(PlainError::PasswordTooLong));
    }

    #[test]
    fn the_user_name_is_utf8_and_the_password_is_bytes() {
        assert_eq!(parsed("\0zoë\0pw".as_bytes()).username, "zoë");
        assert_eq!(parse(b"\0al\xffice\0pw"), Err(PlainError::UsernameNotUtf8));
        assert_eq!(parsed(b"\0alice\0\xff\xfe").password, b"\xff\xfe");
    }

    #[test]
    fn the_password_is_in_no_error_or_debug_output() {
        let password = "hunter2-and-more";
        let messages = [
            format!("admin\0alice\0{password}"),
            format!("\0\0{password}"),
            format!("\0alice\0{password}\0"),
            format!("\0{}\0{password}", "u".repeat(300)),
        ];
        for message in messages {
            let error = parse(message.as_bytes()).expect_err("refused");
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains(password), "{shown}");
            assert!(!shown.contains(&password.len().to_string()), "{shown}");
        }
        let shown = format!("{:?}", parsed(format!("\0alice\0{password}").as_bytes()));
        assert_eq!(shown, r#"PlainCredentials { username: "alice", .. }"#);
    }
}
