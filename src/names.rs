//! Repository names and image tags, validated against ECR's rules.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid repository name or tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Repository name outside ECR's grammar or length.
    #[error(
        "invalid repository name {0:?}: ECR names are 2-256 characters of lowercase letters, digits and \
         '.', '_', '-' separators, in '/'-separated components"
    )]
    Repository(String),
    /// Tag outside the OCI tag grammar.
    #[error(
        "invalid image tag {0:?}: tags are 1-128 characters of letters, digits, '_', '.', '-', \
         not starting with '.' or '-'"
    )]
    Tag(String),
}

/// An ECR repository name, e.g. `team/service`.
///
/// ECR's pattern: `(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*`,
/// 2 to 256 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepositoryName(String);

impl RepositoryName {
    /// Validates `s` as an ECR repository name.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let err = || NameError::Repository(s.to_owned());
        if !(2..=256).contains(&s.len()) {
            return Err(err());
        }
        for component in s.split('/') {
            if !valid_component(component) {
                return Err(err());
            }
        }
        Ok(RepositoryName(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One path component: alphanumeric runs joined by single `.`, `_` or `-`.
fn valid_component(c: &str) -> bool {
    let mut prev_sep = true; // start behaves like "after a separator": must see alnum
    for b in c.bytes() {
        match b {
            b'a'..=b'z' | b'0'..=b'9' => prev_sep = false,
            b'.' | b'_' | b'-' if !prev_sep => prev_sep = true,
            _ => return false,
        }
    }
    !c.is_empty() && !prev_sep
}

/// An image tag, e.g. `v7` or `v7-linux-arm64`.
///
/// The OCI distribution grammar `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, which is
/// what `docker push`/`docker pull` accept (ECR's API allows longer tags, but
/// nothing longer than 128 can be pulled by name).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageTag(String);

/// Longest tag the OCI grammar allows.
pub const MAX_TAG_LEN: usize = 128;

impl ImageTag {
    /// Validates `s` as a tag.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let bytes = s.as_bytes();
        let ok = !bytes.is_empty()
            && bytes.len() <= MAX_TAG_LEN
            && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(ImageTag(s.to_owned()))
        } else {
            Err(NameError::Tag(s.to_owned()))
        }
    }

    /// The tag.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_impls {
    ($t:ty) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl std::str::FromStr for $t {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                Self::parse(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}
string_newtype_impls!(RepositoryName);
string_newtype_impls!(ImageTag);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names() {
        for good in ["ab", "my-repo", "team/service", "a.b_c-d/e1/f2", "lambda/fn.v2"] {
            assert!(RepositoryName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "a",
            "My-Repo",
            "team//svc",
            "/svc",
            "svc/",
            "a--b",
            "-ab",
            "ab-",
            "a b",
            "a:b",
        ] {
            assert!(RepositoryName::parse(bad).is_err(), "{bad}");
        }
        assert!(RepositoryName::parse(&"a".repeat(257)).is_err());
        assert!(RepositoryName::parse(&"a".repeat(256)).is_ok());
    }

    #[test]
    fn tags() {
        for good in [
            "v7",
            "latest",
            "_x",
            "v7-linux-arm64-v8",
            "sha256-7ebe8964225fa4619b53aa35416ef0246c037e36ddf81776b21b15e1dda2262b.sig",
        ] {
            assert!(ImageTag::parse(good).is_ok(), "{good}");
        }
        for bad in ["", ".v7", "-v7", "v7/x", "v7:x", "v 7", "é"] {
            assert!(ImageTag::parse(bad).is_err(), "{bad}");
        }
        assert!(ImageTag::parse(&"a".repeat(128)).is_ok());
        assert!(ImageTag::parse(&"a".repeat(129)).is_err());
    }
}
