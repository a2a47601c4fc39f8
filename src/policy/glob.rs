//! Repository-name globs for policy rules.
//!
//! `*` matches any run of characters except `/`, `**` matches anything
//! (including `/`), `?` matches one character other than `/`. Everything else
//! matches itself.

use std::fmt;

/// A validated glob over repository names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    source: String,
    tokens: Vec<Token>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(u8),
    AnyOne,
    Star,
    DoubleStar,
}

/// Why a pattern is not a glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid repository pattern {pattern:?}: {problem}")]
pub struct GlobError {
    pattern: String,
    problem: &'static str,
}

impl Glob {
    /// Parses a pattern; only characters valid in repository names and `*`, `?` are allowed.
    pub fn parse(pattern: &str) -> Result<Self, GlobError> {
        let err = |problem| GlobError {
            pattern: pattern.to_owned(),
            problem,
        };
        if pattern.is_empty() {
            return Err(err("empty pattern"));
        }
        if pattern.contains("***") {
            return Err(err("'***' is not meaningful; use '**'"));
        }
        let bytes = pattern.as_bytes();
        let mut tokens = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match b {
                b'*' if bytes.get(i + 1) == Some(&b'*') => {
                    tokens.push(Token::DoubleStar);
                    i += 2;
                    continue;
                }
                b'*' => tokens.push(Token::Star),
                b'?' => tokens.push(Token::AnyOne),
                b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-' | b'/' => tokens.push(Token::Literal(b)),
                _ => {
                    return Err(err(
                        "only lowercase letters, digits, '.', '_', '-', '/', '*' and '?' are allowed",
                    ));
                }
            }
            i += 1;
        }
        Ok(Glob {
            source: pattern.to_owned(),
            tokens,
        })
    }

    /// True when `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        let s = name.as_bytes();
        // reachable[j]: the tokens consumed so far can match s[..j].
        let mut reachable = vec![false; s.len() + 1];
        reachable[0] = true;
        for token in &self.tokens {
            let mut next = vec![false; s.len() + 1];
            match token {
                Token::Literal(c) => {
                    for j in 0..s.len() {
                        if reachable[j] && s[j] == *c {
                            next[j + 1] = true;
                        }
                    }
                }
                Token::AnyOne => {
                    for j in 0..s.len() {
                        if reachable[j] && s[j] != b'/' {
                            next[j + 1] = true;
                        }
                    }
                }
                Token::Star => {
                    for j in 0..=s.len() {
                        if reachable[j] || (j > 0 && next[j - 1] && s[j - 1] != b'/') {
                            next[j] = true;
                        }
                    }
                }
                Token::DoubleStar => {
                    for j in 0..=s.len() {
                        if reachable[j] || (j > 0 && next[j - 1]) {
                            next[j] = true;
                        }
                    }
                }
            }
            reachable = next;
        }
        reachable[s.len()]
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
        for p in ["", "UPPER", "a b", "a[b]", "a***"] {
            assert!(Glob::parse(p).is_err(), "{p}");
        }
    }
}
