//! Repository names, image tags and account ids, validated against ECR's rules.

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
    /// Not a tag ECR's API accepts (1-300 characters, no whitespace or control characters).
    #[error("invalid image tag {0:?}: ECR tags are 1-300 characters without whitespace or control characters")]
    Tag(String),
    /// A tag ECR accepts, but outside the OCI grammar `docker pull` understands.
    #[error(
        "invalid image tag {0:?} for writing: tags this service writes follow the OCI grammar, 1-128 characters \
         of letters, digits, '_', '.', '-', not starting with '.' or '-'"
    )]
    NotOci(String),
    /// Not an AWS account id.
    #[error("invalid AWS account id {0:?}: an account id is exactly 12 digits")]
    Account(String),
}

/// An AWS account id (an ECR registry id): exactly 12 decimal digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId(String);

impl AccountId {
    /// Validates `s` as an account id.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        if s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit()) {
            Ok(AccountId(s.to_owned()))
        } else {
            Err(NameError::Account(s.to_owned()))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
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
/// Any tag ECR's API accepts: 1 to 300 characters (`ImageIdentifier.imageTag`),
/// so tags written by other tools are always readable. Tags this service
/// writes itself are made with [`ImageTag::parse_oci`]: the OCI distribution
/// grammar `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`, the only tags `docker pull`
/// can name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageTag(String);

/// Longest tag ECR's API accepts.
pub const MAX_TAG_LEN: usize = 300;
/// Longest tag the OCI grammar allows (and the longest this service writes).
pub const MAX_OCI_TAG_LEN: usize = 128;

impl ImageTag {
    /// Validates `s` as a tag ECR accepts (1-300 characters, no whitespace or control characters).
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let ok = !s.is_empty()
            && s.chars().count() <= MAX_TAG_LEN
            && !s.chars().any(|c| c.is_whitespace() || c.is_control());
        if ok {
            Ok(ImageTag(s.to_owned()))
        } else {
            Err(NameError::Tag(s.to_owned()))
        }
    }

    /// Validates `s` as an OCI tag (what this service writes).
    pub fn parse_oci(s: &str) -> Result<Self, NameError> {
        let tag = Self::parse(s)?;
        if tag.is_oci() {
            Ok(tag)
        } else {
            Err(NameError::NotOci(s.to_owned()))
        }
    }

    /// True when the tag follows the OCI grammar (at most 128 characters).
    pub fn is_oci(&self) -> bool {
        let bytes = self.0.as_bytes();
        !bytes.is_empty()
            && bytes.len() <= MAX_OCI_TAG_LEN
            && (bytes[0].is_ascii_alphanumeric() || bytes[0] == b'_')
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
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
string_newtype_impls!(AccountId);

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
    fn account_ids_are_twelve_digits() {
        assert_eq!(AccountId::parse("012345678901").unwrap().as_str(), "012345678901");
        for bad in [
            "",
            "12345678901",
            "1234567890123",
            "12345678901a",
            " 12345678901",
            "１２３４５６７８９０１２",
        ] {
            assert!(AccountId::parse(bad).is_err(), "{bad:?}");
        }
        let json: AccountId = serde_json::from_str("\"222222222222\"").unwrap();
        assert_eq!(serde_json::to_string(&json).unwrap(), "\"222222222222\"");
        assert!(serde_json::from_str::<AccountId>("\"2222\"").is_err());
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
        for bad in ["", "v 7", "v7\n", "\u{7f}"] {
            assert!(ImageTag::parse(bad).is_err(), "{bad:?}");
        }
        for foreign in [".v7", "-v7", "v7/x", "v7:x", "é"] {
            assert!(ImageTag::parse(foreign).is_ok(), "{foreign}");
            assert!(ImageTag::parse_oci(foreign).is_err(), "{foreign}");
        }
        assert!(ImageTag::parse_oci(&"a".repeat(128)).is_ok());
        assert!(ImageTag::parse_oci(&"a".repeat(129)).is_err());
        // ECR's API takes tags up to 300 characters: readable, never written by us.
        let long = ImageTag::parse(&"a".repeat(300)).unwrap();
        assert!(!long.is_oci());
        assert!(ImageTag::parse(&"a".repeat(301)).is_err());
    }
}
