//! Snapshots of the memory store: every live entry written to one file on an interval and at
//! shutdown ([`keep`]), and read back at start ([`load`]), so a restart loses at most one interval
//! of counts. What to do with a snapshot that cannot be used (log it, start from zero) is the
//! server's business; this module only refuses it whole, before restoring anything.
//!
//! The format is little-endian binary, version 2 (version 1 is version 2 without overrides):
//!
//! ```text
//! header (68 bytes)
//!   magic     8   "QGSNAP\r\n"
//!   version   u32 2, or 1 when there are no overrides
//!   key_id    u64 Hasher::key_id of the identity.hash_key the callers were hashed with
//!   count     u64 entries in the body
//!   body_len  u64 bytes in the body
//!   checksum  32  BLAKE3 of the body followed by the 36 header bytes above
//! body: `count` entries
//!   caller    2 x u64
//!   scope     u32
//!   expires   u64 nanoseconds since the epoch after which the entry no longer matters
//!   n         u8  limit states, then n times:
//!     limit   u32, at u64, count u32, previous u32 (limiter::State)
//! then (version 2) the overrides of the admin API, to the end of the body: each
//!   caller    u128
//!   len       u32
//!   value     len bytes, a [`Record`]'s value, which this module does not read
//! ```
//!
//! A snapshot without overrides is written as version 1, which a build that knows no overrides
//! still reads; this build reads both.
//!
//! A file is written beside the snapshot and renamed over it after an fsync, so a reader finds
//! the old snapshot or the new one, never half of one.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use smallvec::SmallVec;

use super::memory::{Memory, Saved};
use crate::clock::Clock;
use crate::config;
use crate::limiter::{Nanos, State};

const MAGIC: [u8; 8] = *b"QGSNAP\r\n";
/// The version written when there are overrides; without, [`PLAIN`].
const VERSION: u32 = 2;
/// Counters only.
const PLAIN: u32 = 1;
/// Header bytes covered by the checksum: magic, version, key id, count, body length.
const FIELDS: usize = 8 + 4 + 8 + 8 + 8;
const HEADER: usize = FIELDS + 32;

/// One override kept beside the counters: its caller's key and its value, opaque here (what
/// `crate::overrides` reads back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub caller: u128,
    pub value: Vec<u8>,
}

/// What a snapshot restored: how many counter entries, and the overrides it holds (to be
/// handed back to their owner).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Loaded {
    pub entries: usize,
    pub overrides: Vec<Record>,
}

/// Why a snapshot was not loaded. Nothing was restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// No file at the path: a first start.
    #[error("no snapshot at {}", path.display())]
    Missing { path: PathBuf },
    #[error("snapshot {} is truncated ({len} bytes, expected {expected})", path.display())]
    Truncated { path: PathBuf, len: u64, expected: u64 },
    #[error("{} is not a quotagate snapshot", path.display())]
    NotASnapshot { path: PathBuf },
    #[error("snapshot {} has format version {version} (this build reads {PLAIN} and {VERSION})", path.display())]
    Version { path: PathBuf, version: u32 },
    /// Written under another `identity.hash_key`: its callers would never match.
    #[error("snapshot {} was written under another identity.hash_key", path.display())]
    Foreign { path: PathBuf },
    #[error("snapshot {} fails its checksum", path.display())]
    Checksum { path: PathBuf },
    /// The checksum holds but the body does not parse: written by a broken writer.
    #[error("snapshot {} is malformed: {reason}", path.display())]
    Malformed { path: PathBuf, reason: &'static str },
    #[error("cannot read snapshot {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
}

