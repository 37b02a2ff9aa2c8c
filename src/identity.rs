//! Who is calling: an API token found by the configured sources (first match wins; two
//! different credentials are refused, see [`Ambiguous`]), or, when there is none, the client IP
//! chosen like Traefik's `ipStrategy`. Sources read what backends read: every instance of a
//! repeated header, parameter or cookie, the spellings backends take for the same name
//! (`X_API_Key`, `api_key[]`, `API_KEY`), and cookie values without their double quotes. Tokens are reduced at once to
//! a keyed BLAKE3 hash ([`Key`]); nothing keeps, logs or exports a token in clear, only a
//! [`Fingerprint`] (the first 32 bits of the hash).
//!
//! Which plan a caller has, and which limits apply, is `policy`'s business.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::num::NonZeroUsize;

use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;
use smallvec::SmallVec;

use crate::request::Forwarded;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Where a token may be found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `Authorization: Bearer <token>`
    Bearer,
    /// `Authorization: Token <token>`
    Token,
    /// Any header's whole value.
    Header(HeaderName),
    /// A query parameter of `X-Forwarded-Uri`.
    Query(String),
    /// A cookie.
    Cookie(String),
    /// The request host (`X-Forwarded-Host`), like Traefik's `sourceCriterion.requestHost`.
    Host,
}

impl Source {
    /// Parses `bearer`, `token`, `header:NAME`, `query:NAME`, `cookie:NAME` or `host`.
    pub fn parse(s: &str) -> Option<Source> {
        let nonempty = |n: &str| (!n.is_empty()).then(|| n.to_owned());
        match s.split_once(':') {
            None => match s {
                "bearer" => Some(Source::Bearer),
                "token" => Some(Source::Token),
                "host" => Some(Source::Host),
                _ => None,
            },
            Some(("header", name)) => HeaderName::try_from(name).ok().map(Source::Header),
            Some(("query", name)) => nonempty(name).map(Source::Query),
            Some(("cookie", name)) => nonempty(name).map(Source::Cookie),
            Some(_) => None,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Bearer => f.write_str("bearer"),
            Source::Token => f.write_str("token"),
            Source::Header(n) => write!(f, "header:{n}"),
            Source::Query(n) => write!(f, "query:{n}"),
            Source::Cookie(n) => write!(f, "cookie:{n}"),
            Source::Host => f.write_str("host"),
        }
    }
}

/// What to do with a request that carries no token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Missing {
    /// Answer 401.
    Reject,
    /// Limit by client IP under the anonymous plan.
    Ip,
}

/// How the client IP is chosen, as Traefik's `ipStrategy`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientIp {
    /// The `depth`-th address of `X-Forwarded-For` counted from the right (1 = the address the
    /// last proxy saw). Falls back to the peer when the header is shorter.
    Depth(NonZeroUsize),
    /// The rightmost address of `X-Forwarded-For` outside these networks, else the peer.
    Excluded(Vec<IpNet>),
    /// The address of the peer that connected to quotagate.
    Peer,
}

impl ClientIp {
    pub fn resolve(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        let mut xff = headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .rev()
            .map(|s| s.trim().parse::<IpAddr>().ok());
        let found = match self {
            ClientIp::Peer => None,
            ClientIp::Depth(depth) => xff.nth(depth.get() - 1).flatten(),
            // An entry that is not an address stops the scan: whatever lies left of it was
            // written by someone we do not trust.
            ClientIp::Excluded(nets) => {
                xff.map_while(|ip| ip).find(|ip| !nets.iter().any(|n| n.contains(ip)))
            }
        };
        found.map_or(peer, canonical)
    }
}

/// `::ffff:1.2.3.4` is `1.2.3.4`.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// A keyed hash of an identity: what counters, token maps and Redis keys are keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(pub u128);

impl Key {
    pub fn fingerprint(self) -> Fingerprint {
        Fingerprint((self.0 >> 96) as u32)
    }
}

/// The first 32 bits of a [`Key`], for logs, headers and error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fingerprint(pub u32);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// The keyed hash behind [`Key`]. The key comes from the config so replicas and restarts agree.
#[derive(Clone)]
pub struct Hasher {
    key: [u8; 32],
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher(..)")
    }
}

const KIND_TOKEN: u8 = b't';
const KIND_IP: u8 = b'i';
const KIND_HOST: u8 = b'h';

