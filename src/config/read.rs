//! Reading TOML into [`RawConfig`], leniently: a value of the wrong type (`requests = "ten"`)
//! is a problem at its key path, like any other, and does not stop the report. Only broken
//! TOML syntax does (with a line and column, never the line itself: it may hold a token).
//!
//! serde stops at the first error, so the text is parsed into a TOML table once, then
//! deserialized again after each type error with the offending value taken out (a key
//! removed, or an array element replaced by an empty value of the type expected), until it
//! goes through. Each pass also collects the unknown keys (`serde_ignored`); those of the last
//! pass are reported. The keys whose values were taken out are returned, so that validation's
//! follow-on problems there ("missing") are not reported twice.

use std::collections::HashSet;

use serde_path_to_error::Segment;
use toml::{Table, Value};

use super::error::{syntax_message, ConfigError, Problem};
use super::leaf::{quoted, segment};
use super::raw::RawConfig;
use super::store::redact;

/// Type errors beyond this many are not looked for: the file is not a quotagate config.
const MAX_TYPE_ERRORS: usize = 100;

/// What reading found: the raw config, the type errors and unknown keys (in that order), and
/// the keys of the values taken out.
pub(super) struct Read {
    pub(super) raw: RawConfig,
    pub(super) problems: Vec<Problem>,
    pub(super) taken_out: Vec<String>,
}

pub(super) fn read(text: &str, origin: &str) -> Result<Read, ConfigError> {
    let mut table: Table = toml::from_str(text)
        .map_err(|e| ConfigError::Syntax { path: origin.to_owned(), message: syntax_message(text, &e) })?;
    let mut problems = Vec::new();
    let mut taken_out = Vec::new();
    let mut replaced = HashSet::new();
    loop {
        let mut unknown = Vec::new();
        let mut record = |path: serde_ignored::Path<'_>| unknown.push(ignored_key(&path));
        let de = serde_ignored::Deserializer::new(Value::Table(table.clone()), &mut record);
        match serde_path_to_error::deserialize::<_, RawConfig>(de) {
            Ok(raw) => {
                problems
                    .extend(unknown.into_iter().map(|key| Problem { key, message: "unknown key".into() }));
                return Ok(Read { raw, problems, taken_out });
            }
            Err(e) => {
                let segments: Vec<Segment> = e.path().iter().cloned().collect();
                let key = key_path(&segments);
                let expected = expected(e.inner().message());
                let message = match expected {
                    Some(expected) => type_message(&key, expected, value_at(&mut table, &segments)),
                    None => e.inner().message().trim_end().to_owned(),
                };
                let took_out = !segments.is_empty()
                    && problems.len() < MAX_TYPE_ERRORS
                    && take_out(&mut table, &segments, expected, &mut replaced);
                problems.push(Problem { key: key.clone(), message });
                taken_out.push(key);
                if !took_out {
                    return Err(ConfigError::Invalid { path: origin.to_owned(), problems });
                }
            }
        }
    }
}

/// `plans.free.limits[0].requests`, with table keys quoted where TOML would need it.
pub(super) fn key_path(segments: &[Segment]) -> String {
    let mut key = String::new();
    for s in segments {
        match s {
            Segment::Seq { index } => key.push_str(&format!("[{index}]")),
            Segment::Map { key: k } | Segment::Enum { variant: k } => {
                if !key.is_empty() {
                    key.push('.');
                }
                key.push_str(&segment(k));
            }
            Segment::Unknown => {}
        }
    }
    if key.is_empty() {
        key.push_str("(top level)");
    }
    key
}

/// The same form for serde_ignored's paths (which write `?` for an optional table and
/// `.0` for an array index).
pub(super) fn ignored_key(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", ignored_key(parent)),
        Path::Map { parent, key } => match ignored_key(parent) {
            p if p.is_empty() => segment(key),
            p => format!("{p}.{}", segment(key)),
        },
        Path::Some { parent } | Path::NewtypeStruct { parent } | Path::NewtypeVariant { parent } => {
            ignored_key(parent)
        }
    }
}

