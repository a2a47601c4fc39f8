//! A repository's own say: the `ecr-remediator:mode` resource tag.
//!
//! Precedence, from weakest to strongest:
//!
//! 1. the default policy;
//! 2. the first rule matching the repository and account (see
//!    [`crate::policy::PolicySet::select_for`]);
//! 3. the repository's tag, which may choose the **mode** only (`off`, `on`,
//!    `observe`, `tag`, `promote`, `strip`), and only when the rule lets it
//!    ([`RepositoryTagUse`]). Deletion, the keep tag, templates and provenance
//!    always stay the rule's: a repository owner cannot opt into deleting.
//! 4. a mode the operator gives for one run (`--mode` on the command line)
//!    wins over the tag's mode; the tag's `off` (or a missing opt-in where
//!    the rule requires one) still leaves the repository alone. `--dry-run`
//!    is never undone by a tag (the tag only picks a mode).
//!
//! An unknown value is never guessed at: the image is left alone, with the
//! reason recorded.

use std::fmt;

use crate::policy::{Mode, Policy};
use crate::vocabulary::Vocabulary;

/// The resource tag key a repository uses to choose its mode.
pub const MODE_TAG_KEY: &str = "ecr-remediator:mode";

/// How a rule treats the repository's [`MODE_TAG_KEY`] tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RepositoryTagUse {
    /// The tag may opt the repository out or pick its mode; without it, the
    /// rule applies.
    #[default]
    Allowed,
    /// The tag is not read: the rule applies whatever it says.
    Ignored,
    /// Repositories are left alone unless their tag opts them in (`on` or a mode).
    Required,
}

impl RepositoryTagUse {
    /// Parses `allowed`, `ignored` or `required`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "allowed" => Some(RepositoryTagUse::Allowed),
            "ignored" => Some(RepositoryTagUse::Ignored),
            "required" => Some(RepositoryTagUse::Required),
            _ => None,
        }
    }

    /// Whether the tag must be read at all.
    pub fn reads_tag(self) -> bool {
        self != RepositoryTagUse::Ignored
    }
}

/// What a tag value asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepositoryChoice {
    /// `off`: leave this repository alone.
    Off,
    /// `on`: the rule's mode (an opt-in where the rule requires one).
    On,
    /// A mode name: that mode, with the rule's other settings.
    Mode(Mode),
}

impl RepositoryChoice {
    /// Parses a tag value (case and surrounding blanks ignored).
    pub fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "off" => Some(RepositoryChoice::Off),
            "on" => Some(RepositoryChoice::On),
            other => Mode::from_word(other).map(RepositoryChoice::Mode),
        }
    }
}

/// The outcome of applying a repository's tag to the rule's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Handle the image with this policy. `source` says what the tag did,
    /// for the audit record (`None`: the tag played no part).
    Apply {
        /// The effective policy.
        policy: Box<Policy>,
        /// e.g. `repository tag ecr-remediator:mode=promote chose the mode`.
        source: Option<String>,
    },
    /// Leave the repository alone.
    OptedOut {
        /// Why, in words.
        reason: String,
    },
    /// The tag has a value nobody can act on: leave the image alone.
    Invalid {
        /// Why, in words.
        reason: String,
    },
}

impl fmt::Display for Resolved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resolved::Apply { source: Some(s), .. } => f.write_str(s),
            Resolved::Apply { source: None, .. } => f.write_str("the rule applies"),
            Resolved::OptedOut { reason } | Resolved::Invalid { reason } => f.write_str(reason),
        }
    }
}