impl Hasher {
    /// Derives the 32-byte hashing key from configured secret material of any length.
    pub fn new(secret: &[u8]) -> Hasher {
        Hasher { key: blake3::derive_key("quotagate 2026 identity key", secret) }
    }

    fn hash(&self, kind: u8, value: &[u8]) -> Key {
        let mut h = blake3::Hasher::new_keyed(&self.key);
        h.update(&[kind]);
        h.update(value);
        let out = h.finalize();
        let bytes: [u8; 16] = out.as_bytes()[..16].try_into().expect("16 of 32 bytes");
        Key(u128::from_be_bytes(bytes))
    }

    /// A stable id of the hashing key, for telling whether stored counters (a snapshot) were
    /// keyed by it. A keyed hash of a fixed label: it reveals nothing about the key.
    pub fn key_id(&self) -> u64 {
        let out = blake3::keyed_hash(&self.key, b"quotagate key id");
        u64::from_le_bytes(out.as_bytes()[..8].try_into().expect("8 of 32 bytes"))
    }

    /// A 32-byte key for another use of the configured secret (`context` names the use), so
    /// that keys for different purposes never coincide and none reveals the hashing key.
    pub(crate) fn derive_key(&self, context: &str) -> [u8; 32] {
        blake3::derive_key(context, &self.key)
    }

    pub fn token(&self, token: &[u8]) -> Key {
        self.hash(KIND_TOKEN, token)
    }

    pub fn host(&self, host: &str) -> Key {
        self.hash(KIND_HOST, host.to_ascii_lowercase().as_bytes())
    }

    /// IPv6 clients are grouped by their `/ipv6_prefix` network, since one client usually holds
    /// a whole /64 and could otherwise take a fresh address per request.
    pub fn ip(&self, ip: IpAddr, ipv6_prefix: u8) -> Key {
        match ip {
            IpAddr::V4(v4) => self.hash(KIND_IP, &v4.octets()),
            IpAddr::V6(v6) => {
                let net = ipnet::Ipv6Net::new(v6, ipv6_prefix).map_or(v6, |n| n.network());
                self.hash(KIND_IP, &net.octets())
            }
        }
    }
}

/// The caller, after identification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Token(Key),
    Host(Key),
    Ip(IpAddr, Key),
}

impl Caller {
    pub fn key(&self) -> Key {
        match *self {
            Caller::Token(k) | Caller::Host(k) | Caller::Ip(_, k) => k,
        }
    }
}

impl fmt::Display for Caller {
    /// `tok:1a2b3c4d`, `host:1a2b3c4d` or `ip:203.0.113.7`: safe for logs and headers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Token(k) => write!(f, "tok:{}", k.fingerprint()),
            Caller::Host(k) => write!(f, "host:{}", k.fingerprint()),
            Caller::Ip(ip, _) => write!(f, "ip:{ip}"),
        }
    }
}

/// Why a request could not be identified. Messages never contain the token.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("no API token found (looked in {sources})")]
    Missing { sources: String },
    #[error("the token in {place} is {len} bytes long (at most {max} allowed)")]
    TooLong { place: String, len: usize, max: usize },
    #[error("the token in {place} is malformed: {why}")]
    Malformed { place: String, why: &'static str },
    #[error("more than one credential, found in {sources}: send exactly one")]
    Ambiguous { sources: String },
}

/// What to do with a request that carries two different credentials (a repeated header,
/// parameter or cookie, or two sources with different values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Ambiguous {
    /// Answer 400: the backend may serve a different credential than the one quotagate charges
    /// (PHP and Rails read the last repeated parameter; many APIs prefer `X-API-Key`).
    #[default]
    Reject,
    /// Charge the first credential found, in source order.
    First,
}

/// Identification settings, validated.
#[derive(Clone, Debug)]
pub struct Identity {
    pub sources: Vec<Source>,
    pub missing: Missing,
    pub ambiguous: Ambiguous,
    pub max_token_length: usize,
    pub client_ip: ClientIp,
    pub ipv6_prefix: u8,
    pub hasher: Hasher,
}

