//! The Kafka listeners: `listeners`, `advertised_listeners` and
//! `listener_security_protocol_map`, in Kafka's syntax.
//!
//! `listeners` is a comma-separated list of `NAME://HOST:PORT`. A name is a security
//! protocol (PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL) or a name the map gives one
//! (`CLIENT:SASL_SSL,REPLICATION:SSL`). An empty host means every interface; IPv6 hosts
//! are bracketed. When `listeners` is empty the broker has one PLAINTEXT listener on
//! `listen`, advertised as `advertise`, exactly as before listeners existed.
//!
//! `advertised_listeners` gives, per listener name, the address clients of that listener
//! are told to connect to; a listener it does not name is advertised at its own address,
//! which then must not be an unspecified one (0.0.0.0, ::, or an empty host).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use super::{Config, ConfigError, invalid, parse_host_port};

/// How a listener's connections are secured (Kafka's `security.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(text: &str) -> Option<SecurityProtocol> {
        Some(match text.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => SecurityProtocol::Plaintext,
            "SSL" => SecurityProtocol::Ssl,
            "SASL_PLAINTEXT" => SecurityProtocol::SaslPlaintext,
            "SASL_SSL" => SecurityProtocol::SaslSsl,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }
}

impl fmt::Display for SecurityProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One Kafka listener, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The listener name, upper case (`PLAINTEXT`, `CLIENT`).
    pub name: String,
    pub protocol: SecurityProtocol,
    pub bind: SocketAddr,
    /// The host and port this listener's clients are told to connect to.
    pub advertised_host: String,
    pub advertised_port: i32,
}

/// `NAME://HOST:PORT` split; the host keeps its brackets off and may be empty.
fn split_listener<'a>(
    setting: &str,
    entry: &'a str,
) -> Result<(String, &'a str, &'a str), ConfigError> {
    let (name, address) = entry.split_once("://").ok_or_else(|| {
        invalid(
            setting,
            format!("`{entry}` is not NAME://HOST:PORT (for example PLAINTEXT://127.0.0.1:9092)"),
        )
    })?;
    let name = name.trim().to_ascii_uppercase();
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(invalid(
            setting,
            format!("listener name `{name}` must be letters, digits and underscores"),
        ));
    }
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| invalid(setting, format!("`{entry}` has no port")))?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok((name, host, port))
}

fn entries(text: &str) -> impl Iterator<Item = &str> {
    text.split(',').map(str::trim).filter(|e| !e.is_empty())
}

impl Config {
    /// `listener_security_protocol_map` with the four protocol names mapped to
    /// themselves, as Kafka's default map does.
    fn security_protocol_map(&self) -> Result<BTreeMap<String, SecurityProtocol>, ConfigError> {
        const SETTING: &str = "listener_security_protocol_map";
        let mut map: BTreeMap<String, SecurityProtocol> = [
            SecurityProtocol::Plaintext,
            SecurityProtocol::Ssl,
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::SaslSsl,
        ]
        .into_iter()
        .map(|p| (p.name().to_string(), p))
        .collect();
        for entry in entries(&self.listener_security_protocol_map) {
            let (name, protocol) = entry
                .split_once(':')
                .ok_or_else(|| invalid(SETTING, format!("`{entry}` is not NAME:PROTOCOL")))?;
            let protocol = SecurityProtocol::parse(protocol.trim()).ok_or_else(|| {
                invalid(
                    SETTING,
                    format!(
                        "`{protocol}` is not PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL (in `{entry}`)"
                    ),
                )
            })?;
            map.insert(name.trim().to_ascii_uppercase(), protocol);
        }
        Ok(map)
    }

    /// The Kafka listeners this broker binds, in the order `listeners` names them (the
    /// first is the one this broker's registration leads with). Validated: names are
    /// unique and mapped, addresses parse, ports are distinct, advertised addresses are
    /// connectable.
    pub fn kafka_listeners(&self) -> Result<Vec<Listener>, ConfigError> {
        if self.listeners.trim().is_empty() {
            let bind = self.listen_addr()?;
            let (advertised_host, advertised_port) = self.advertised()?;
            return Ok(vec![Listener {
                name: "PLAINTEXT".into(),
                protocol: SecurityProtocol::Plaintext,
                bind,
                advertised_host,
                advertised_port,
            }]);
        }
        let map = self.security_protocol_map()?;
        let advertised = self.advertised_listener_map()?;
        let mut listeners: Vec<Listener> = Vec::new();
        for entry in entries(&self.listeners) {
            let (name, host, port) = split_listener("listeners", entry)?;
            let protocol = *map.get(&name).ok_or_else(|| {
                invalid(
                    "listeners",
                    format!(
                        "listener `{name}` is not a security protocol and \
                         listener_security_protocol_map does not name it"
                    ),
                )
            })?;
            let host = if host.is_empty() { "0.0.0.0" } else { host };
            let bind: SocketAddr = format!("{}:{port}", bracket(host)).parse().map_err(|_| {
                invalid(
                    "listeners",
                    format!("`{entry}`: the host must be an IP address and the port a number"),
                )
            })?;
            if listeners.iter().any(|l| l.name == name) {
                return Err(invalid(
                    "listeners",
                    format!("listener `{name}` is named twice"),
                ));
            }
            if listeners
                .iter()
                .any(|l| l.bind.port() == bind.port() && bind.port() != 0)
            {
                return Err(invalid(
                    "listeners",
                    format!("two listeners use port {}", bind.port()),
                ));
            }
            let (advertised_host, advertised_port) = match advertised.get(&name) {
                Some(address) => address.clone(),
                None if bind.ip().is_unspecified() => {
                    return Err(invalid(
                        "advertised_listeners",
                        format!(
                            "must name listener `{name}`: it binds {bind}, an address clients \
                             cannot connect to"
                        ),
                    ));
                }
                None => (bind.ip().to_string(), i32::from(bind.port())),
            };
            listeners.push(Listener {
                name,
                protocol,
                bind,
                advertised_host,
                advertised_port,
            });
        }
        if listeners.is_empty() {
            return Err(invalid("listeners", "names no listener"));
        }
        if let Some(extra) = advertised
            .keys()
            .find(|name| !listeners.iter().any(|l| &l.name == *name))
        {
            return Err(invalid(
                "advertised_listeners",
                format!("names `{extra}`, which is not in listeners"),
            ));
        }
        Ok(listeners)
    }

