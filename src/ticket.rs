//! Tickets: what an admitted request carries to its backend (`X-Quotagate-Ticket`) and the
//! backend hands back to `POST /v1/tickets/close`, to free the request's concurrency slots and
//! report what the request really cost.
//!
//! A ticket is `qt1.` followed by the unpadded base64url of a payload and its MAC. The payload
//! holds the ticket id (the id the request's slots are held under), the caller's key (the keyed
//! fingerprint of its credential, never the credential), when the ticket expires, what
//! admission charged, the plan's name and the id of every scope of the request (dry-run ones
//! too), big-endian:
//!
//! ```text
//! id u128 | caller u128 | expires u64 (ns) | cost u32 | plan len u8, bytes | scopes n u8, u32 each
//! ```
//!
//! The MAC is the first 16 bytes of keyed BLAKE3 over the payload, with a key derived from the
//! identity hash key: only a service configured with that secret mints tickets it accepts, and a
//! ticket cannot be moved to another caller, scope or expiry. Reading never panics and refuses
//! anything this module did not mint under the same secret: a changed, cut or extended ticket
//! fails its framing or its MAC. Whether a ticket is still open (not closed, not expired) is
//! for the store and the close handler to say.

use std::fmt;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use smallvec::SmallVec;

use crate::identity::{Hasher, Key};
use crate::limiter::Nanos;
use crate::store::TicketId;

/// What every ticket of this format starts with.
pub const PREFIX: &str = "qt1.";

/// The context the ticket MAC key is derived under, from the identity hash key.
const CONTEXT: &str = "quotagate 2026 tickets v1";
const MAC_LEN: usize = 16;
/// id, caller, expires, cost.
const FIXED: usize = 16 + 16 + 8 + 4;
/// The longest ticket, decoded: a 255-byte plan name and 255 scopes.
const MAX_BYTES: usize = FIXED + 1 + 255 + 1 + 4 * 255 + MAC_LEN;
/// The longest ticket, as text: [`PREFIX`] and the base64url of [`MAX_BYTES`].
pub const MAX_LEN: usize = PREFIX.len() + max_encoded();

const fn max_encoded() -> usize {
    match base64::encoded_len(MAX_BYTES, false) {
        Some(n) => n,
        None => panic!("the longest ticket has an encoded length"),
    }
}

/// The scope ids of one request: inline for up to four, as [`crate::policy::Scopes`] are.
pub type ScopeIds = SmallVec<[u32; 4]>;

/// What a ticket says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ticket {
    /// The id the request's concurrency slots are held under.
    pub id: TicketId,
    /// Who was admitted.
    pub caller: Key,
    /// Nanoseconds since the epoch after which the ticket closes nothing.
    pub expires: Nanos,
    /// What admission charged the request (its cost).
    pub cost: u32,
    /// The caller's plan when it was admitted.
    pub plan: Arc<str>,
    /// Every scope of the request, dry-run ones too, in the order checked.
    pub scopes: ScopeIds,
}

/// Why a ticket could not be minted or read. Messages never quote the ticket.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketError {
    /// Not a ticket of this format: no `qt1.` prefix, not base64url, too short or too long, or
    /// fields that do not add up.
    #[error("malformed ticket: {why}")]
    Malformed { why: &'static str },
    /// Well-formed, but its MAC does not match: forged, altered, or minted under another
    /// `identity.hash_key`.
    #[error("the ticket was not issued by this service (its MAC does not match)")]
    Forged,
    /// `qtN.` with a version this service does not read.
    #[error("unsupported ticket version qt{version} (this service reads qt1)")]
    Unsupported { version: u32 },
    /// Minting only: the plan name is longer than 255 bytes, or the request has more than 255
    /// scopes.
    #[error("cannot mint a ticket: {what} is {len} (at most 255)")]
    TooLarge { what: &'static str, len: usize },
}

/// Mints and reads tickets under one MAC key, derived from the identity hash key.
#[derive(Clone)]
pub struct Minter {
    key: [u8; 32],
}

impl fmt::Debug for Minter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Minter(..)")
    }
}

impl Minter {
    /// The minter for the secret behind `hasher` (`identity.hash_key`): replicas and restarts
    /// with the same secret read each other's tickets.
    pub fn new(hasher: &Hasher) -> Minter {
        Minter { key: hasher.derive_key(CONTEXT) }
    }