impl Identity {
    /// Finds the caller of `req`. `peer` is the address that connected to quotagate.
    ///
    /// The first source (in configured order) that finds something decides. With
    /// [`Ambiguous::Reject`] every credential source is read first, and two different values
    /// anywhere among them are an error; the same value found twice is one credential.
    pub fn identify(
        &self,
        headers: &HeaderMap,
        req: &Forwarded<'_>,
        peer: IpAddr,
    ) -> Result<Caller, IdentityError> {
        let reject = self.ambiguous == Ambiguous::Reject;
        // The first credential found, unless the host source came before it.
        let mut first: Option<(&Source, Cow<'_, str>)> = None;
        let mut host_first = false;
        let mut conflicting: SmallVec<[&Source; 4]> = SmallVec::new();
        let mut found: SmallVec<[Cow<'_, str>; 2]> = SmallVec::new();
        for source in &self.sources {
            if *source == Source::Host {
                if first.is_none() && !req.host.is_empty() {
                    host_first = true;
                    if !reject {
                        break;
                    }
                }
                continue;
            }
            found.clear();
            values(source, headers, req.query, &mut found);
            for value in found.drain(..) {
                match &first {
                    None => first = Some((source, value)),
                    Some((_, v)) if !reject || *v == value => {}
                    Some((earlier, _)) => {
                        for s in [*earlier, source] {
                            if !conflicting.contains(&s) {
                                conflicting.push(s);
                            }
                        }
                    }
                }
            }
            if !reject && (first.is_some() || host_first) {
                break;
            }
        }
        if !conflicting.is_empty() {
            let sources = conflicting.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ");
            return Err(IdentityError::Ambiguous { sources });
        }
        if host_first {
            return Ok(Caller::Host(self.hasher.host(&req.host)));
        }
        if let Some((source, raw)) = first {
            self.validate(source, raw.as_bytes())?;
            return Ok(Caller::Token(self.hasher.token(raw.as_bytes())));
        }
        match self.missing {
            Missing::Ip => {
                let ip = self.client_ip.resolve(headers, peer);
                Ok(Caller::Ip(ip, self.hasher.ip(ip, self.ipv6_prefix)))
            }
            Missing::Reject => Err(IdentityError::Missing { sources: self.describe_sources() }),
        }
    }

    /// The client IP by the configured strategy (for allow-lists).
    pub fn client_ip(&self, headers: &HeaderMap, peer: IpAddr) -> IpAddr {
        self.client_ip.resolve(headers, peer)
    }

    fn describe_sources(&self) -> String {
        self.sources.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ")
    }

    fn validate(&self, source: &Source, token: &[u8]) -> Result<(), IdentityError> {
        if token.len() > self.max_token_length {
            return Err(IdentityError::TooLong {
                place: source.to_string(),
                len: token.len(),
                max: self.max_token_length,
            });
        }
        let why = if token.is_empty() {
            "it is empty"
        } else if !token.iter().all(|b| (0x21..=0x7e).contains(b)) {
            "it may only contain visible ASCII characters"
        } else {
            return Ok(());
        };
        Err(IdentityError::Malformed { place: source.to_string(), why })
    }
}

/// Every value credential source `source` finds in the request, in order, pushed to `out`:
/// each instance of a repeated header, parameter or cookie, and the spellings backends read
/// under the same name (see [`names_parameter`], [`names_header`]). Non-UTF-8 header values
/// are returned lossily, for [`Identity::validate`] to refuse.
fn values<'a>(
    source: &Source,
    headers: &'a HeaderMap,
    query: Option<&'a [u8]>,
    out: &mut SmallVec<[Cow<'a, str>; 2]>,
) {
    let text = |v: &'a HeaderValue| -> Cow<'a, str> {
        match v.to_str() {
            Ok(s) => Cow::Borrowed(s),
            Err(_) => String::from_utf8_lossy(v.as_bytes()),
        }
    };
    let trimmed = |v: Cow<'a, str>| match v {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
        Cow::Owned(s) => Cow::Owned(s.trim().to_owned()),
    };
    match source {
        Source::Bearer | Source::Token => {
            let scheme = if *source == Source::Bearer { "bearer" } else { "token" };
            for v in headers.get_all(http::header::AUTHORIZATION) {
                match text(v) {
                    Cow::Borrowed(v) => out.extend(after_scheme(v, scheme).map(Cow::Borrowed)),
                    Cow::Owned(v) => out.extend(after_scheme(&v, scheme).map(|t| Cow::Owned(t.to_owned()))),
                }
            }
        }
        Source::Header(name) => {
            out.extend(headers.get_all(name).iter().map(|v| trimmed(text(v))));
            for (given, v) in headers.iter() {
                if given != name && names_header(given, name) {
                    out.push(trimmed(text(v)));
                }
            }
        }
        Source::Query(name) => {
            if let Some(q) = query {
                let named = |(k, v): (Cow<'a, str>, Cow<'a, str>)| names_parameter(&k, name).then_some(v);
                out.extend(form_urlencoded::parse(q).filter_map(named));
                // Rack 2, Python before 3.9.2 and Go before 1.17 also split the query on `;`:
                // `api_key=a;api_key=b` is two values there, one (`a;api_key=b`) here.
                if q.contains(&b';') {
                    out.extend(q.split(|&b| b == b';').flat_map(form_urlencoded::parse).filter_map(named));
                }
            }
        }
        Source::Cookie(name) => {
            for v in headers.get_all(http::header::COOKIE) {
                let Ok(v) = v.to_str() else { continue };
                // Go's `Request.Cookie` strips one pair of double quotes, so `session="abc"` and
                // `session=abc` are one session to such a backend.
                out.extend(
                    cookie::Cookie::split_parse(v).filter_map(Result::ok).filter(|c| c.name() == name).map(
                        |c| match c.value_raw() {
                            Some(raw) => Cow::Borrowed(unquote(raw)),
                            None => Cow::Owned(c.value_trimmed().to_owned()),
                        },
                    ),
                );
            }
        }
        Source::Host => {}
    }
}

/// `"abc"` -> `abc`: one pair of surrounding double quotes removed, as `cookie`'s
/// `value_trimmed` does, but borrowed from the header.
fn unquote(value: &str) -> &str {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner,
        None => value,
    }
}

