//! Resource addresses: `kind.name`, used verbatim in plans, errors, logs and state keys.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The address of one resource: its kind and its name, `instance.blog`.
///
/// Immutable once built. `Display` prints `kind.name`; `FromStr` accepts the same.
/// Names may contain letters, digits, `-` and `_` (and `.` for the addresses
/// that a composite such as `site` expands into, e.g. `site.blog.instance`).
///
/// The text is shared (`Arc<str>`): addresses are cloned into every map of a plan,
/// an apply and a state, and a clone is a reference count, not two allocations.
/// Addresses order by their text.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceAddr {
    text: Arc<str>,
    dot: usize,
    /// Where the kind starts: 0, or after the last dot of an expanded address.
    kind_start: usize,
}

/// The composite kinds: their addresses expand into `composite.name.kind`.
pub const COMPOSITES: [&str; 1] = ["site"];

/// Why a string is not a resource address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    /// The string has no `.` between kind and name.
    #[error("`{0}` is not a resource address (expected `kind.name`)")]
    MissingDot(String),
    /// The kind or the name is empty or holds a character outside `[A-Za-z0-9_-]`.
    #[error(
        "`{0}` is not a valid resource address: kind and name may hold only letters, digits, `-` and `_`"
    )]
    InvalidCharacter(String),
}

fn valid_part(part: &str) -> bool {
    !part.is_empty()
        && part
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl ResourceAddr {
    /// Builds an address from its parts, checking both.
    ///
    /// # Errors
    /// [`AddrError::InvalidCharacter`] when a part is empty or holds a character
    /// other than letters, digits, `-` and `_`.
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Result<Self, AddrError> {
        let (kind, name): (String, String) = (kind.into(), name.into());
        if valid_part(&kind) && name.split('.').all(valid_part) {
            let text = format!("{kind}.{name}");
            // `site.blog.instance` is an `instance` that `site.blog` expanded into.
            let kind_start = match name.rfind('.') {
                Some(last) if COMPOSITES.contains(&kind.as_str()) => kind.len() + 1 + last + 1,
                _ => 0,
            };
            Ok(Self {
                dot: kind.len(),
                kind_start,
                text: Arc::from(text),
            })
        } else {
            Err(AddrError::InvalidCharacter(format!("{kind}.{name}")))
        }
    }

    /// The resource kind: `instance` in `instance.blog`, and in
    /// `site.blog.instance` (what the composite `site.blog` expanded into).
    pub fn kind(&self) -> &str {
        if self.kind_start == 0 {
            &self.text[..self.dot]
        } else {
            &self.text[self.kind_start..]
        }
    }

    /// The resource name: `blog` in `instance.blog`, `blog.instance` in
    /// `site.blog.instance`.
    pub fn name(&self) -> &str {
        &self.text[self.dot + 1..]
    }

    /// The composite this address was expanded from: `site.blog` for
    /// `site.blog.instance`.
    pub fn composite(&self) -> Option<ResourceAddr> {
        if self.kind_start == 0 {
            return None;
        }
        self.text[..self.kind_start - 1].parse().ok()
    }

    /// The whole address, `kind.name`.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for ResourceAddr {
    type Err = AddrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (kind, name) = s
            .split_once('.')
            .ok_or_else(|| AddrError::MissingDot(s.to_owned()))?;
        Self::new(kind, name).map_err(|_| AddrError::InvalidCharacter(s.to_owned()))
    }
}

impl fmt::Display for ResourceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl fmt::Debug for ResourceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ResourceAddr({self})")
    }
}

impl Serialize for ResourceAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ResourceAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_should_round_trip_through_display() {
        let addr: ResourceAddr = "log_group.blog-build".parse().unwrap();
        assert_eq!(addr.kind(), "log_group");
        assert_eq!(addr.name(), "blog-build");
        assert_eq!(addr.to_string(), "log_group.blog-build");
    }

    #[test]
    fn address_should_reject_missing_dot_and_bad_characters() {
        assert!(matches!(
            "blog".parse::<ResourceAddr>(),
            Err(AddrError::MissingDot(_))
        ));
        assert!("log group.x".parse::<ResourceAddr>().is_err());
        assert!("log_group.".parse::<ResourceAddr>().is_err());
        assert!("site.blog.instance".parse::<ResourceAddr>().is_ok());
    }

    #[test]
    fn expanded_addresses_should_have_the_kind_they_expanded_into() {
        let addr: ResourceAddr = "site.blog.instance".parse().unwrap();
        assert_eq!(addr.kind(), "instance");
        assert_eq!(addr.name(), "blog.instance");
        assert_eq!(addr.composite(), Some("site.blog".parse().unwrap()));
        let site: ResourceAddr = "site.blog".parse().unwrap();
        assert_eq!(site.kind(), "site");
        assert_eq!(site.composite(), None);
        let dotted: ResourceAddr = "log_group.a.b".parse().unwrap();
        assert_eq!(dotted.kind(), "log_group");
    }
}
