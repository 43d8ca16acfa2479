//! Identities and domain types used across the gateway: names are checked once, where they enter,
//! and typed from then on.

use std::fmt;
use std::sync::Arc;

/// The name of a configured backend: non-empty ASCII letters, digits, `-` and `_`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendId(Arc<str>);

impl BackendId {
    /// Check and wrap a backend name.
    pub fn new(name: &str) -> Result<BackendId, &'static str> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if valid {
            Ok(BackendId(name.into()))
        } else {
            Err("a backend name is 1 to 64 ASCII letters, digits, `-` or `_`")
        }
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BackendId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