/// Whether header `given` reaches a CGI-style backend (PHP, Rack, WSGI: `HTTP_X_API_KEY`) as
/// `name`: `X_API_Key` is `X-API-Key` there. Traefik forwards underscores.
fn names_header(given: &HeaderName, name: &HeaderName) -> bool {
    let (g, n) = (given.as_str().as_bytes(), name.as_str().as_bytes());
    g.len() == n.len()
        && g.contains(&b'_')
        && g.iter().zip(n).all(|(&g, &n)| g == n || (g == b'_' && n == b'-'))
}

/// Whether query parameter `given` (decoded) is read as `name` by a mainstream backend:
/// exactly; in any ASCII case (ASP.NET's query collection); with an array suffix (`name[]`,
/// `name[0]`: PHP, Rails, Express's `qs`, and `String(["t"])` is `"t"`); or with `.`, ` ` or `[`
/// where `name` has `_` (PHP rewrites them to `_`).
fn names_parameter(given: &str, name: &str) -> bool {
    let base = match given.find('[') {
        Some(i) if i > 0 && given.ends_with(']') => &given[..i],
        _ => given,
    };
    base.len() == name.len()
        && base
            .bytes()
            .zip(name.bytes())
            .all(|(g, n)| g.eq_ignore_ascii_case(&n) || (n == b'_' && matches!(g, b'.' | b' ' | b'[')))
}