    /// The ticket as text: `qt1.` and base64url, at most [`MAX_LEN`] bytes, a valid header
    /// value. [`TicketError::TooLarge`] if the plan name or the scope list does not fit.
    pub fn mint(&self, ticket: &Ticket) -> Result<String, TicketError> {
        let too_large = |what, len| TicketError::TooLarge { what, len };
        let plan_len = u8::try_from(ticket.plan.len())
            .map_err(|_| too_large("the plan name's length", ticket.plan.len()))?;
        let count = u8::try_from(ticket.scopes.len())
            .map_err(|_| too_large("the number of scopes", ticket.scopes.len()))?;
        let mut bytes = Vec::with_capacity(FIXED + 2 + ticket.plan.len() + 4 * ticket.scopes.len() + MAC_LEN);
        bytes.extend_from_slice(&ticket.id.to_be_bytes());
        bytes.extend_from_slice(&ticket.caller.0.to_be_bytes());
        bytes.extend_from_slice(&ticket.expires.to_be_bytes());
        bytes.extend_from_slice(&ticket.cost.to_be_bytes());
        bytes.push(plan_len);
        bytes.extend_from_slice(ticket.plan.as_bytes());
        bytes.push(count);
        for scope in &ticket.scopes {
            bytes.extend_from_slice(&scope.to_be_bytes());
        }
        let mac = self.mac(&bytes);
        bytes.extend_from_slice(&mac);
        let mut text = String::with_capacity(MAX_LEN.min(PREFIX.len() + bytes.len().div_ceil(3) * 4));
        text.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&bytes, &mut text);
        Ok(text)
    }

    /// Reads a ticket this minter (or one with the same secret) minted. Does not look at its
    /// expiry: the caller compares [`Ticket::expires`] with its `now`.
    pub fn read(&self, text: &str) -> Result<Ticket, TicketError> {
        let malformed = |why| TicketError::Malformed { why };
        let encoded = body(text)?;
        if encoded.len() > MAX_LEN - PREFIX.len() {
            return Err(malformed("too long"));
        }
        // The engine refuses padding and non-zero trailing bits, so one ticket has exactly one
        // spelling: any other character changes the bytes, and with them the MAC.
        let bytes = URL_SAFE_NO_PAD.decode(encoded).map_err(|_| malformed("not base64url"))?;
        let (payload, mac) = bytes.split_last_chunk::<MAC_LEN>().ok_or(malformed("too short"))?;
        if !constant_time_eq::constant_time_eq_16(&self.mac(payload), mac) {
            return Err(TicketError::Forged);
        }
        parse(payload).ok_or(malformed("its fields do not add up"))
    }

    fn mac(&self, payload: &[u8]) -> [u8; MAC_LEN] {
        let hash = blake3::keyed_hash(&self.key, payload);
        *hash.as_bytes().first_chunk::<MAC_LEN>().expect("16 of 32 bytes")
    }
}

/// The base64url part of `qt1.<base64url>`; a `qtN.` of another version is
/// [`TicketError::Unsupported`].
fn body(text: &str) -> Result<&str, TicketError> {
    const NOT_A_TICKET: TicketError = TicketError::Malformed { why: "expected qt1.<base64url>" };
    let (head, encoded) = text.split_once('.').ok_or(NOT_A_TICKET)?;
    match head.strip_prefix("qt") {
        Some("1") => Ok(encoded),
        // A canonical decimal (no leading zero) of at most 9 digits fits a u32.
        Some(v)
            if (1..=9).contains(&v.len()) && !v.starts_with('0') && v.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Err(TicketError::Unsupported { version: v.parse().map_err(|_| NOT_A_TICKET)? })
        }
        _ => Err(NOT_A_TICKET),
    }
}

/// The payload's fields, if they fill it exactly.
fn parse(payload: &[u8]) -> Option<Ticket> {
    let mut r = Fields(payload);
    let id = u128::from_be_bytes(r.array()?);
    let caller = Key(u128::from_be_bytes(r.array()?));
    let expires = u64::from_be_bytes(r.array()?);
    let cost = u32::from_be_bytes(r.array()?);
    let [plan_len] = r.array()?;
    let plan = std::str::from_utf8(r.bytes(usize::from(plan_len))?).ok()?;
    let [count] = r.array()?;
    let scopes = (0..count).map(|_| r.array().map(u32::from_be_bytes)).collect::<Option<ScopeIds>>()?;
    r.0.is_empty().then(|| Ticket { id, caller, expires, cost, plan: Arc::from(plan), scopes })
}