/// Writes every live entry of `memory` and every record of `overrides` to `path`, atomically:
/// into a temporary file in the same directory, fsynced and renamed over `path` (the temporary
/// file is removed on error). `key_id` is [`Hasher::key_id`](crate::identity::Hasher::key_id)
/// of the key the callers were hashed with; entries expired at `now` are left out. Returns the
/// number of entries written, never more than the store can hold. Blocking: file I/O, and a
/// pass over the whole store.
pub fn write(
    memory: &Memory,
    overrides: &[Record],
    path: &Path,
    key_id: u64,
    now: Nanos,
) -> io::Result<usize> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{} names no file", path.display()))
    })?;
    let (tmp, file) = temporary(path, name)?;
    let mut out = BufWriter::with_capacity(1 << 16, file);
    // The header is written last, once the count and the checksum are known, so the body is
    // streamed instead of held in memory.
    out.write_all(&[0; HEADER])?;
    let mut hasher = blake3::Hasher::new();
    let (mut count, mut body_len) = (0u64, 0u64);
    let mut buf = Vec::with_capacity(256);
    // A request with more scopes than the store holds may briefly leave it over capacity; the
    // snapshot never is.
    for saved in memory.entries().take(usize::try_from(memory.capacity()).unwrap_or(usize::MAX)) {
        buf.clear();
        if saved.expires <= now || !encode(&saved, &mut buf) {
            continue;
        }
        hasher.update(&buf);
        out.write_all(&buf)?;
        count += 1;
        body_len += buf.len() as u64;
    }
    for record in overrides {
        buf.clear();
        let Ok(len) = u32::try_from(record.value.len()) else { continue };
        buf.extend_from_slice(&record.caller.to_le_bytes());
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&record.value);
        hasher.update(&buf);
        out.write_all(&buf)?;
        body_len += buf.len() as u64;
    }
    let version = if overrides.is_empty() { PLAIN } else { VERSION };
    let mut fields = [0u8; FIELDS];
    fields[..8].copy_from_slice(&MAGIC);
    fields[8..12].copy_from_slice(&version.to_le_bytes());
    fields[12..20].copy_from_slice(&key_id.to_le_bytes());
    fields[20..28].copy_from_slice(&count.to_le_bytes());
    fields[28..36].copy_from_slice(&body_len.to_le_bytes());
    hasher.update(&fields);
    let mut file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.seek(SeekFrom::Start(0))?;
    file.write_all(&fields)?;
    file.write_all(hasher.finalize().as_bytes())?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp.0, path)?;
    std::mem::forget(tmp);
    // Makes the rename itself durable. Best effort: some file systems refuse to sync a
    // directory, and the snapshot is in place either way.
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(usize::try_from(count).expect("no more entries than fit in memory"))
}