/// `Bearer abc` -> `abc` for scheme `bearer` (case-insensitive); `Bearer` alone -> `""`.
fn after_scheme<'v>(value: &'v str, scheme: &str) -> Option<&'v str> {
    let value = value.trim();
    let (given, rest) = value.split_once(' ').unwrap_or((value, ""));
    given.eq_ignore_ascii_case(scheme).then(|| rest.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xff(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", v.parse().unwrap());
        h
    }

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(172, 17, 0, 2));

    #[test]
    fn depth_counts_from_the_right_like_traefik() {
        let h = xff("10.0.0.1,11.0.0.1, 12.0.0.1,13.0.0.1");
        let depth = |d| ClientIp::Depth(NonZeroUsize::new(d).unwrap()).resolve(&h, PEER);
        assert_eq!(depth(1), "13.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(depth(3), "11.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(depth(5), PEER, "deeper than the header: the peer");
        assert_eq!(ClientIp::Depth(NonZeroUsize::MIN).resolve(&HeaderMap::new(), PEER), PEER);
    }

    #[test]
    fn excluded_skips_trusted_proxies_from_the_right() {
        let h = xff("1.2.3.4, 10.0.0.5, 10.0.0.6");
        let nets = vec!["10.0.0.0/8".parse().unwrap()];
        assert_eq!(ClientIp::Excluded(nets.clone()).resolve(&h, PEER), "1.2.3.4".parse::<IpAddr>().unwrap());
        assert_eq!(ClientIp::Excluded(nets.clone()).resolve(&xff("10.0.0.1"), PEER), PEER);
        // Garbage stops the scan rather than letting the left part through.
        assert_eq!(ClientIp::Excluded(nets).resolve(&xff("1.2.3.4, junk, 10.0.0.6"), PEER), PEER);
    }

    #[test]
    fn mapped_ipv4_is_plain_ipv4() {
        let ip = ClientIp::Depth(NonZeroUsize::MIN).resolve(&xff("::ffff:192.0.2.1"), PEER);
        assert_eq!(ip, "192.0.2.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_hash_depends_on_the_key_and_the_kind() {
        let a = Hasher::new(b"0123456789abcdef");
        let b = Hasher::new(b"0123456789abcdeF");
        assert_ne!(a.token(b"t"), b.token(b"t"));
        assert_eq!(a.token(b"t"), a.token(b"t"));
        assert_ne!(a.token(b"example.com"), a.host("example.com"));
        assert_eq!(a.host("Example.COM"), a.host("example.com"));
        let fp = a.token(b"secret").fingerprint().to_string();
        assert_eq!(fp.len(), 8);
    }

    #[test]
    fn sources_parse_and_print_back() {
        for s in ["bearer", "token", "header:x-api-key", "query:api_key", "cookie:session", "host"] {
            assert_eq!(Source::parse(s).unwrap().to_string(), s);
        }
        for bad in ["jwt", "header:", "header:bad header", "query:", "cookie:", "x:y"] {
            assert_eq!(Source::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_whitespace_tolerant() {
        assert_eq!(after_scheme("bearer abc", "bearer"), Some("abc"));
        assert_eq!(after_scheme("  BEARER   abc  ", "bearer"), Some("abc"));
        assert_eq!(after_scheme("Bearer", "bearer"), Some(""));
        assert_eq!(after_scheme("Basic abc", "bearer"), None);
    }

    fn identity(sources: &[&str], ambiguous: Ambiguous) -> Identity {
        Identity {
            sources: sources.iter().map(|s| Source::parse(s).unwrap()).collect(),
            missing: Missing::Reject,
            ambiguous,
            max_token_length: 256,
            client_ip: ClientIp::Peer,
            ipv6_prefix: 64,
            hasher: Hasher::new(b"0123456789abcdef"),
        }
    }

    /// Identifies a check for `uri` carrying `headers`.
    fn who(id: &Identity, uri: &str, headers: &[(&str, &str)]) -> Result<Caller, IdentityError> {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-uri", uri.parse().unwrap());
        h.insert("x-forwarded-host", "api.example.com".parse().unwrap());
        for (k, v) in headers {
            h.append(HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        let req = Forwarded::from_headers(&h, "GET", "/").unwrap();
        id.identify(&h, &req, PEER)
    }

    const ALL: [&str; 4] = ["bearer", "header:x-api-key", "query:api_key", "cookie:session"];

    #[test]
    fn two_different_credentials_are_refused_naming_their_sources() {
        let id = identity(&ALL, Ambiguous::Reject);
        type Headers<'a> = &'a [(&'a str, &'a str)];
        let cases: &[(&str, Headers<'_>, &str)] = &[
            ("/?api_key=t1&api_key=t2", &[], "query:api_key"),
            ("/?api_key=t1&API_KEY=t2", &[], "query:api_key"),
            ("/?api_key=t1&api_key[]=t2", &[], "query:api_key"),
            ("/", &[("authorization", "Bearer t1"), ("authorization", "Bearer t2")], "bearer"),
            ("/", &[("authorization", "Bearer t1"), ("x-api-key", "t2")], "bearer, header:x-api-key"),
            ("/", &[("x-api-key", "t1"), ("x_api_key", "t2")], "header:x-api-key"),
            ("/", &[("cookie", "session=t1; session=t2")], "cookie:session"),
            ("/", &[("cookie", "session=t1"), ("cookie", "session=t2")], "cookie:session"),
            ("/?api_key=t1", &[("cookie", "session=t2")], "query:api_key, cookie:session"),
            ("/?api_key=t1;api_key=t2", &[], "query:api_key"),
            ("/?api_key=t1;x=1", &[], "query:api_key"),
        ];
        for (uri, headers, sources) in cases {
            let err = who(&id, uri, headers).unwrap_err();
            assert_eq!(err, IdentityError::Ambiguous { sources: (*sources).to_owned() }, "{uri} {headers:?}");
            let message = err.to_string();
            assert!(!message.contains("t1") && !message.contains("t2"), "{message}");
        }
    }

    #[test]
    fn the_same_credential_found_twice_is_one_caller() {
        let id = identity(&ALL, Ambiguous::Reject);
        let t1 = Ok(Caller::Token(id.hasher.token(b"t1")));
        assert_eq!(who(&id, "/?api_key=t1&api_key=t1", &[]), t1);
        assert_eq!(who(&id, "/?api_key=t1", &[("authorization", "Bearer t1"), ("x-api-key", " t1 ")]), t1);
        assert_eq!(who(&id, "/", &[("cookie", "session=\"t1\"; session=t1")]), t1);
    }

    #[test]
    fn first_charges_the_first_credential_in_source_order() {
        let id = identity(&ALL, Ambiguous::First);
        let t1 = Ok(Caller::Token(id.hasher.token(b"t1")));
        assert_eq!(who(&id, "/?api_key=t2", &[("authorization", "Bearer t1"), ("x-api-key", "t3")]), t1);
        assert_eq!(who(&id, "/?api_key=t1&api_key=t2", &[]), t1);
    }

    #[test]
    fn sources_read_the_spellings_backends_read_under_the_same_name() {
        let id = identity(&ALL, Ambiguous::Reject);
        let t1 = Ok(Caller::Token(id.hasher.token(b"t1")));
        for uri in [
            "/?API_KEY=t1",
            "/?api_key[]=t1",
            "/?api_key[0]=t1",
            "/?api.key=t1",
            "/?api+key=t1",
            "/?api%5Fkey=t1",
        ] {
            assert_eq!(who(&id, uri, &[]), t1, "{uri}");
        }
        assert_eq!(who(&id, "/", &[("x_api_key", "t1")]), t1);
        // A quoted cookie is the same session to Go's Request.Cookie.
        for cookie in ["session=\"t1\"", "session=t1", " session = t1 ", "a=b; session=\"t1\"; c=d"] {
            assert_eq!(who(&id, "/", &[("cookie", cookie)]), t1, "{cookie}");
        }
        assert!(matches!(
            who(&id, "/?apikey=t1&key=t2&api_key_x=t3", &[]),
            Err(IdentityError::Missing { .. })
        ));
    }

    #[test]
    fn the_host_source_uses_the_normal_form_of_the_host() {
        let id = identity(&["bearer", "host"], Ambiguous::Reject);
        let mut keys = Vec::new();
        for host in ["api.example.com", "API.Example.COM.", "api.example.com.:443"] {
            let mut h = HeaderMap::new();
            h.insert("x-forwarded-uri", "/".parse().unwrap());
            h.insert("x-forwarded-host", host.parse().unwrap());
            let req = Forwarded::from_headers(&h, "GET", "/").unwrap();
            keys.push(id.identify(&h, &req, PEER).unwrap());
        }
        assert!(matches!(keys[0], Caller::Host(_)));
        assert!(keys.iter().all(|k| *k == keys[0]), "{keys:?}");
        // A credential before the host source wins over it.
        assert_eq!(
            who(&id, "/", &[("authorization", "Bearer t1")]),
            Ok(Caller::Token(id.hasher.token(b"t1")))
        );
    }

    proptest::proptest! {
        /// One token sent through every source at once is one caller, the same as through any
        /// one of them; a second, different token anywhere makes the request ambiguous.
        #[test]
        fn one_token_through_every_source_is_one_caller(
            token in "[A-Za-z0-9._~-]{1,40}",
            other in "[A-Za-z0-9._~-]{1,40}",
            quoted in proptest::bool::ANY,
        ) {
            let id = identity(&ALL, Ambiguous::Reject);
            let query: String = form_urlencoded::byte_serialize(token.as_bytes()).collect();
            let uri = format!("/?api_key={query}");
            let cookie = if quoted { format!("session=\"{token}\"") } else { format!("session={token}") };
            let bearer = format!("Bearer {token}");
            let all = [("authorization", bearer.as_str()), ("x-api-key", token.as_str()), ("cookie", cookie.as_str())];
            let expected = Caller::Token(id.hasher.token(token.as_bytes()));
            proptest::prop_assert_eq!(who(&id, &uri, &all), Ok(expected));
            proptest::prop_assert_eq!(who(&id, "/", &all[2..]), Ok(expected));
            if other != token {
                let other_key = format!("X_API_KEY: {other}");
                let (name, value) = other_key.split_once(": ").unwrap();
                let mixed = [all[0], all[1], all[2], (name, value)];
                let is_ambiguous = matches!(who(&id, &uri, &mixed), Err(IdentityError::Ambiguous { .. }));
                proptest::prop_assert!(is_ambiguous);
            }
        }
    }
}
