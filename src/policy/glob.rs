//! Globs over repository names (policy rules) and tags (`sweep --tag`), on
//! `globset`: matching takes time linear in the name, whatever the pattern.
//!
//! `*` matches any run of characters except `/`, `?` one character other
//! than `/`, `**` as a whole path component any number of components
//! (`team/**`, `**/app`, `a/**/b`; `**` alone matches everything), `[...]`
//! one character of a set. Everything else matches itself.

use std::fmt;

/// A compiled glob.
#[derive(Debug, Clone)]
pub struct Glob {
    source: String,
    matcher: globset::GlobMatcher,
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Glob {}

/// Why a pattern is not a glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {problem}")]
pub struct GlobError {
    pattern: String,
    problem: String,
}

impl Glob {
    /// A repository pattern: only characters valid in repository names and
    /// `*`, `?` are allowed (a rule never silently matches nothing because of
    /// an uppercase letter or a space).
    pub fn parse(pattern: &str) -> Result<Self, GlobError> {
        let allowed = |b: u8| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/' | b'*' | b'?');
        if !pattern.bytes().all(allowed) {
            return Err(GlobError {
                pattern: pattern.to_owned(),
                problem: "only lowercase letters, digits, '.', '_', '-', '/', '*' and '?' are allowed".to_owned(),
            });
        }
        Self::compile(pattern)
    }

    /// A tag pattern (`v1.*`, `release-?`): any text a tag may hold.
    pub fn parse_tag(pattern: &str) -> Result<Self, GlobError> {
        Self::compile(pattern)
    }

    fn compile(pattern: &str) -> Result<Self, GlobError> {
        let err = |problem: String| GlobError {
            pattern: pattern.to_owned(),
            problem,
        };
        if pattern.is_empty() {
            return Err(err("empty pattern".to_owned()));
        }
        // `globset` reads a `**` inside a component as `*`: refuse it rather
        // than match less than the pattern seems to say.
        if pattern.split('/').any(|c| c.contains("**") && c != "**") {
            return Err(err(
                "'**' must be a whole path component (team/**, **/app, a/**/b)".to_owned()
            ));
        }
        let glob = globset::GlobBuilder::new(pattern)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| err(e.kind().to_string()))?;
        Ok(Glob {
            source: pattern.to_owned(),
            matcher: glob.compile_matcher(),
        })
    }

    /// True when `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str) -> bool {
        Glob::parse(p).unwrap().matches(s)
    }

    #[test]
    fn matching() {
        assert!(m("my-repo", "my-repo"));
        assert!(!m("my-repo", "my-repo2"));
        assert!(m("lambda/*", "lambda/fn"));
        assert!(!m("lambda/*", "lambda/team/fn"));
        assert!(!m("lambda/*", "lambda"));
        assert!(m("lambda/**", "lambda/team/fn"));
        assert!(m("**", "anything/at/all"));
        assert!(m("*", "top"));
        assert!(!m("*", "a/b"));
        assert!(m("svc-?", "svc-a"));
        assert!(!m("svc-?", "svc-ab"));
        assert!(m("*-lambda", "orders-lambda"));
        assert!(m("team/*/fn", "team/x/fn"));
        assert!(!m("team/*/fn", "team/x/y/fn"));
        assert!(m("**/fn", "a/b/fn"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
    }

    #[test]
    fn invalid() {
        for p in ["", "UPPER", "a b", "a[b]", "a***", "team**"] {
            assert!(Glob::parse(p).is_err(), "{p}");
        }
        assert!(Glob::parse_tag("v[1").is_err());
    }

    #[test]
    fn tag_patterns() {
        let t = |p: &str, s: &str| Glob::parse_tag(p).unwrap().matches(s);
        assert!(t("v1.*", "v1.2") && t("v1.*", "v1.") && !t("v1.*", "v2.0"));
        assert!(t("*", "anything"));
        assert!(t("release-?", "release-7") && !t("release-?", "release-17"));
        assert!(t("*-rc*", "2.0-rc1"));
        assert!(t("V[0-9]*", "V7-Linux"));
    }

    #[test]
    fn a_pattern_made_to_backtrack_still_answers() {
        // The old matcher took exponential time on this shape; a regex does not.
        let p = Glob::parse_tag(&"*a".repeat(40)).unwrap();
        assert!(!p.matches(&format!("{}b", "a".repeat(120))));
        assert!(p.matches(&"a".repeat(120)));
    }
}