/// Applies the repository's tag value (`None`: no such tag) to the rule's
/// `policy`, under the rule's [`RepositoryTagUse`].
pub fn resolve(policy: &Policy, value: Option<&str>) -> Resolved {
    let apply = |p: Policy, source: Option<String>| Resolved::Apply {
        policy: Box::new(p),
        source,
    };
    match (policy.repository_tag, value) {
        (RepositoryTagUse::Ignored, _) => apply(policy.clone(), None),
        (RepositoryTagUse::Allowed, None) => apply(policy.clone(), None),
        (RepositoryTagUse::Required, None) => Resolved::OptedOut {
            reason: format!(
                "the rule requires repositories to opt in with the tag {MODE_TAG_KEY} \
                 (on, observe, tag, promote or strip); this repository has none"
            ),
        },
        (use_, Some(v)) => match RepositoryChoice::parse(v) {
            None => Resolved::Invalid {
                reason: format!(
                    "repository tag {MODE_TAG_KEY}={v:?} is not one of off, on, observe, tag, promote, strip; \
                     the image is left alone until it is fixed"
                ),
            },
            Some(RepositoryChoice::Off) => Resolved::OptedOut {
                reason: format!("repository tag {MODE_TAG_KEY}=off opts this repository out"),
            },
            Some(RepositoryChoice::On) => apply(
                policy.clone(),
                Some(match use_ {
                    RepositoryTagUse::Required => format!("repository tag {MODE_TAG_KEY}=on opted in"),
                    _ => format!("repository tag {MODE_TAG_KEY}=on kept the rule's mode"),
                }),
            ),
            Some(RepositoryChoice::Mode(mode)) if policy.mode_pinned && mode != policy.mode => apply(
                policy.clone(),
                Some(format!(
                    "repository tag {MODE_TAG_KEY}={mode} overridden: the operator chose --mode {} for this run",
                    policy.mode
                )),
            ),
            Some(RepositoryChoice::Mode(mode)) => apply(
                Policy { mode, ..policy.clone() },
                Some(format!("repository tag {MODE_TAG_KEY}={mode} chose the mode")),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mode_the_operator_pinned_wins_over_the_tag_but_an_opt_out_still_counts() {
        let pinned = Policy {
            mode: Mode::Observe,
            mode_pinned: true,
            ..Policy::default()
        };
        for value in ["promote", "strip", "tag", "on"] {
            let Resolved::Apply { policy, .. } = resolve(&pinned, Some(value)) else {
                panic!("{value}: left alone")
            };
            assert_eq!(policy.mode, Mode::Observe, "{value}");
        }
        assert!(matches!(resolve(&pinned, Some("off")), Resolved::OptedOut { .. }));
    }

    fn policy(use_: RepositoryTagUse) -> Policy {
        Policy {
            mode: Mode::Tag,
            delete_orphans: true,
            repository_tag: use_,
            ..Policy::default()
        }
    }

    #[test]
    fn every_use_and_value() {
        use RepositoryTagUse::*;
        let mode_of = |r: &Resolved| match r {
            Resolved::Apply { policy, .. } => Some(policy.mode),
            _ => None,
        };
        // (use, tag value, effective mode or None when left alone, skip code)
        type Case = (
            RepositoryTagUse,
            Option<&'static str>,
            Option<Mode>,
            Option<&'static str>,
        );
        let cases: [Case; 15] = [
            (Allowed, None, Some(Mode::Tag), None),
            (Allowed, Some("promote"), Some(Mode::Promote), None),
            (Allowed, Some(" STRIP "), Some(Mode::Strip), None),
            (Allowed, Some("observe"), Some(Mode::Observe), None),
            (Allowed, Some("on"), Some(Mode::Tag), None),
            (Allowed, Some("off"), None, Some("opted_out")),
            (Allowed, Some("yes please"), None, Some("invalid_repository_tag")),
            (Allowed, Some(""), None, Some("invalid_repository_tag")),
            (Required, None, None, Some("opted_out")),
            (Required, Some("on"), Some(Mode::Tag), None),
            (Required, Some("promote"), Some(Mode::Promote), None),
            (Required, Some("off"), None, Some("opted_out")),
            (Required, Some("bogus"), None, Some("invalid_repository_tag")),
            (Ignored, None, Some(Mode::Tag), None),
            (Ignored, Some("off"), Some(Mode::Tag), None),
        ];
        for (use_, value, mode, code) in cases {
            let r = resolve(&policy(use_), value);
            assert_eq!(mode_of(&r), mode, "{use_:?} {value:?}");
            let left_alone = match r {
                Resolved::Apply { .. } => None,
                Resolved::OptedOut { .. } => Some("opted_out"),
                Resolved::Invalid { .. } => Some("invalid_repository_tag"),
            };
            assert_eq!(left_alone, code, "{use_:?} {value:?}");
        }
    }

    #[test]
    fn the_tag_changes_the_mode_only() {
        let base = policy(RepositoryTagUse::Allowed);
        let Resolved::Apply { policy: p, source } = resolve(&base, Some("promote")) else {
            panic!("applies")
        };
        assert_eq!(
            Policy {
                mode: Mode::Tag,
                ..(*p).clone()
            },
            base,
            "everything but the mode stays the rule's"
        );
        assert_eq!(
            source.as_deref(),
            Some("repository tag ecr-remediator:mode=promote chose the mode")
        );
        let off = Policy {
            delete_orphans: false,
            ..base
        };
        let Resolved::Apply { policy: p, .. } = resolve(&off, Some("strip")) else {
            panic!("applies")
        };
        assert!(!p.delete_orphans, "a tag never turns deletion on");
    }

    #[test]
    fn parse_use() {
        assert_eq!(RepositoryTagUse::parse("Required"), Some(RepositoryTagUse::Required));
        assert_eq!(RepositoryTagUse::parse("allowed"), Some(RepositoryTagUse::Allowed));
        assert_eq!(RepositoryTagUse::parse("ignored"), Some(RepositoryTagUse::Ignored));
        assert_eq!(RepositoryTagUse::parse("maybe"), None);
        assert!(!RepositoryTagUse::Ignored.reads_tag());
    }
}
