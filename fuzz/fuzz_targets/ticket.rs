//! The ticket reader: `Minter::read` on any string, as `POST /v1/tickets/close` reads the
//! `ticket` a backend sends. Input: the ticket's text (bytes that are not UTF-8 are skipped: a
//! JSON string is UTF-8). The corpus holds tickets minted under this target's hash key, so the
//! fuzzer mutates real tickets.
//!
//! Invariants: reading never panics; a ticket read is the one minting it again spells, byte
//! for byte (so no edit of a ticket is accepted as the same or another ticket); an error's
//! message is short whatever the input, so it cannot carry it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quotagate::identity::Hasher;
use quotagate::ticket::Minter;

/// The `identity.hash_key` the corpus tickets were minted under.
const HASH_KEY: &[u8] = b"fuzzing-hash-key-not-a-secret-0123456789";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let minter = Minter::new(&Hasher::new(HASH_KEY));
    match minter.read(text) {
        Ok(ticket) => {
            let again = minter.mint(&ticket).expect("a ticket read fits a ticket");
            assert_eq!(again, text, "{ticket:?} reads from a text it does not mint");
        }
        Err(e) => {
            // Static text (and at most a version number): a message cannot carry the input.
            let message = e.to_string();
            assert!(message.len() <= 80, "{message:?} is {} bytes", message.len());
        }
    }
});