fn value_at<'a>(table: &'a mut Table, segments: &[Segment]) -> Option<&'a mut Value> {
    let (first, rest) = segments.split_first()?;
    let Segment::Map { key } = first else { return None };
    let mut value = table.get_mut(key)?;
    for s in rest {
        value = match (s, value) {
            (Segment::Map { key }, Value::Table(t)) => t.get_mut(key)?,
            (Segment::Seq { index }, Value::Array(a)) => a.get_mut(*index)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Takes the value at `segments` out of `table`; false if there is nothing to take out. A
/// key is removed (its default applies). An array element is replaced, once, by an empty value
/// of the `expected` type, so that the indices of the others stay right; if that does not do,
/// the whole array goes.
fn take_out(
    table: &mut Table,
    segments: &[Segment],
    expected: Option<&str>,
    replaced: &mut HashSet<String>,
) -> bool {
    let Some((last, parent)) = segments.split_last() else { return false };
    match last {
        Segment::Map { key } if parent.is_empty() => table.remove(key).is_some(),
        Segment::Map { key } => match value_at(table, parent) {
            Some(Value::Table(t)) => t.remove(key).is_some(),
            _ => false,
        },
        Segment::Seq { index } => {
            let empty = match expected {
                Some("a table") => Some(Value::Table(Table::new())),
                Some("a string") => Some(Value::String(String::new())),
                Some("an array") => Some(Value::Array(Vec::new())),
                Some("an integer") => Some(Value::Integer(0)),
                Some("a boolean") => Some(Value::Boolean(false)),
                _ => None,
            };
            if let (Some(empty), true) = (empty, replaced.insert(key_path(segments))) {
                if let Some(Value::Array(array)) = value_at(table, parent) {
                    if let Some(slot) = array.get_mut(*index) {
                        *slot = empty;
                        return true;
                    }
                }
            }
            take_out(table, parent, None, replaced)
        }
        Segment::Enum { .. } | Segment::Unknown => false,
    }
}

/// What serde's `invalid type: string "ten", expected i64` expected, in TOML's words; `None` for
/// other errors.
fn expected(serde: &str) -> Option<&'static str> {
    let (_, expected) = serde.rsplit_once(", expected ")?;
    Some(match expected.trim_end() {
        "i64" | "u64" | "i32" | "u32" | "an integer" => "an integer",
        "a boolean" | "bool" => "a boolean",
        "a string" | "a borrowed string" => "a string",
        "a sequence" => "an array",
        e if e == "a map" || e.starts_with("struct ") => "a table",
        _ => return None,
    })
}

/// `must be an integer (got "ten")`. The value is shown only for scalars, never under a key that
/// holds a secret, and with any URL password redacted.
fn type_message(key: &str, expected: &str, value: Option<&mut Value>) -> String {
    // A token may stand where `[tokens]` should be; a password may stand in a Redis URL,
    // which is shown redacted.
    let secret =
        key.contains("hash_key") || key.contains("password") || key == "tokens" || key.starts_with("tokens.");
    let got = match value {
        None => return format!("must be {expected}"),
        Some(Value::Array(_)) => "an array".to_owned(),
        Some(Value::Table(_)) => "a table".to_owned(),
        Some(Value::Datetime(_)) => "a date".to_owned(),
        Some(Value::String(_)) if secret => "a string".to_owned(),
        Some(_) if secret => "a number or boolean".to_owned(),
        Some(Value::String(s)) => quoted(&redact(s)),
        Some(Value::Integer(i)) => i.to_string(),
        Some(Value::Float(f)) => f.to_string(),
        Some(Value::Boolean(b)) => b.to_string(),
    };
    format!("must be {expected} (got {got})")
}
