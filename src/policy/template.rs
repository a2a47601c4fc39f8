//! Tag templates: how derived tags and keep tags are named.
//!
//! Placeholders: `{tag}` (the pushed tag), `{os}`, `{arch}`, `{variant}`
//! (empty when the platform has none), `{-variant}` (`-<variant>` or nothing)
//! and `{platform}` (`os-arch[-variant]`). Everything else is literal.

use std::fmt;

use crate::oci::manifest::Platform;
use crate::oci::names::{ImageTag, NameError};

/// The default template for derived tags: `v7` on `linux/arm64/v8` gives `v7-linux-arm64-v8`.
pub const DEFAULT_TAG_TEMPLATE: &str = "{tag}-{os}-{arch}{-variant}";
/// The default keep-tag template: `v7` gives `v7-index`.
pub const DEFAULT_KEEP_TEMPLATE: &str = "{tag}-index";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Tag,
    Os,
    Arch,
    Variant,
    DashVariant,
    Platform,
}

impl Part {
    fn is_platform(&self) -> bool {
        matches!(
            self,
            Part::Os | Part::Arch | Part::Variant | Part::DashVariant | Part::Platform
        )
    }
}

/// Why a template is invalid, or could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// Bad syntax or unknown placeholder.
    #[error("template {template:?}: {problem}")]
    Syntax {
        /// The template.
        template: String,
        /// What is wrong.
        problem: String,
    },
    /// The template needs a platform and the manifest's is unknown.
    #[error("template {0:?} needs a platform, and this manifest's platform is unknown")]
    UnknownPlatform(String),
    /// The rendered text is not a valid tag.
    #[error(transparent)]
    InvalidTag(#[from] NameError),
}

/// A parsed tag template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagTemplate {
    source: String,
    parts: Vec<Part>,
}

