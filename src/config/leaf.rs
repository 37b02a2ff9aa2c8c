//! Leaf values: the strings of a config that parse themselves (`FromStr`), each with the
//! message its problem shows: humane durations, socket addresses, networks, token sources,
//! windows, and keyword choices. Validation asks for a leaf by key (`Validator::leaf`), so a
//! leaf's message is written once, here, and every key holding one reads the same.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;

use crate::identity::Source;
use crate::limiter::Window;

/// Why a leaf value was refused: the value and what was expected.
#[derive(Debug)]
pub(super) struct Invalid(pub String);

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A duration written for humans: "30s", "1m", "2h", "100ms".
pub(super) struct Humane(pub Duration);

impl FromStr for Humane {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        humantime::parse_duration(s).map(Humane).map_err(|_| {
            Invalid(format!("invalid duration {} (expected e.g. \"30s\", \"1m\", \"2h\")", quoted(s)))
        })
    }
}

/// A listener address, `IP:PORT`.
pub(super) struct Address(pub SocketAddr);

impl FromStr for Address {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        s.parse().map(Address).map_err(|_| {
            Invalid(format!("invalid address {} (expected IP:PORT, e.g. \"0.0.0.0:8080\")", quoted(s)))
        })
    }
}

/// A network: a CIDR, or one IP (a /32 or /128).
pub(super) struct Network(pub IpNet);

impl FromStr for Network {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        s.parse::<IpNet>()
            .ok()
            .or_else(|| s.parse::<std::net::IpAddr>().ok().map(IpNet::from))
            .map(Network)
            .ok_or_else(|| {
                Invalid(format!(
                    "invalid network {} (expected an IP or CIDR, e.g. \"10.0.0.0/8\")",
                    quoted(s)
                ))
            })
    }
}

/// Where a token is looked for: `bearer`, `token`, `header:NAME`, ...
pub(super) struct TokenSource(pub Source);

impl FromStr for TokenSource {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Source::parse(s).map(TokenSource).ok_or_else(|| {
            Invalid(format!(
                "unknown source {} (expected \"bearer\", \"token\", \"header:NAME\", \"query:NAME\", \"cookie:NAME\" or \"host\")",
                quoted(s)
            ))
        })
    }
}

/// A limit's window: a calendar unit or whole seconds.
pub(super) struct Per(pub Window);

impl FromStr for Per {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Window::parse(s).map(Per).ok_or_else(|| {
            Invalid(format!(
                "unknown window {} (expected second, minute, hour, day, week, month or whole seconds like \"15m\")",
                quoted(s)
            ))
        })
    }
}

/// One of a few keywords: `unknown {noun} "x" (expected "a", "b" or "c")`.
pub(super) fn choice<T: Copy>(noun: &str, value: &str, options: &[(&str, T)]) -> Result<T, Invalid> {
    if let Some((_, t)) = options.iter().find(|(name, _)| *name == value) {
        return Ok(*t);
    }
    let names: Vec<String> = options.iter().map(|(name, _)| quoted(name)).collect();
    let expected = match names.split_last() {
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(Invalid(format!("unknown {noun} {} (expected {expected})", quoted(value))))
}

/// A value as a TOML string literal, for messages.
pub(super) fn quoted(s: &str) -> String {
    format!("{s:?}")
}

/// A key path segment for a table key: bare if it is a bare TOML key, quoted otherwise.
pub(super) fn segment(name: &str) -> String {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        name.to_owned()
    } else {
        quoted(name)
    }
}

/// Plan, rule and limit names: they appear in keys, headers and metrics.
pub(super) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

pub(super) const NAME_RULE: &str = "letters, digits, '_', '-' or '.', at most 64";