/// Creates the temporary file beside `path`, under a name no other writer uses: random, and
/// created only if nothing is there (`O_EXCL`, which also refuses a symlink planted at the
/// name). A process id would not do: it is 1 in every container, and containers share volumes.
fn temporary(path: &Path, name: &std::ffi::OsStr) -> io::Result<(Temporary, File)> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Hashed callers and their usage: nobody else's business.
        options.mode(0o600);
    }
    let mut tries = 0;
    loop {
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".tmp.{:016x}", fastrand::u64(..)));
        let tmp = path.with_file_name(tmp_name);
        match options.open(&tmp) {
            Ok(file) => return Ok((Temporary(tmp), file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 8 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// A file removed when dropped: the temporary file, until it is renamed.
struct Temporary(PathBuf);

impl Drop for Temporary {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Appends `saved` to `buf`; false if it cannot be written (more than 255 limits in a scope,
/// which the u8 limit index of a verdict rules out).
fn encode(saved: &Saved, buf: &mut Vec<u8>) -> bool {
    let Ok(n) = u8::try_from(saved.states.len()) else { return false };
    buf.extend_from_slice(&saved.caller[0].to_le_bytes());
    buf.extend_from_slice(&saved.caller[1].to_le_bytes());
    buf.extend_from_slice(&saved.scope.to_le_bytes());
    buf.extend_from_slice(&saved.expires.to_le_bytes());
    buf.push(n);
    for (limit, state) in &saved.states {
        buf.extend_from_slice(&limit.to_le_bytes());
        buf.extend_from_slice(&state.at.to_le_bytes());
        buf.extend_from_slice(&state.count.to_le_bytes());
        buf.extend_from_slice(&state.previous.to_le_bytes());
    }
    true
}

/// Restores into `memory` the entries of the snapshot at `path` that have not expired at `now`,
/// each with its expiry, and returns how many, with the snapshot's overrides. `key_id` must be
/// the one the snapshot was written with (see [`write`]). The whole file is checked before
/// anything is restored: on error, nothing was. An entry that exists already is kept (its
/// counts are newer), and no more entries are restored than the store can hold. Blocking: file
/// I/O.
pub fn load(memory: &Memory, path: &Path, key_id: u64, now: Nanos) -> Result<Loaded, SnapshotError> {
    let (header, body) = read(path, key_id)?;
    Ok(put(memory, &header, &body, now))
}

/// [`load`] from a snapshot's bytes instead of a file: the same checks, the same restore.
/// `origin` names the snapshot in errors. Allocates nothing in proportion to what the header
/// claims, only to the entries restored.
pub fn restore(
    memory: &Memory,
    bytes: &[u8],
    origin: &Path,
    key_id: u64,
    now: Nanos,
) -> Result<Loaded, SnapshotError> {
    let len = bytes.len() as u64;
    let header = Header::parse(origin, &bytes[..bytes.len().min(HEADER)], len)?;
    check_body(origin, &header, &bytes[HEADER..], key_id)?;
    Ok(put(memory, &header, &bytes[HEADER..], now))
}

/// Restores the entries of a checked body that have not expired at `now`, at most as many as
/// the store holds, and reads its overrides.
fn put(memory: &Memory, header: &Header, body: &[u8], now: Nanos) -> Loaded {
    let capacity = usize::try_from(memory.capacity()).unwrap_or(usize::MAX);
    let mut entries = Entries(body);
    let mut restored = 0;
    for saved in Iterator::take(entries.by_ref(), usize::try_from(header.count).unwrap_or(usize::MAX)) {
        if restored < capacity && saved.expires > now {
            restored += usize::from(memory.restore(saved));
        }
    }
    Loaded { entries: restored, overrides: Records(entries.0).collect() }
}

/// Reads and checks the snapshot at `path`; returns its header and body, whose every entry and
/// override parses.
fn read(path: &Path, key_id: u64) -> Result<(Header, Vec<u8>), SnapshotError> {
    let io = |source: io::Error| SnapshotError::Io { path: path.to_owned(), source };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SnapshotError::Missing { path: path.to_owned() })
        }
        Err(e) => return Err(io(e)),
    };
    let len = file.metadata().map_err(io)?.len();
    // The header first, so a wrong path to a large file is refused without reading it.
    let mut first = Vec::with_capacity(HEADER);
    (&mut file).take(HEADER as u64).read_to_end(&mut first).map_err(io)?;
    let header = Header::parse(path, &first, len)?;
    let too_large = SnapshotError::Malformed { path: path.to_owned(), reason: "too large" };
    let mut body = Vec::with_capacity(usize::try_from(header.body_len).map_err(|_| too_large)?);
    file.read_to_end(&mut body).map_err(io)?;
    if body.len() as u64 != header.body_len {
        // The file changed under us; whoever writes snapshots renames, so it should not.
        let expected = header.body_len + HEADER as u64;
        return Err(SnapshotError::Truncated { path: path.to_owned(), len, expected });
    }
    check_body(path, &header, &body, key_id)?;
    Ok((header, body))
}

/// A snapshot's header, checked against the length of the whole snapshot.
struct Header {
    fields: [u8; FIELDS],
    checksum: [u8; 32],
    version: u32,
    key_id: u64,
    count: u64,
    body_len: u64,
}

impl Header {
    /// Parses `first`, the snapshot's first bytes (all of them if fewer than a header); `len`
    /// is the length of the whole snapshot, which must be a header and `body_len` bytes.
    fn parse(origin: &Path, first: &[u8], len: u64) -> Result<Header, SnapshotError> {
        let seen = first.len().min(MAGIC.len());
        if first[..seen] != MAGIC[..seen] {
            return Err(SnapshotError::NotASnapshot { path: origin.to_owned() });
        }
        let truncated = |expected: u64| SnapshotError::Truncated { path: origin.to_owned(), len, expected };
        let Some((fields, rest)) = first.split_first_chunk::<FIELDS>() else {
            return Err(truncated(HEADER as u64));
        };
        let Some(checksum) = rest.first_chunk::<32>() else { return Err(truncated(HEADER as u64)) };
        let u32_at = |i: usize| u32::from_le_bytes(fields[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(fields[i..i + 8].try_into().expect("8 bytes"));
        let version = u32_at(8);
        if version != VERSION && version != PLAIN {
            return Err(SnapshotError::Version { path: origin.to_owned(), version });
        }
        let (key_id, count, body_len) = (u64_at(12), u64_at(20), u64_at(28));
        let expected = body_len.saturating_add(HEADER as u64);
        if len < expected {
            return Err(truncated(expected));
        }
        if len > expected {
            return Err(SnapshotError::Malformed {
                path: origin.to_owned(),
                reason: "bytes after the last entry",
            });
        }
        Ok(Header { fields: *fields, checksum: *checksum, version, key_id, count, body_len })
    }
}

/// Checks `body` against `header`'s checksum and count, and that it was written under `key_id`.
fn check_body(origin: &Path, header: &Header, body: &[u8], key_id: u64) -> Result<(), SnapshotError> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(body);
    hasher.update(&header.fields);
    // `blake3::Hash` compares in constant time; not that it matters here.
    if hasher.finalize() != blake3::Hash::from_bytes(header.checksum) {
        return Err(SnapshotError::Checksum { path: origin.to_owned() });
    }
    if header.key_id != key_id {
        return Err(SnapshotError::Foreign { path: origin.to_owned() });
    }
    let malformed = |reason| SnapshotError::Malformed { path: origin.to_owned(), reason };
    let mut entries = Entries(body);
    let counted = usize::try_from(header.count).unwrap_or(usize::MAX);
    let parsed = Iterator::take(entries.by_ref(), counted).count() as u64;
    if parsed < header.count && !entries.0.is_empty() {
        return Err(malformed("an entry is cut short"));
    }
    if parsed != header.count || (header.version == PLAIN && !entries.0.is_empty()) {
        return Err(malformed("the entry count does not match the header"));
    }
    let mut records = Records(entries.0);
    records.by_ref().for_each(drop);
    if !records.0.is_empty() {
        return Err(malformed("an override is cut short"));
    }
    Ok(())
}

/// The overrides after a body's entries; stops at the first that does not parse.
struct Records<'a>(&'a [u8]);

impl Iterator for Records<'_> {
    type Item = Record;

    fn next(&mut self) -> Option<Record> {
        let (caller, rest) = self.0.split_first_chunk::<16>()?;
        let (len, rest) = rest.split_first_chunk::<4>()?;
        let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
        let value = rest.get(..len)?.to_vec();
        self.0 = &rest[len..];
        Some(Record { caller: u128::from_le_bytes(*caller), value })
    }
}

/// The entries of a body with their expiry; stops at the first that does not parse, leaving
/// the rest unread.
struct Entries<'a>(&'a [u8]);