impl TagTemplate {
    /// Parses a template.
    pub fn parse(template: &str) -> Result<Self, TemplateError> {
        let syntax = |problem: String| TemplateError::Syntax {
            template: template.to_owned(),
            problem,
        };
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = template;
        while let Some(c) = rest.chars().next() {
            match c {
                '{' => {
                    let end = rest
                        .find('}')
                        .ok_or_else(|| syntax("'{' without a closing '}'".to_owned()))?;
                    let name = &rest[1..end];
                    let part = match name {
                        "tag" => Part::Tag,
                        "os" => Part::Os,
                        "arch" => Part::Arch,
                        "variant" => Part::Variant,
                        "-variant" => Part::DashVariant,
                        "platform" => Part::Platform,
                        other => {
                            return Err(syntax(format!(
                                "unknown placeholder {{{other}}} (known: {{tag}}, {{os}}, {{arch}}, \
                                 {{variant}}, {{-variant}}, {{platform}})"
                            )));
                        }
                    };
                    if !literal.is_empty() {
                        parts.push(Part::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(part);
                    rest = &rest[end + 1..];
                }
                '}' => return Err(syntax("'}' without an opening '{'".to_owned())),
                c if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') => {
                    literal.push(c);
                    rest = &rest[c.len_utf8()..];
                }
                other => {
                    return Err(syntax(format!(
                        "character {other:?} cannot appear in a tag (letters, digits, '_', '.', '-')"
                    )));
                }
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if parts.is_empty() {
            return Err(syntax("empty template".to_owned()));
        }
        Ok(TagTemplate {
            source: template.to_owned(),
            parts,
        })
    }

    /// [`DEFAULT_TAG_TEMPLATE`], built without parsing (a unit test checks
    /// it equals the parsed form).
    pub fn default_derived() -> Self {
        TagTemplate {
            source: DEFAULT_TAG_TEMPLATE.to_owned(),
            parts: vec![
                Part::Tag,
                Part::Literal("-".to_owned()),
                Part::Os,
                Part::Literal("-".to_owned()),
                Part::Arch,
                Part::DashVariant,
            ],
        }
    }

    /// [`DEFAULT_KEEP_TEMPLATE`], built without parsing.
    pub fn default_keep() -> Self {
        TagTemplate {
            source: DEFAULT_KEEP_TEMPLATE.to_owned(),
            parts: vec![Part::Tag, Part::Literal("-index".to_owned())],
        }
    }

    /// [`TagTemplate::default_keep`], made once.
    pub fn default_keep_ref() -> &'static TagTemplate {
        static DEFAULT: std::sync::OnceLock<TagTemplate> = std::sync::OnceLock::new();
        DEFAULT.get_or_init(TagTemplate::default_keep)
    }

    /// Parses a template for derived (per-platform) tags: it must use at least
    /// one platform placeholder, or every platform would get the same tag.
    pub fn parse_derived(template: &str) -> Result<Self, TemplateError> {
        let t = Self::parse(template)?;
        if !t.parts.iter().any(Part::is_platform) {
            return Err(TemplateError::Syntax {
                template: template.to_owned(),
                problem: "a derived-tag template needs a platform placeholder ({os}, {arch}, \
                          {variant}, {-variant} or {platform})"
                    .to_owned(),
            });
        }
        Ok(t)
    }

    /// Parses a keep-tag template: exactly one `{tag}`, no platform
    /// placeholders, and some literal text so it differs from the tag.
    pub fn parse_keep(template: &str) -> Result<Self, TemplateError> {
        let t = Self::parse(template)?;
        let problem = if t.parts.iter().any(Part::is_platform) {
            Some("a keep-tag template names the index, so it cannot use platform placeholders")
        } else if t.parts.iter().filter(|p| **p == Part::Tag).count() != 1 {
            Some("a keep-tag template must contain {tag} exactly once")
        } else if t.parts.len() < 2 {
            Some("a keep-tag template needs text besides {tag}, or it would be the pushed tag itself")
        } else {
            None
        };
        match problem {
            Some(p) => Err(TemplateError::Syntax {
                template: template.to_owned(),
                problem: p.to_owned(),
            }),
            None => Ok(t),
        }
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Renders the template for `tag` on `platform`, validating the result as a tag.
    pub fn render(&self, tag: &ImageTag, platform: Option<&Platform>) -> Result<ImageTag, TemplateError> {
        let mut out = String::new();
        for part in &self.parts {
            let p = || {
                if part.is_platform() {
                    platform.ok_or_else(|| TemplateError::UnknownPlatform(self.source.clone()))
                } else {
                    Err(TemplateError::UnknownPlatform(self.source.clone()))
                }
            };
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Tag => out.push_str(tag.as_str()),
                Part::Os => out.push_str(&p()?.os),
                Part::Arch => out.push_str(&p()?.architecture),
                Part::Variant => out.push_str(p()?.variant.as_deref().unwrap_or("")),
                Part::DashVariant => {
                    if let Some(v) = &p()?.variant {
                        out.push('-');
                        out.push_str(v);
                    }
                }
                Part::Platform => {
                    let pl = p()?;
                    out.push_str(&pl.os);
                    out.push('-');
                    out.push_str(&pl.architecture);
                    if let Some(v) = &pl.variant {
                        out.push('-');
                        out.push_str(v);
                    }
                }
            }
        }
        Ok(ImageTag::parse_oci(&out)?)
    }

    /// For a keep-tag template (`prefix{tag}suffix`): true when `tag` has that
    /// shape, i.e. could be a keep tag this template wrote. Used so the
    /// service never remediates (and loops on) its own keep tags.
    pub fn could_have_written(&self, tag: &ImageTag) -> bool {
        self.inner(tag.as_str()).is_some()
    }

    /// For a keep-tag template (`prefix{tag}suffix`): the pushed tag that
    /// `tag` would be the keep tag of (`v1-index` → `v1` under
    /// `{tag}-index`), when it has that shape and the rest is a valid tag.
    pub fn source_tag(&self, tag: &ImageTag) -> Option<ImageTag> {
        self.inner(tag.as_str()).and_then(|t| ImageTag::parse(t).ok())
    }

    /// What stands for `{tag}` in `s`, when `s` has this template's shape.
    fn inner<'s>(&self, s: &'s str) -> Option<&'s str> {
        let at = self.parts.iter().position(|p| *p == Part::Tag)?;
        let lit = |parts: &[Part]| {
            parts
                .iter()
                .map(|p| match p {
                    Part::Literal(s) => s.as_str(),
                    _ => "",
                })
                .collect::<String>()
        };
        let prefix = lit(&self.parts[..at]);
        let suffix = lit(&self.parts[at + 1..]);
        if s.len() <= prefix.len() + suffix.len() || !s.starts_with(&prefix) || !s.ends_with(&suffix) {
            return None;
        }
        s.get(prefix.len()..s.len() - suffix.len())
    }
}

