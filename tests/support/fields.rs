//! `RateLimit` and `RateLimit-Policy` read with an independent Structured Fields parser (the
//! `sfv` crate, RFC 9651), so the tests check what a client's parser sees, not our writer.

/// The field's items, each as `name k=v k=v` in the order sent, a String parameter unquoted
/// (`qu=concurrent-requests`). Panics (failing the test) if the value is not a List of String
/// items whose parameters are all Integers or Strings.
pub fn sf_items(value: &str) -> Vec<String> {
    let list: sfv::List = sfv::Parser::new(value).parse().unwrap_or_else(|e| panic!("{value:?}: {e}"));
    list.iter()
        .map(|entry| {
            let sfv::ListEntry::Item(item) = entry else { panic!("{value:?}: an inner list") };
            let name = item.bare_item.as_string().unwrap_or_else(|| panic!("{value:?}: not a string"));
            let mut out = name.as_str().to_owned();
            for (k, v) in &item.params {
                let v = match (v.as_integer(), v.as_string()) {
                    (Some(n), _) => i64::from(n).to_string(),
                    (None, Some(s)) => s.as_str().to_owned(),
                    _ => panic!("{value:?}: {} neither an integer nor a string", k.as_str()),
                };
                out.push_str(&format!(" {}={v}", k.as_str()));
            }
            out
        })
        .collect()
}

/// The item named `name` among the field's (as [`sf_items`] writes it), if there is one.
// tests/http.rs includes this file on its own and does not use this.
#[allow(dead_code)]
pub fn sf_item(value: &str, name: &str) -> Option<String> {
    sf_items(value).into_iter().find(|item| item.split(' ').next() == Some(name))
}