impl Entries<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }

    fn entry(&mut self) -> Option<Saved> {
        let caller = [self.u64()?, self.u64()?];
        let scope = self.u32()?;
        let expires = self.u64()?;
        let [n] = self.take::<1>()?;
        let mut states = SmallVec::with_capacity(usize::from(n));
        for _ in 0..n {
            let limit = self.u32()?;
            let state = State { at: self.u64()?, count: self.u32()?, previous: self.u32()? };
            states.push((limit, state));
        }
        Some(Saved { caller, scope, expires, states })
    }
}

impl Iterator for Entries<'_> {
    type Item = Saved;

    fn next(&mut self) -> Option<Self::Item> {
        let before = self.0;
        let entry = self.entry();
        if entry.is_none() {
            self.0 = before;
        }
        entry
    }
}

/// Keeps the snapshot at `snapshot.path` up to date: writes it every `snapshot.interval` until
/// `stop` completes, then once more, and returns. Await it after the server has stopped taking
/// checks, so the last write holds every count.
///
/// The store is reached through `owner` (cloned for each write, e.g. the server's `AppState`)
/// and `memory`, so that each write can run on a blocking thread, which needs owned data;
/// `overrides` gives the overrides to keep beside the counters, as of each write.
/// `key_id` gives [`Hasher::key_id`](crate::identity::Hasher::key_id) of the key callers are
/// hashed with *now*, and is asked at every write: after a reload that changes
/// `identity.hash_key`, snapshots are stamped with the new key, which is the one the next start
/// reads them with. (Entries counted under the old key are still written; they match no caller
/// under the new one and expire with their windows.) Errors are logged with the path and retried
/// at the next interval; writes are logged at debug, the last one at info.
pub async fn keep<S>(
    owner: S,
    memory: fn(&S) -> &Memory,
    overrides: fn(&S, Nanos) -> Vec<Record>,
    key_id: fn(&S) -> u64,
    snapshot: config::Snapshot,
    clock: Clock,
    stop: impl Future<Output = ()>,
) where
    S: Clone + Send + 'static,
{
    let period = snapshot.interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    // A write that takes longer than the interval pushes the next one back instead of
    // starting a burst of writes to catch up.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            _ = ticker.tick() => write_logged(&owner, memory, overrides, key_id(&owner), &snapshot.path, &clock, false).await,
        }
    }
    write_logged(&owner, memory, overrides, key_id(&owner), &snapshot.path, &clock, true).await;
}

