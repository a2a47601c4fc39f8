//! The words the service writes and reads back: modes, outcomes, action
//! kinds, skip codes. Each is one closed enum with one spelling, shared by
//! the engine, the audit record, the CLI's flags and the audit filters, so
//! a flag always finds what a record says.

/// A closed set of words, each spelt once.
pub trait Vocabulary: Copy + Eq + Sized + 'static {
    /// Every word, in the order documentation lists them.
    const ALL: &'static [Self];

    /// The word, as records and configuration write it (`snake_case`).
    fn as_str(self) -> &'static str;

    /// The value whose word is `word`; `-` is read as `_`, so `move-tag`
    /// finds `move_tag` as command lines like to write it.
    fn from_word(word: &str) -> Option<Self> {
        let word = word.replace('-', "_");
        Self::ALL.iter().copied().find(|v| v.as_str() == word)
    }

    /// Every word, comma-separated, for messages.
    fn listing() -> String {
        Self::ALL.iter().map(|v| v.as_str()).collect::<Vec<_>>().join(", ")
    }
}

/// Checks that serde writes every value of `T` as its word (for tests of
/// each vocabulary): the record and the flags can then never drift apart.
#[cfg(test)]
pub(crate) fn assert_serde_agrees<T: Vocabulary + serde::Serialize + std::fmt::Debug>() {
    for v in T::ALL {
        let written = serde_json::to_value(v).unwrap_or_default();
        assert_eq!(written.as_str(), Some(v.as_str()), "{v:?}");
        assert_eq!(T::from_word(v.as_str()), Some(*v));
    }
}

/// Defines a [`Vocabulary`] enum: each variant with its one word, and the
/// `Display`, `FromStr`, `Serialize` and `Deserialize` that use that word.
macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $word:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $crate::vocabulary::Vocabulary for $name {
            const ALL: &'static [Self] = &[$($name::$variant),+];

            fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $word, )+
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($crate::vocabulary::Vocabulary::as_str(*self))
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::vocabulary::UnknownWord;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                <Self as $crate::vocabulary::Vocabulary>::from_word(s).ok_or_else(|| $crate::vocabulary::UnknownWord {
                    word: s.to_owned(),
                    expected: <Self as $crate::vocabulary::Vocabulary>::listing(),
                })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str($crate::vocabulary::Vocabulary::as_str(*self))
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let word = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                word.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use vocabulary;

/// A word outside a vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{word:?} is not one of: {expected}")]
pub struct UnknownWord {
    /// The word given.
    pub word: String,
    /// The words allowed.
    pub expected: String,
}
