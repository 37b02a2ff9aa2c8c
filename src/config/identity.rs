//! `[identity]`: where tokens are looked for, what happens without one, the client IP
//! (depth or excluded CIDRs), the hashing secret, what to do with two credentials, and the
//! parts the policy needs (`plan_header` and its secret, `allow_ips`).

use std::num::NonZeroUsize;

use http::HeaderValue;
use ipnet::IpNet;

use super::leaf::{quoted, TokenSource};
use super::raw::RawIdentity;
use super::validate::Validator;
use crate::identity::{Ambiguous, ClientIp, Hasher, Identity, Missing};
use crate::policy::PlanSecret;

/// The hashing secret used when none is configured. Not secret: configure `identity.hash_key`
/// so a reader of Redis keys or snapshots cannot test guessed tokens against them.
const BUILTIN_HASH_KEY: &[u8] = b"quotagate built-in identity hash key; set identity.hash_key";

/// Parts of `[identity]` that the policy uses.
pub(super) struct Extras {
    pub(super) plan_header: Option<http::HeaderName>,
    pub(super) plan_secret: Option<PlanSecret>,
    pub(super) allow: Vec<IpNet>,
    pub(super) missing: Option<Missing>,
}

impl Validator {
    pub(super) fn identity(&mut self, raw: RawIdentity) -> (Option<Identity>, Extras) {
        let default_sources = ["bearer", "token", "header:X-API-Key"];
        let raw_sources: Vec<String> =
            raw.sources.unwrap_or_else(|| default_sources.iter().map(|s| s.to_string()).collect());
        let mut sources = Vec::new();
        for (i, s) in raw_sources.iter().enumerate() {
            match self.leaf::<TokenSource>(format!("identity.sources[{i}]"), s) {
                Some(TokenSource(src)) if sources.contains(&src) => {
                    self.problem(format!("identity.sources[{i}]"), format!("{} is listed twice", quoted(s)))
                }
                Some(TokenSource(src)) => sources.push(src),
                None => {}
            }
        }
        let missing = self.choice(
            "identity.missing",
            "value",
            raw.missing.as_deref().unwrap_or("reject"),
            &[("reject", Missing::Reject), ("ip", Missing::Ip)],
        );
        if raw_sources.is_empty() && missing == Some(Missing::Reject) {
            self.problem(
                "identity.sources",
                "is empty, so every request would be refused as carrying no token (list where tokens are found, e.g. [\"bearer\"], or set identity.missing = \"ip\" to limit by client IP alone)",
            );
        }
        let ambiguous = self.choice(
            "identity.ambiguous",
            "value",
            raw.ambiguous.as_deref().unwrap_or("reject"),
            &[("reject", Ambiguous::Reject), ("first", Ambiguous::First)],
        );
        let max_len = raw.max_token_length.unwrap_or(256);
        if !(1..=8192).contains(&max_len) {
            self.problem("identity.max_token_length", format!("must be between 1 and 8192 (got {max_len})"));
        }
        let client_ip = self.client_ip(raw.client_ip.depth, raw.client_ip.excluded);
        let ipv6_prefix = raw.client_ip.ipv6_prefix.unwrap_or(64);
        if !(0..=128).contains(&ipv6_prefix) {
            let msg = format!("must be between 0 and 128 (got {ipv6_prefix})");
            self.problem("identity.client_ip.ipv6_prefix", msg);
        }
        let secret = self.hash_key(raw.hash_key, raw.hash_key_file);
        let plan_header = raw.plan_header.and_then(|h| match http::HeaderName::try_from(h.as_str()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.problem("identity.plan_header", format!("invalid header name {}", quoted(&h)));
                None
            }
        });
        let secret_file = raw.plan_header_secret_file.is_some();
        let plan_secret =
            self.plan_secret(plan_header.is_some(), raw.plan_header_secret_file, raw.plan_secret_header);
        if let (Some(header), false) = (&plan_header, secret_file) {
            self.warn(
                "identity.plan_header",
                format!(
                    "{header} is trusted without identity.plan_header_secret_file: Traefik forwards the client's \
                     headers, so any client that sends it chooses its plan unless every route overwrites it"
                ),
            );
        }
        let allow = raw
            .allow_ips
            .iter()
            .enumerate()
            .filter_map(|(i, a)| self.net(format!("identity.allow_ips[{i}]"), a))
            .collect();
        let extras = Extras { plan_header, plan_secret, allow, missing };
        let identity = (|| {
            Some(Identity {
                sources,
                missing: missing?,
                ambiguous: ambiguous?,
                max_token_length: usize::try_from(max_len).ok().filter(|n| (1..=8192).contains(n))?,
                client_ip: client_ip?,
                ipv6_prefix: u8::try_from(ipv6_prefix).ok().filter(|p| *p <= 128)?,
                hasher: Hasher::new(&secret?),
            })
        })();
        (identity, extras)
    }

    /// The hashing secret: configured inline, from a file, or built in. Messages give its
    /// length only.
    fn hash_key(&mut self, inline: Option<String>, file: Option<String>) -> Option<Vec<u8>> {
        let (key, secret) = match (inline, file) {
            (Some(_), Some(_)) => {
                let msg = "set either identity.hash_key or identity.hash_key_file, not both";
                self.problem("identity.hash_key_file", msg);
                return None;
            }
            (Some(k), None) => ("identity.hash_key", k.into_bytes()),
            (None, Some(f)) => {
                let path = self.resolve(&f);
                match std::fs::read(&path) {
                    Ok(bytes) => ("identity.hash_key_file", bytes.trim_ascii().to_vec()),
                    Err(e) => {
                        self.problem(
                            "identity.hash_key_file",
                            format!("cannot read {}: {e}", path.display()),
                        );
                        return None;
                    }
                }
            }
            (None, None) => {
                self.warn(
                    "identity.hash_key",
                    "not set, so the built-in key is used: whoever reads Redis keys or a snapshot can test guessed tokens against them (set identity.hash_key_file to a file of 16 bytes or more, e.g. from `openssl rand -hex 32`)",
                );
                return Some(BUILTIN_HASH_KEY.to_vec());
            }
        };
        if secret.len() < 16 {
            self.problem(key, format!("must be at least 16 bytes long (got {} bytes)", secret.len()));
            return None;
        }
        Some(secret)
    }

    /// The secret that makes `plan_header` trusted, read from `plan_header_secret_file`, and
    /// the header it comes in (`plan_secret_header`, default `X-Quotagate-Plan-Secret`).
    fn plan_secret(
        &mut self,
        has_plan_header: bool,
        file: Option<String>,
        header: Option<String>,
    ) -> Option<PlanSecret> {
        let Some(file) = file else {
            if header.is_some() {
                self.problem("identity.plan_secret_header", "set identity.plan_header_secret_file too");
            }
            return None;
        };
        if !has_plan_header {
            self.problem("identity.plan_header_secret_file", "set identity.plan_header too");
        }
        let header = header.unwrap_or_else(|| "X-Quotagate-Plan-Secret".to_owned());
        let name = match http::HeaderName::try_from(header.as_str()) {
            Ok(name) => Some(name),
            Err(_) => {
                self.problem(
                    "identity.plan_secret_header",
                    format!("invalid header name {}", quoted(&header)),
                );
                None
            }
        };
        let path = self.resolve(&file);
        let secret = match std::fs::read(&path) {
            Ok(bytes) => bytes.trim_ascii().to_vec(),
            Err(e) => {
                self.problem(
                    "identity.plan_header_secret_file",
                    format!("cannot read {}: {e}", path.display()),
                );
                return None;
            }
        };
        self.files.push(path);
        if secret.len() < 16 {
            let msg = format!("the secret must be at least 16 bytes long (got {} bytes)", secret.len());
            self.problem("identity.plan_header_secret_file", msg);
            return None;
        }
        if HeaderValue::from_bytes(&secret).is_err() {
            let msg = "the secret must be a valid header value (visible ASCII, no line breaks)";
            self.problem("identity.plan_header_secret_file", msg);
            return None;
        }
        Some(PlanSecret::new(name?, &secret))
    }

    fn client_ip(&mut self, depth: Option<i64>, excluded: Option<Vec<String>>) -> Option<ClientIp> {
        match (depth, excluded) {
            (Some(_), Some(_)) => {
                let msg = "set either depth or excluded, not both (as in Traefik's ipStrategy)";
                self.problem("identity.client_ip", msg);
                None
            }
            (Some(0), None) => Some(ClientIp::Peer),
            (Some(d), None) => match usize::try_from(d).ok().and_then(NonZeroUsize::new) {
                Some(d) => Some(ClientIp::Depth(d)),
                None => {
                    let msg = format!("must be 0 (the peer address) or more (got {d})");
                    self.problem("identity.client_ip.depth", msg);
                    None
                }
            },
            (None, Some(list)) => {
                let n = list.len();
                let nets: Vec<IpNet> = list
                    .iter()
                    .enumerate()
                    .filter_map(|(i, a)| self.net(format!("identity.client_ip.excluded[{i}]"), a))
                    .collect();
                (nets.len() == n).then_some(ClientIp::Excluded(nets))
            }
            (None, None) => Some(ClientIp::Depth(NonZeroUsize::MIN)),
        }
    }
}