/// What is left of a payload being read.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minter(secret: &[u8]) -> Minter {
        Minter::new(&Hasher::new(secret))
    }

    fn ticket(plan: &str, scopes: &[u32]) -> Ticket {
        Ticket {
            id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
            caller: Key(0x1a2b_3c4d << 96),
            expires: 1_795_460_700_000_000_000,
            cost: 5,
            plan: Arc::from(plan),
            scopes: scopes.iter().copied().collect(),
        }
    }

    #[test]
    fn a_minted_ticket_reads_back_and_is_a_header_value() {
        let m = minter(b"0123456789abcdef");
        let t = ticket("pro", &[0, 7, u32::MAX]);
        let text = m.mint(&t).unwrap();
        assert!(text.starts_with("qt1."), "{text}");
        assert!(http::HeaderValue::from_str(&text).is_ok());
        assert_eq!(m.read(&text).unwrap(), t);
    }

    #[test]
    fn the_longest_ticket_fits_max_len_and_a_longer_one_is_not_minted() {
        let m = minter(b"0123456789abcdef");
        let scopes: Vec<u32> = (0..255).collect();
        let longest = ticket(&"p".repeat(255), &scopes);
        let text = m.mint(&longest).unwrap();
        assert_eq!(text.len(), MAX_LEN);
        assert_eq!(m.read(&text).unwrap(), longest);
        assert_eq!(
            m.mint(&ticket(&"p".repeat(256), &[0])),
            Err(TicketError::TooLarge { what: "the plan name's length", len: 256 })
        );
        let scopes: Vec<u32> = (0..256).collect();
        assert_eq!(
            m.mint(&ticket("pro", &scopes)),
            Err(TicketError::TooLarge { what: "the number of scopes", len: 256 })
        );
    }

    #[test]
    fn a_ticket_minted_under_another_hash_key_is_forged() {
        let text = minter(b"0123456789abcdef").mint(&ticket("pro", &[0])).unwrap();
        assert_eq!(minter(b"0123456789abcdeF").read(&text), Err(TicketError::Forged));
    }

    #[test]
    fn other_versions_and_garbage_are_told_apart() {
        let m = minter(b"0123456789abcdef");
        let body = &m.mint(&ticket("pro", &[0])).unwrap()[PREFIX.len()..];
        assert_eq!(m.read(&format!("qt2.{body}")), Err(TicketError::Unsupported { version: 2 }));
        assert_eq!(m.read("qt4294967295.x"), Err(TicketError::Malformed { why: "expected qt1.<base64url>" }));
        for garbage in ["", ".", "qt1", "qt01.x", "QT1.x", "qt.x", "bearer qt1.x", "qt-1.x", "qt1x.abc"] {
            assert!(
                matches!(m.read(garbage), Err(TicketError::Malformed { .. })),
                "{garbage:?}: {:?}",
                m.read(garbage)
            );
        }
        assert_eq!(m.read("qt1."), Err(TicketError::Malformed { why: "too short" }));
        assert_eq!(m.read("qt1.a+b/"), Err(TicketError::Malformed { why: "not base64url" }));
        assert_eq!(m.read(&format!("qt1.{body}=")), Err(TicketError::Malformed { why: "not base64url" }));
        let long = format!("qt1.{}", "A".repeat(MAX_LEN));
        assert_eq!(m.read(&long), Err(TicketError::Malformed { why: "too long" }));
    }

    #[test]
    fn a_valid_mac_over_fields_that_do_not_add_up_is_still_refused() {
        // Only a minting bug could produce one; reading must not trust the MAC for the layout.
        let m = minter(b"0123456789abcdef");
        for payload in [vec![0u8; FIXED], vec![0u8; FIXED + 3], [vec![0u8; FIXED], vec![1, 0xff, 0]].concat()]
        {
            let mut bytes = payload.clone();
            bytes.extend_from_slice(&m.mac(&payload));
            let text = format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(&bytes));
            assert_eq!(m.read(&text), Err(TicketError::Malformed { why: "its fields do not add up" }));
        }
    }

    #[test]
    fn errors_never_quote_the_ticket() {
        let m = minter(b"0123456789abcdef");
        let text = minter(b"another secret!!").mint(&ticket("pro", &[0])).unwrap();
        for input in [text.clone(), text[..text.len() - 1].to_owned(), format!("qt1.{}", &text[5..])] {
            let e = m.read(&input).unwrap_err().to_string();
            assert!(!e.contains(&input[4..12]), "{e}");
        }
    }
}
