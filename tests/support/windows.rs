//! The windows property tests draw from: every calendar window and two fixed lengths that divide
//! no calendar unit. A single file with no other dependency, so that a test binary which needs
//! nothing else of `support` can include it alone (`#[path = "support/windows.rs"]`).

use proptest::prelude::*;
use quotagate::limiter::{Window, SECOND};

pub fn window() -> impl Strategy<Value = Window> {
    prop_oneof![
        Just(Window::Second),
        Just(Window::Minute),
        Just(Window::Hour),
        Just(Window::Day),
        Just(Window::Week),
        Just(Window::Month),
        Just(Window::Every(7 * SECOND)),
        Just(Window::Every(900 * SECOND)),
    ]
}
