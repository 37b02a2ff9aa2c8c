//! Tickets, for any content: what is minted reads back the same, and no single-character change
//! or truncation of a ticket is accepted (each is malformed, of another version, or fails its
//! MAC), nor is a ticket minted under another hash key.

use std::sync::Arc;

use proptest::prelude::*;
use quotagate::identity::{Hasher, Key};
use quotagate::ticket::{Minter, Ticket, TicketError};

fn any_ticket() -> impl Strategy<Value = Ticket> {
    (
        any::<u128>(),
        any::<u128>(),
        any::<u64>(),
        any::<u32>(),
        "\\PC{0,40}".prop_filter("at most 255 bytes", |p| p.len() <= 255),
        prop::collection::vec(any::<u32>(), 0..12),
    )
        .prop_map(|(id, caller, expires, cost, plan, scopes)| Ticket {
            id,
            caller: Key(caller),
            expires,
            cost,
            plan: Arc::from(plan),
            scopes: scopes.into_iter().collect(),
        })
}

fn minter() -> Minter {
    Minter::new(&Hasher::new(b"0123456789abcdef"))
}

proptest! {
    #[test]
    fn a_minted_ticket_reads_back_as_minted(t in any_ticket()) {
        let m = minter();
        let text = m.mint(&t).unwrap();
        prop_assert!(text.len() <= quotagate::ticket::MAX_LEN);
        prop_assert!(http::HeaderValue::from_str(&text).is_ok());
        prop_assert_eq!(m.read(&text).unwrap(), t);
    }

    #[test]
    fn every_single_character_change_is_refused(t in any_ticket(), at in any::<prop::sample::Index>(), to in any::<char>()) {
        let m = minter();
        let text = m.mint(&t).unwrap();
        let mut chars: Vec<char> = text.chars().collect();
        let i = at.index(chars.len());
        prop_assume!(chars[i] != to);
        chars[i] = to;
        let changed: String = chars.into_iter().collect();
        prop_assert!(m.read(&changed).is_err(), "{changed:?} was accepted");
    }

    #[test]
    fn every_base64url_character_change_fails_the_mac_or_the_framing(t in any_ticket(), at in any::<prop::sample::Index>(), to in prop::sample::select(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".chars().collect::<Vec<_>>())) {
        // The likeliest forgery: a character of the same alphabet, so the text still decodes.
        let m = minter();
        let text = m.mint(&t).unwrap();
        let i = 4 + at.index(text.len() - 4);
        prop_assume!(text.as_bytes()[i] != to as u8);
        let changed = format!("{}{to}{}", &text[..i], &text[i + 1..]);
        let e = m.read(&changed).unwrap_err();
        prop_assert!(matches!(e, TicketError::Forged | TicketError::Malformed { .. }), "{e:?}");
    }

    #[test]
    fn every_truncation_and_extension_is_refused(t in any_ticket(), extra in "[A-Za-z0-9_-]{1,8}") {
        let m = minter();
        let text = m.mint(&t).unwrap();
        for n in 0..text.len() {
            prop_assert!(m.read(&text[..n]).is_err(), "{:?} was accepted", &text[..n]);
        }
        let extended = format!("{text}{extra}");
        prop_assert!(m.read(&extended).is_err(), "{:?} was accepted", extended);
    }

    #[test]
    fn a_ticket_of_another_hash_key_is_forged(t in any_ticket(), secret in prop::collection::vec(any::<u8>(), 16..40)) {
        prop_assume!(secret != b"0123456789abcdef");
        let foreign = Minter::new(&Hasher::new(&secret)).mint(&t).unwrap();
        prop_assert_eq!(minter().read(&foreign), Err(TicketError::Forged));
    }

    #[test]
    fn reading_any_string_never_panics(s in "\\PC{0,200}|qt1\\.[A-Za-z0-9_-]{0,200}") {
        let _ = minter().read(&s);
    }
}
