//! Config parsing: `Config::parse`, what `quotagate check-config` and every start run on a
//! config file's text. Input: the file's bytes (`Config::load` refuses text that is not UTF-8).
#![no_main]

use libfuzzer_sys::fuzz_target;
use quotagate::config::{Config, ConfigError};

const ORIGIN: &str = "fuzz.toml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let first = describe(text);
    assert_eq!(first, describe(text), "the same text reads differently twice");
    if let Some(secret) = hash_key(text) {
        // A secret value never shows: read the text again with another secret of the same
        // length; a report that shows the new one where it showed the old one quotes it.
        let other: String = secret.chars().map(rotate).collect();
        let second = describe(&text.replacen(secret, &other, 1));
        assert!(!(first.contains(secret) && second.contains(&other)), "identity.hash_key shows in: {first}");
    }
});

/// The summary check-config prints, or every problem.
fn describe(text: &str) -> String {
    match Config::parse(text, ORIGIN, None) {
        Ok(config) => {
            let summary = config.summary();
            assert!(summary.starts_with(ORIGIN), "{summary}");
            summary
        }
        Err(e) => {
            let problems = e.problems();
            assert!(!problems.is_empty(), "an error without a problem: {e:?}");
            if let ConfigError::Invalid { problems, .. } = &e {
                for p in problems {
                    assert!(
                        !p.key.is_empty() && !p.message.is_empty(),
                        "a problem without a key path: {p:?}"
                    );
                }
            }
            let shown = e.to_string();
            for p in &problems {
                assert!(shown.contains(p.as_str()), "{shown:?} leaves out {p:?}");
            }
            shown
        }
    }
}

/// The value of `hash_key = "..."`, if it is a basic string written once in the text, at least
/// 16 bytes long and plain enough to be found and replaced as it is written.
fn hash_key(text: &str) -> Option<&str> {
    let at = text.find("hash_key")?;
    let rest = text[at + "hash_key".len()..].trim_start_matches([' ', '\t']).strip_prefix('=')?;
    let rest = rest.trim_start_matches([' ', '\t']).strip_prefix('"')?;
    let secret = &rest[..rest.find('"')?];
    let plain = secret.len() >= 16 && secret.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (plain && text.matches(secret).count() == 1).then_some(secret)
}

/// Another character of the same class (and length), so the value stays as valid as it was.
fn rotate(c: char) -> char {
    match c {
        'a'..='y' | 'A'..='Y' | '0'..='8' => char::from(c as u8 + 1),
        'z' => 'a',
        'Z' => 'A',
        '9' => '0',
        c => c,
    }
}