    fn advertised_listener_map(&self) -> Result<BTreeMap<String, (String, i32)>, ConfigError> {
        let mut map = BTreeMap::new();
        for entry in entries(&self.advertised_listeners) {
            let (name, host, port) = split_listener("advertised_listeners", entry)?;
            if host.is_empty() {
                return Err(invalid(
                    "advertised_listeners",
                    format!("`{entry}` needs a host clients can connect to"),
                ));
            }
            let address = parse_host_port("advertised_listeners", &format!("{host}:{port}"))?;
            if map.insert(name.clone(), address).is_some() {
                return Err(invalid(
                    "advertised_listeners",
                    format!("listener `{name}` is named twice"),
                ));
            }
        }
        Ok(map)
    }
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(listeners: &str, advertised: &str, map: &str) -> Config {
        Config {
            listeners: listeners.into(),
            advertised_listeners: advertised.into(),
            listener_security_protocol_map: map.into(),
            ..Config::default()
        }
    }

    #[test]
    fn no_listeners_means_listen_as_plaintext() {
        let config = Config {
            listen: "127.0.0.1:9100".into(),
            advertise: "kafka.example:19100".into(),
            ..Config::default()
        };
        let listeners = config.kafka_listeners().expect("valid");
        assert_eq!(
            listeners,
            vec![Listener {
                name: "PLAINTEXT".into(),
                protocol: SecurityProtocol::Plaintext,
                bind: "127.0.0.1:9100".parse().expect("addr"),
                advertised_host: "kafka.example".into(),
                advertised_port: 19100,
            }]
        );
    }

    #[test]
    fn kafka_syntax_with_custom_names_and_advertised_addresses() {
        let config = config(
            "plaintext://127.0.0.1:9092, CLIENT://0.0.0.0:9094,INTERNAL://[::1]:9095",
            "CLIENT://broker-0.example:9094",
            "CLIENT:SASL_SSL, internal:ssl",
        );
        let listeners = config.kafka_listeners().expect("valid");
        let summary: Vec<(String, SecurityProtocol, String, String, i32)> = listeners
            .into_iter()
            .map(|l| {
                (
                    l.name,
                    l.protocol,
                    l.bind.to_string(),
                    l.advertised_host,
                    l.advertised_port,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "PLAINTEXT".into(),
                    SecurityProtocol::Plaintext,
                    "127.0.0.1:9092".into(),
                    "127.0.0.1".into(),
                    9092
                ),
                (
                    "CLIENT".into(),
                    SecurityProtocol::SaslSsl,
                    "0.0.0.0:9094".into(),
                    "broker-0.example".into(),
                    9094
                ),
                (
                    "INTERNAL".into(),
                    SecurityProtocol::Ssl,
                    "[::1]:9095".into(),
                    "::1".into(),
                    9095
                ),
            ]
        );
    }

    #[test]
    fn bad_listeners_are_refused_with_the_setting_named() {
        let cases = [
            (config("127.0.0.1:9092", "", ""), "listeners"),
            (config("FOO://127.0.0.1:9092", "", ""), "listeners"),
            (
                config("PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9092", "", ""),
                "listeners",
            ),
            (
                config(
                    "PLAINTEXT://127.0.0.1:9092,PLAINTEXT://127.0.0.1:9093",
                    "",
                    "",
                ),
                "listeners",
            ),
            (config("PLAINTEXT://host.example:9092", "", ""), "listeners"),
            (config("PLAINTEXT://:9092", "", ""), "advertised_listeners"),
            (
                config("PLAINTEXT://127.0.0.1:9092", "SSL://a:1", ""),
                "advertised_listeners",
            ),
            (
                config("PLAINTEXT://127.0.0.1:9092", "PLAINTEXT://:1", ""),
                "advertised_listeners",
            ),
            (
                config("A://127.0.0.1:9092", "", "A:TLS"),
                "listener_security_protocol_map",
            ),
            (config(" , ", "", ""), "listeners"),
        ];
        for (config, setting) in cases {
            match config.kafka_listeners() {
                Err(ConfigError::Invalid { setting: got, .. }) => assert_eq!(
                    got, setting,
                    "{:?} / {:?}",
                    config.listeners, config.advertised_listeners
                ),
                other => panic!("{:?}: expected an error, got {other:?}", config.listeners),
            }
        }
    }
}
