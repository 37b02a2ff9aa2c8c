//! Counters of the memory store survive a restart through `store.memory.snapshot`, with the real
//! binary: written at shutdown and on the interval, read back at start; a snapshot that cannot
//! be used is logged and ignored.

mod support;

use std::path::Path;
use std::time::{Duration, SystemTime};

use support::{client, poll, Quotagate};

const TOKEN: &str = "snapshot-test-token";

/// Three requests a calendar month, counters kept in `path`. (A run that straddles midnight
/// UTC at the end of a month would see the window reset; it takes seconds.)
fn config(path: &Path) -> String {
    format!(
        "[plans.free]\nlimits = [{{ requests = 3, per = \"month\" }}]\n\n\
         [store.memory]\nsnapshot = {{ path = {:?}, interval = \"1s\" }}\n",
        path.display().to_string()
    )
}

async fn status(q: &Quotagate) -> u16 {
    let response = client().get(q.url()).bearer_auth(TOKEN).send().await.expect("quotagate answers");
    response.status().as_u16()
}

#[tokio::test]
async fn a_monthly_count_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counters.snap");
    let config = config(&path);

    let mut first = Quotagate::start(&config).await;
    assert_eq!(status(&first).await, 200);
    assert_eq!(status(&first).await, 200);
    assert!(first.terminate(Duration::from_secs(10)).success(), "{}", first.log());
    assert!(first.log().contains("snapshot written"), "{}", first.log());
    assert!(path.exists());

    let second = Quotagate::start(&config).await;
    assert!(second.log().contains("snapshot loaded"), "{}", second.log());
    assert_eq!(status(&second).await, 200, "the third request of the month");
    assert_eq!(status(&second).await, 429, "the fourth request of the month");
}

#[tokio::test]
async fn a_crash_loses_at_most_one_interval() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counters.snap");
    let config = config(&path);

    let first = Quotagate::start(&config).await;
    assert_eq!(status(&first).await, 200);
    assert_eq!(status(&first).await, 200);
    let counted = SystemTime::now();
    // A write that ends after `counted` may have begun before it; the one after that began
    // after it, so it holds both requests.
    let modified = || std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    let timeout = Duration::from_secs(10);
    let after = poll(timeout, || async { modified().filter(|m| *m > counted) }).await.expect("written");
    poll(timeout, || async { modified().filter(|m| *m > after) }).await.expect("written again");
    drop(first); // SIGKILL: no write at shutdown

    let second = Quotagate::start(&config).await;
    assert_eq!(status(&second).await, 200, "the third request of the month");
    assert_eq!(status(&second).await, 429, "the fourth request of the month");
}

#[tokio::test]
async fn a_corrupt_snapshot_is_ignored_and_counting_starts_from_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counters.snap");
    std::fs::write(&path, b"\x00garbage, not a snapshot \xff\xfe and some more bytes to be long enough")
        .unwrap();

    let q = Quotagate::start(&config(&path)).await;
    let log = q.log();
    assert!(log.contains("snapshot ignored"), "{log}");
    assert!(log.contains("is not a quotagate snapshot"), "{log}");
    for n in 1..=3 {
        assert_eq!(status(&q).await, 200, "request {n} of the month");
    }
    assert_eq!(status(&q).await, 429);
}

#[tokio::test]
async fn after_a_reload_that_changes_the_hash_key_the_snapshot_follows_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("counters.snap");
    let keyed = |key: &str| format!("[identity]\nhash_key = {key:?}\n{}", config(&path));

    let mut first = Quotagate::start(&keyed("the-first-hash-key-0123")).await;
    assert_eq!(status(&first).await, 200);
    first.write_config(&keyed("the-second-hash-key-456"));
    first.reload();
    first.wait_for_log("config reloaded", Duration::from_secs(10)).await;
    assert!(first.log().contains("identity.hash_key changed"), "{}", first.log());
    // Under the new key the caller is new: the first request of its month.
    assert_eq!(status(&first).await, 200);
    assert!(first.terminate(Duration::from_secs(10)).success(), "{}", first.log());

    let second = Quotagate::start(&keyed("the-second-hash-key-456")).await;
    let log = second.log();
    assert!(log.contains("snapshot loaded"), "{log}");
    assert!(!log.contains("another identity.hash_key"), "{log}");
    assert_eq!(status(&second).await, 200, "the second request of the month under the new key");
    assert_eq!(status(&second).await, 200, "the third");
    assert_eq!(status(&second).await, 429, "the fourth");
}
