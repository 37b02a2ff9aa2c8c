//! The snapshot loader: `snapshot::restore` on any bytes, as `snapshot::load` reads a file.
//!
//! Input: a mode byte, then the rest. Mode bit 0 clear: the rest is the file. Set: the rest is
//! an entry count (u64, little-endian) and a body, which this target seals with a header (magic,
//! version, its key id, length, checksum), so the fuzzer reaches the entry parser that the
//! checksum otherwise guards. Mode bit 1 set: the loader expects the key id the file's header
//! names, so that a real snapshot (written under any hash key) is restored, not refused as
//! foreign.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use quotagate::limiter::{Nanos, SECOND};
use quotagate::store::{snapshot, Memory};

/// 2026-03-10T12:00:00Z.
const NOW: Nanos = 1_773_144_000 * SECOND;
const KEY_ID: u64 = 0x5eed;
const CAPACITY: u64 = 64;
const HEADER: usize = 68;
/// The smallest entry: caller, scope, expiry, no limit states.
const ENTRY: usize = 16 + 4 + 8 + 1;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let bytes = if mode & 1 == 1 { seal(rest) } else { rest.to_vec() };
    let key_id = match bytes.get(12..20) {
        Some(id) if mode & 2 == 2 => u64::from_le_bytes(id.try_into().expect("8 bytes")),
        _ => KEY_ID,
    };
    let memory = Memory::new(CAPACITY);
    match snapshot::restore(&memory, &bytes, Path::new("fuzz.snap"), key_id, NOW) {
        Ok(loaded) => {
            let restored = loaded.entries;
            let most = (bytes.len() - HEADER) / ENTRY;
            assert!(
                restored as u64 <= CAPACITY && restored <= most,
                "{restored} entries from {} bytes",
                bytes.len()
            );
            assert_eq!(memory.live_keys(), restored as u64);
        }
        Err(e) => {
            assert_eq!(memory.live_keys(), 0, "refused ({e}) after restoring some");
            assert!(e.to_string().contains("fuzz.snap"), "{e}");
        }
    }
});

fn seal(rest: &[u8]) -> Vec<u8> {
    let (count, body) = rest.split_first_chunk::<8>().map_or(([0; 8], rest), |(c, b)| (*c, b));
    let mut fields = Vec::with_capacity(HEADER);
    fields.extend_from_slice(b"QGSNAP\r\n");
    fields.extend_from_slice(&1u32.to_le_bytes());
    fields.extend_from_slice(&KEY_ID.to_le_bytes());
    fields.extend_from_slice(&count);
    fields.extend_from_slice(&(body.len() as u64).to_le_bytes());
    let mut hasher = blake3::Hasher::new();
    hasher.update(body);
    hasher.update(&fields);
    [&fields[..], hasher.finalize().as_bytes(), body].concat()
}