async fn write_logged<S>(
    owner: &S,
    memory: fn(&S) -> &Memory,
    overrides: fn(&S, Nanos) -> Vec<Record>,
    key_id: u64,
    path: &Path,
    clock: &Clock,
    last: bool,
) where
    S: Clone + Send + 'static,
{
    let (owner, target) = (owner.clone(), path.to_owned());
    let now = clock.now();
    let started = Instant::now();
    // `spawn_blocking`, not `block_in_place`: a write walks the whole cache and fsyncs, which
    // must not hold an async worker, and unlike `block_in_place` it also works on a
    // current-thread runtime (tests). Writes never overlap: each is awaited before the next.
    let written = tokio::task::spawn_blocking(move || {
        write(memory(&owner), &overrides(&owner, now), &target, key_id, now)
    })
    .await;
    let took = started.elapsed();
    let path = path.display();
    match written {
        Ok(Ok(count)) if last => tracing::info!(%path, count, ?took, "snapshot written"),
        Ok(Ok(count)) => tracing::debug!(%path, count, ?took, "snapshot written"),
        Ok(Err(error)) if last => {
            tracing::error!(%path, %error, "cannot write snapshot; counts since the last one are lost")
        }
        Ok(Err(error)) => {
            tracing::warn!(%path, %error, "cannot write snapshot; retrying at the next interval")
        }
        Err(error) => tracing::error!(%path, %error, "the snapshot writer failed"),
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::identity::Key;
    use crate::limiter::{Algorithm, Limit, Window, SECOND};
    use crate::store::{Counting, Scope};

    /// 2026-03-10T12:00:00Z.
    const NOW: Nanos = 1_773_144_000 * SECOND;
    const KEY_ID: u64 = 0x5eed;

    fn limits() -> Vec<Limit> {
        let fixed =
            |requests, window| Algorithm::Fixed { requests: NonZeroU32::new(requests).unwrap(), window };
        vec![Limit::new("minute", fixed(5, Window::Minute)), Limit::new("month", fixed(3, Window::Month))]
    }

    fn hit(memory: &Memory, caller: u128, limits: &[Limit], now: Nanos) -> bool {
        memory.check(Key(caller), &[Scope::enforced(0, limits)], now, Counting::AllowedOnly).is_allowed()
    }

    /// A store where callers 1..=n have made one request each and caller 1 two more.
    fn store(n: u128) -> Memory {
        let memory = Memory::new(1000);
        let limits = limits();
        for caller in 1..=n {
            assert!(hit(&memory, caller, &limits, NOW));
        }
        assert!(hit(&memory, 1, &limits, NOW) && hit(&memory, 1, &limits, NOW));
        memory
    }

    fn sorted(memory: &Memory) -> Vec<Saved> {
        let mut all: Vec<Saved> = memory.entries().collect();
        all.sort_by_key(|s| (s.caller, s.scope));
        all
    }

    #[test]
    fn a_snapshot_restores_every_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        let before = store(50);
        assert_eq!(write(&before, &[], &path, KEY_ID, NOW).unwrap(), 50);

        let after = Memory::new(1000);
        assert_eq!(load(&after, &path, KEY_ID, NOW + SECOND).unwrap().entries, 50);
        assert_eq!(sorted(&after), sorted(&before));
        // Caller 1 used all three of its monthly requests before the restart.
        let limits = limits();
        assert!(!hit(&after, 1, &limits, NOW + 2 * SECOND));
        assert!(hit(&after, 2, &limits, NOW + 2 * SECOND));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left behind");
    }

    #[test]
    fn a_restored_entry_keeps_its_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        let before = store(1);
        let expires = before.entries().next().unwrap().expires;
        write(&before, &[], &path, KEY_ID, NOW).unwrap();
        let after = Memory::new(10);
        load(&after, &path, KEY_ID, NOW + 10 * SECOND).unwrap();
        assert_eq!(after.entries().next().unwrap().expires, expires);
    }

    #[test]
    fn expired_entries_are_not_restored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        let memory = Memory::new(100);
        let minute = [limits().remove(0)];
        let month = [limits().remove(1)];
        assert!(hit(&memory, 1, &minute, NOW));
        assert!(hit(&memory, 2, &month, NOW));
        assert_eq!(write(&memory, &[], &path, KEY_ID, NOW).unwrap(), 2);

        // An hour later the minute window is long over; the month is not.
        let after = Memory::new(100);
        assert_eq!(load(&after, &path, KEY_ID, NOW + 3600 * SECOND).unwrap().entries, 1);
        assert_eq!(after.entries().map(|s| s.caller).collect::<Vec<_>>(), [[0, 2]]);
    }

    #[test]
    fn no_more_entries_than_the_store_holds_are_restored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        write(&store(50), &[], &path, KEY_ID, NOW).unwrap();
        let small = Memory::new(10);
        assert_eq!(load(&small, &path, KEY_ID, NOW).unwrap().entries, 10);
    }

    #[test]
    fn a_restore_keeps_newer_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        write(&store(1), &[], &path, KEY_ID, NOW).unwrap();
        let memory = Memory::new(10);
        let limits = limits();
        assert!(hit(&memory, 1, &limits, NOW));
        assert_eq!(load(&memory, &path, KEY_ID, NOW).unwrap().entries, 0);
        assert!(hit(&memory, 1, &limits, NOW) && hit(&memory, 1, &limits, NOW));
    }

    #[test]
    fn an_empty_store_writes_an_empty_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        assert_eq!(write(&Memory::new(10), &[], &path, KEY_ID, NOW).unwrap(), 0);
        assert_eq!(fs::metadata(&path).unwrap().len(), HEADER as u64);
        assert_eq!(load(&Memory::new(10), &path, KEY_ID, NOW).unwrap().entries, 0);
    }

    fn records() -> Vec<Record> {
        vec![
            Record { caller: 7 << 64 | 9, value: br#"{"plan":"pro"}"#.to_vec() },
            Record { caller: 3, value: Vec::new() },
        ]
    }

    #[test]
    fn overrides_are_kept_beside_the_counters() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        assert_eq!(write(&store(3), &records(), &path, KEY_ID, NOW).unwrap(), 3);
        assert_eq!(fs::read(&path).unwrap()[8..12], VERSION.to_le_bytes());
        let memory = Memory::new(10);
        let loaded = load(&memory, &path, KEY_ID, NOW).unwrap();
        assert_eq!(loaded, Loaded { entries: 3, overrides: records() });
        assert_eq!(sorted(&memory), sorted(&store(3)));

        // Without overrides the snapshot is a version 1 one, which builds before overrides read.
        write(&store(3), &[], &path, KEY_ID, NOW).unwrap();
        assert_eq!(fs::read(&path).unwrap()[8..12], PLAIN.to_le_bytes());
        assert_eq!(
            load(&Memory::new(10), &path, KEY_ID, NOW).unwrap(),
            Loaded { entries: 3, overrides: vec![] }
        );
    }

    #[test]
    fn a_snapshot_with_overrides_cut_or_flipped_anywhere_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        write(&store(2), &records(), &path, KEY_ID, NOW).unwrap();
        let bytes = fs::read(&path).unwrap();
        for len in 0..bytes.len() {
            let memory = Memory::new(10);
            let err = restore(&memory, &bytes[..len], &path, KEY_ID, NOW).unwrap_err();
            assert!(matches!(err, SnapshotError::Truncated { .. }), "cut at {len}: {err:?}");
            assert_eq!(memory.live_keys(), 0, "cut at {len}: restored something");
        }
        for i in HEADER..bytes.len() {
            let mut copy = bytes.clone();
            copy[i] ^= 0x10;
            let memory = Memory::new(10);
            let err = restore(&memory, &copy, &path, KEY_ID, NOW).unwrap_err();
            assert!(matches!(err, SnapshotError::Checksum { .. }), "bit flipped in byte {i}: {err:?}");
            assert_eq!(memory.live_keys(), 0, "byte {i}: restored something");
        }
    }

    #[test]
    fn a_version_1_snapshot_with_bytes_after_its_entries_is_malformed() {
        // What a version 2 body would hold after the entries, sealed as version 1.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        write(&store(1), &records(), &path, KEY_ID, NOW).unwrap();
        let mut bytes = fs::read(&path).unwrap();
        bytes[8..12].copy_from_slice(&PLAIN.to_le_bytes());
        let mut hasher = blake3::Hasher::new();
        hasher.update(&bytes[HEADER..]);
        hasher.update(&bytes[..FIELDS]);
        bytes[FIELDS..HEADER].copy_from_slice(hasher.finalize().as_bytes());
        let err = restore(&Memory::new(10), &bytes, &path, KEY_ID, NOW).unwrap_err();
        assert!(matches!(err, SnapshotError::Malformed { .. }), "{err:?}");
    }

    #[test]
    fn a_missing_file_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        let err = load(&Memory::new(10), &path, KEY_ID, NOW).unwrap_err();
        assert!(matches!(err, SnapshotError::Missing { .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("no snapshot at {}", path.display()));
    }

    #[test]
    fn a_snapshot_cut_at_any_byte_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        write(&store(3), &[], &path, KEY_ID, NOW).unwrap();
        let bytes = fs::read(&path).unwrap();
        let cut = dir.path().join("cut.snap");
        for len in 0..bytes.len() {
            fs::write(&cut, &bytes[..len]).unwrap();
            let memory = Memory::new(10);
            let err = load(&memory, &cut, KEY_ID, NOW).unwrap_err();
            assert!(matches!(err, SnapshotError::Truncated { .. }), "cut at {len}: {err:?}");
            let err = restore(&memory, &bytes[..len], &cut, KEY_ID, NOW).unwrap_err();
            assert!(matches!(err, SnapshotError::Truncated { .. }), "bytes cut at {len}: {err:?}");
            assert_eq!(memory.live_keys(), 0, "cut at {len}: restored something");
        }
        fs::write(&cut, [&bytes[..], b"x"].concat()).unwrap();
        let err = load(&Memory::new(10), &cut, KEY_ID, NOW).unwrap_err();
        assert!(matches!(err, SnapshotError::Malformed { .. }), "{err:?}");
    }

    #[test]
    fn any_flipped_bit_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        write(&store(3), &[], &path, KEY_ID, NOW).unwrap();
        let bytes = fs::read(&path).unwrap();
        let flipped = dir.path().join("flipped.snap");
        for i in 0..bytes.len() {
            let mut copy = bytes.clone();
            copy[i] ^= 0x10;
            fs::write(&flipped, &copy).unwrap();
            let memory = Memory::new(10);
            let err = load(&memory, &flipped, KEY_ID, NOW).unwrap_err();
            // Magic, version and length are told apart; everything else is the checksum's.
            let expected = match i {
                0..8 => matches!(err, SnapshotError::NotASnapshot { .. }),
                8..12 => matches!(err, SnapshotError::Version { .. }),
                28..36 => matches!(err, SnapshotError::Truncated { .. } | SnapshotError::Malformed { .. }),
                _ => matches!(err, SnapshotError::Checksum { .. }),
            };
            assert!(expected, "bit flipped in byte {i}: {err:?}");
            assert_eq!(memory.live_keys(), 0, "byte {i}: restored something");
        }
    }

    #[test]
    fn a_snapshot_restores_the_same_from_its_bytes_as_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        let original = store(3);
        write(&original, &[], &path, KEY_ID, NOW).unwrap();
        let (from_file, from_bytes) = (Memory::new(10), Memory::new(10));
        assert_eq!(load(&from_file, &path, KEY_ID, NOW).unwrap().entries, 3);
        assert_eq!(restore(&from_bytes, &fs::read(&path).unwrap(), &path, KEY_ID, NOW).unwrap().entries, 3);
        assert_eq!(sorted(&from_bytes), sorted(&from_file));
        assert_eq!(sorted(&from_bytes), sorted(&original));
    }

    #[test]
    fn a_snapshot_under_another_hash_key_is_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        write(&store(3), &[], &path, KEY_ID, NOW).unwrap();
        let memory = Memory::new(10);
        let err = load(&memory, &path, KEY_ID + 1, NOW).unwrap_err();
        assert!(matches!(err, SnapshotError::Foreign { .. }), "{err:?}");
        assert_eq!(memory.live_keys(), 0);
    }

    #[test]
    fn garbage_is_not_a_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        fs::write(&path, b"this is not a snapshot, just some text that is long enough").unwrap();
        let err = load(&Memory::new(10), &path, KEY_ID, NOW).unwrap_err();
        assert!(matches!(err, SnapshotError::NotASnapshot { .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("{} is not a quotagate snapshot", path.display()));
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // A directory (not empty) where the snapshot goes: the rename into place fails.
        let path = dir.path().join("counters.snap");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), b"").unwrap();
        assert!(write(&store(5), &[], &path, KEY_ID, NOW).is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "only the directory is left");
        // A write into a directory that does not exist fails without a trace.
        let nowhere = dir.path().join("missing").join("counters.snap");
        assert_eq!(write(&store(1), &[], &nowhere, KEY_ID, NOW).unwrap_err().kind(), io::ErrorKind::NotFound);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_file_at_a_predictable_temporary_name_is_left_alone() {
        // Another process's file at the name a pid would give (pid 1 in every container), and
        // a symlink planted at the other: neither is written through or renamed away.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        let theirs = dir.path().join(format!(".counters.snap.tmp.{}", std::process::id()));
        fs::write(&theirs, b"another writer's half-written snapshot").unwrap();
        let target = dir.path().join("target");
        #[cfg(unix)]
        std::os::unix::fs::symlink(&target, dir.path().join(".counters.snap.tmp.1")).unwrap();
        assert_eq!(write(&store(3), &[], &path, KEY_ID, NOW).unwrap(), 3);
        assert_eq!(fs::read(&theirs).unwrap(), b"another writer's half-written snapshot");
        assert!(!target.exists(), "written through a symlink");
        assert_eq!(load(&Memory::new(10), &path, KEY_ID, NOW).unwrap().entries, 3);
    }

    #[test]
    fn two_writers_sharing_a_path_never_corrupt_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        let (three, five) = (store(3), store(5));
        write(&three, &[], &path, KEY_ID, NOW).unwrap();
        std::thread::scope(|s| {
            for memory in [&three, &five] {
                let path = &path;
                s.spawn(move || {
                    for _ in 0..40 {
                        write(memory, &[], path, KEY_ID, NOW).expect("every write succeeds");
                    }
                });
            }
            for _ in 0..200 {
                let loaded = load(&Memory::new(10), &path, KEY_ID, NOW).expect("a whole snapshot").entries;
                assert!(loaded == 3 || loaded == 5, "{loaded} entries");
            }
        });
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file is left");
    }

    #[test]
    fn the_key_id_tells_hash_keys_apart_and_is_stable() {
        use crate::identity::Hasher;
        let a = Hasher::new(b"0123456789abcdef");
        assert_eq!(a.key_id(), Hasher::new(b"0123456789abcdef").key_id());
        assert_ne!(a.key_id(), Hasher::new(b"0123456789abcdeF").key_id());
    }

    #[tokio::test(start_paused = true)]
    async fn keep_writes_on_the_interval_and_once_more_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("counters.snap");
        let memory = Arc::new(store(2));
        let snapshot = config::Snapshot { path: path.clone(), interval: Duration::from_secs(10) };
        let clock = Clock::manual(NOW);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let stopped = async {
            let _ = stopped.await;
        };
        fn kept(m: &Arc<Memory>) -> &Memory {
            m
        }
        fn key(_: &Arc<Memory>) -> u64 {
            KEY_ID
        }
        fn none(_: &Arc<Memory>, _: Nanos) -> Vec<Record> {
            Vec::new()
        }
        let keeper = tokio::spawn(keep(memory.clone(), kept, none, key, snapshot, clock.clone(), stopped));

        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!path.exists(), "written before the first interval");
        tokio::time::sleep(Duration::from_secs(6)).await;
        let mut waited = 0;
        while !path.exists() {
            assert!(waited < 1000, "nothing written after the first interval");
            tokio::time::sleep(Duration::from_millis(1)).await;
            waited += 1;
        }
        assert_eq!(load(&Memory::new(10), &path, KEY_ID, NOW).unwrap().entries, 2);

        assert!(hit(&memory, 3, &limits(), NOW));
        stop.send(()).unwrap();
        keeper.await.unwrap();
        assert_eq!(
            load(&Memory::new(10), &path, KEY_ID, NOW).unwrap().entries,
            3,
            "the last write has every count"
        );
    }
}