impl fmt::Display for TagTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(s: &str) -> ImageTag {
        ImageTag::parse(s).unwrap()
    }

    #[test]
    fn defaults_equal_their_parsed_forms() {
        assert_eq!(
            TagTemplate::default_derived(),
            TagTemplate::parse_derived(DEFAULT_TAG_TEMPLATE).unwrap()
        );
        assert_eq!(
            TagTemplate::default_keep(),
            TagTemplate::parse_keep(DEFAULT_KEEP_TEMPLATE).unwrap()
        );
    }

    #[test]
    fn default_derived_template() {
        let t = TagTemplate::parse_derived(DEFAULT_TAG_TEMPLATE).unwrap();
        let arm = Platform::new("linux", "arm64", Some("v8"));
        let amd = Platform::new("linux", "amd64", None);
        assert_eq!(t.render(&tag("v7"), Some(&arm)).unwrap().as_str(), "v7-linux-arm64-v8");
        assert_eq!(t.render(&tag("v7"), Some(&amd)).unwrap().as_str(), "v7-linux-amd64");
        assert!(matches!(
            t.render(&tag("v7"), None),
            Err(TemplateError::UnknownPlatform(_))
        ));
        let p = TagTemplate::parse_derived("{platform}-{tag}").unwrap();
        assert_eq!(p.render(&tag("v7"), Some(&arm)).unwrap().as_str(), "linux-arm64-v8-v7");
    }

    #[test]
    fn render_validates_tag() {
        let t = TagTemplate::parse_derived("{tag}-{os}").unwrap();
        let long = tag(&"a".repeat(125));
        assert!(matches!(
            t.render(&long, Some(&Platform::new("linux", "amd64", None))),
            Err(TemplateError::InvalidTag(_))
        ));
        let weird = Platform::new("linux", "amd64+x", None);
        assert!(t.render(&tag("v1"), Some(&Platform::new("li nux", "a", None))).is_err());
        assert!(
            TagTemplate::parse_derived("{tag}-{arch}")
                .unwrap()
                .render(&tag("v1"), Some(&weird))
                .is_err()
        );
    }

    #[test]
    fn syntax_errors() {
        for bad in ["", "{tag", "tag}", "{nope}", "{tag}/x", "{tag} x"] {
            assert!(TagTemplate::parse(bad).is_err(), "{bad}");
        }
        assert!(TagTemplate::parse_derived("{tag}-index").is_err());
        assert!(TagTemplate::parse_keep("{tag}").is_err());
        assert!(TagTemplate::parse_keep("{tag}-{arch}").is_err());
        assert!(TagTemplate::parse_keep("{tag}-{tag}").is_err());
        assert!(TagTemplate::parse_keep("index").is_err());
        assert!(TagTemplate::parse_keep("keep-{tag}").is_ok());
    }

    #[test]
    fn keep_tag_recognition() {
        let k = TagTemplate::parse_keep(DEFAULT_KEEP_TEMPLATE).unwrap();
        assert_eq!(k.render(&tag("v7"), None).unwrap().as_str(), "v7-index");
        assert!(k.could_have_written(&tag("v7-index")));
        assert!(!k.could_have_written(&tag("-index".trim_start_matches('-'))));
        assert!(!k.could_have_written(&tag("v7")));
        let p = TagTemplate::parse_keep("idx-{tag}").unwrap();
        assert!(p.could_have_written(&tag("idx-v7")));
        assert!(!p.could_have_written(&tag("v7-index")));
    }
}
