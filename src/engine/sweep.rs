//! Sweeps: from one listing of a repository, which images the per-push path
//! should handle, and what is left alone and why. Pure; the listing is read
//! once per repository per sweep, never once per image.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::engine::registry::ImageInfo;
use crate::oci::digest::Digest;
use crate::oci::media_type::ManifestMediaType;
use crate::oci::names::ImageTag;
use crate::policy::Policy;

/// A tag pattern: `*` any characters, `?` one character, the rest literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagPattern(String);

impl TagPattern {
    /// A pattern (any text is a valid pattern).
    pub fn new(pattern: &str) -> Self {
        TagPattern(pattern.to_owned())
    }

    /// True when the whole tag matches.
    pub fn matches(&self, tag: &str) -> bool {
        fn go(p: &[char], t: &[char]) -> bool {
            match (p.split_first(), t.split_first()) {
                (None, None) => true,
                (Some(('*', rest)), _) => go(rest, t) || (!t.is_empty() && go(p, &t[1..])),
                (Some(('?', rest)), Some((_, trest))) => go(rest, trest),
                (Some((c, rest)), Some((d, trest))) if c == d => go(rest, trest),
                _ => false,
            }
        }
        let p: Vec<char> = self.0.chars().collect();
        let t: Vec<char> = tag.chars().collect();
        go(&p, &t)
    }
}

/// Which images a sweep considers.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only tags matching this pattern.
    pub tag: Option<TagPattern>,
    /// Only images pushed at or after this instant (milliseconds since the epoch).
    pub since_ms: Option<i64>,
}

/// Why a sweep leaves a listed image alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Untouched {
    /// A tagged signature (cosign tag or signature artifact type).
    Signature,
    /// A tagged Helm chart.
    HelmChart,
    /// A tagged SOCI index.
    SociIndex,
    /// Another tagged OCI artifact (not a runnable image).
    OtherArtifact,
    /// An index without a tag: nothing was pushed under it to remediate.
    UntaggedIndex,
}

impl Untouched {
    /// A short human description.
    pub fn describe(self) -> &'static str {
        match self {
            Untouched::Signature => "signature",
            Untouched::HelmChart => "Helm chart",
            Untouched::SociIndex => "SOCI index",
            Untouched::OtherArtifact => "other artifact",
            Untouched::UntaggedIndex => "untagged index",
        }
    }
}

/// What a sweep does with one repository's listing.
#[derive(Debug, Clone, Default)]
pub struct SweepPlan {
    /// Tagged indexes to handle as if just pushed, oldest first.
    pub jobs: Vec<(Digest, ImageTag)>,
    /// Indexes in the listing.
    pub indexes_seen: usize,
    /// Tagged indexes whose only tags are this service's keep tags (already remediated).
    pub already_fine: usize,
    /// Images left alone, by reason.
    pub untouched: BTreeMap<Untouched, usize>,
    /// Size of every listed image, to count the bytes deletions reclaim.
    pub sizes: BTreeMap<Digest, i64>,
}

fn is_index(info: &ImageInfo) -> bool {
    info.media_type
        .as_deref()
        .and_then(ManifestMediaType::parse)
        .is_some_and(ManifestMediaType::is_index)
}

fn untouched_kind(info: &ImageInfo) -> Option<Untouched> {
    let artifact = info.artifact_media_type.as_deref().unwrap_or_default();
    let cosign = info
        .tags
        .iter()
        .any(|t| t.starts_with("sha256-") && (t.ends_with(".sig") || t.ends_with(".att") || t.ends_with(".sbom")));
    if cosign || artifact.contains("notary") || artifact.contains("sigstore") || artifact.contains("cosign") {
        Some(Untouched::Signature)
    } else if artifact.contains("helm") {
        Some(Untouched::HelmChart)
    } else if artifact.contains("soci") {
        Some(Untouched::SociIndex)
    } else if !artifact.is_empty()
        && artifact != "application/vnd.oci.image.config.v1+json"
        && artifact != "application/vnd.docker.container.image.v1+json"
    {
        Some(Untouched::OtherArtifact)
    } else {
        None
    }
}

/// Decides what to do with one repository's listing under its policy.
pub fn select(listing: &[(Digest, ImageInfo)], policy: &Policy, selection: &Selection) -> SweepPlan {
    let mut plan = SweepPlan::default();
    let mut jobs: Vec<(i64, Digest, ImageTag)> = Vec::new();
    for (digest, info) in listing {
        if let Some(size) = info.size_bytes {
            plan.sizes.insert(digest.clone(), size);
        }
        if !is_index(info) {
            // Tagged artifacts are reported; untagged manifests are an
            // index's entries (the listing cannot tell an attestation from
            // another artifact by its config type) and go with their index.
            if !info.tags.is_empty()
                && let Some(kind) = untouched_kind(info)
            {
                *plan.untouched.entry(kind).or_default() += 1;
            }
            continue;
        }
        plan.indexes_seen += 1;
        if info.tags.is_empty() {
            *plan.untouched.entry(Untouched::UntaggedIndex).or_default() += 1;
            continue;
        }
        let pushed = info.pushed_at_ms.unwrap_or(i64::MAX);
        if selection.since_ms.is_some_and(|since| pushed < since) {
            continue;
        }
        let mut user_tags = 0;
        for tag in &info.tags {
            let Ok(tag) = ImageTag::parse(tag) else { continue };
            if policy.keep_tag.as_ref().is_some_and(|k| k.could_have_written(&tag)) {
                continue;
            }
            user_tags += 1;
            if selection.tag.as_ref().is_none_or(|p| p.matches(tag.as_str())) {
                jobs.push((pushed, digest.clone(), tag));
            }
        }
        if user_tags == 0 {
            plan.already_fine += 1;
        }
    }
    jobs.sort();
    plan.jobs = jobs.into_iter().map(|(_, d, t)| (d, t)).collect();
    plan
}

/// Parses `--since`: a duration back from `now_ms` (`90s`, `30m`, `12h`,
/// `7d`, `2w`) or a UTC date (`2026-11-01`) or instant
/// (`2026-11-01T12:00:00Z`). Returns milliseconds since the epoch.
pub fn parse_since(text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    let bad = || {
        format!(
            "invalid --since {text:?}: give a duration (90s, 30m, 12h, 7d, 2w) or a UTC date (2026-11-01 or 2026-11-01T12:00:00Z)"
        )
    };
    let is_duration = text.len() > 1
        && text.chars().last().is_some_and(|c| c.is_ascii_lowercase())
        && text[..text.len() - 1].chars().all(|c| c.is_ascii_digit() || c == '-');
    if is_duration {
        let unit = text.chars().last().unwrap_or('?');
        let n: i64 = text[..text.len() - 1].parse().map_err(|_| bad())?;
        let seconds = match unit {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        if n < 0 {
            return Err(bad());
        }
        return Ok(now_ms - n.saturating_mul(seconds).saturating_mul(1000));
    }
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z').ok_or_else(bad)?)),
        None => (text, None),
    };
    let parts: Vec<i64> = date
        .split('-')
        .map(|p| p.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [y, m, d] = parts[..] else { return Err(bad()) };
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let secs_of_day = match time {
        None => 0,
        Some(t) => {
            let hms: Vec<i64> = t
                .split(':')
                .map(|p| p.parse().map_err(|_| bad()))
                .collect::<Result<_, _>>()?;
            let [h, mi, s] = hms[..] else { return Err(bad()) };
            if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&s) {
                return Err(bad());
            }
            h * 3600 + mi * 60 + s
        }
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok((days * 86_400 + secs_of_day) * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::PolicySet;

    #[test]
    fn since_takes_durations_and_dates() {
        let now = 1_795_435_200_000; // 2026-11-23T12:00:00Z
        assert_eq!(parse_since("7d", now), Ok(now - 7 * 86_400_000));
        assert_eq!(parse_since("90s", now), Ok(now - 90_000));
        assert_eq!(parse_since("2026-11-23T12:00:00Z", 0), Ok(now));
        assert_eq!(parse_since("2026-11-23", 0), Ok(now - 12 * 3_600_000));
        assert_eq!(parse_since("1970-01-01", 0), Ok(0));
        assert_eq!(parse_since("2000-02-29", 0), Ok(951_782_400_000));
        for bad in [
            "",
            "7x",
            "d",
            "-3d",
            "2026-13-01",
            "2026-11-23T25:00:00Z",
            "2026-11-23T12:00:00",
            "yesterday",
        ] {
            let err = parse_since(bad, now).unwrap_err();
            assert!(err.contains("--since"), "{bad}: {err}");
        }
    }

    fn info(media_type: &str, tags: &[&str], pushed: i64) -> ImageInfo {
        ImageInfo {
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
            pushed_at_ms: Some(pushed),
            media_type: Some(media_type.to_owned()),
            artifact_media_type: None,
            size_bytes: Some(100),
        }
    }

    const INDEX: &str = "application/vnd.oci.image.index.v1+json";
    const IMAGE: &str = "application/vnd.oci.image.manifest.v1+json";

    #[test]
    fn tag_patterns() {
        let p = TagPattern::new("v1.*");
        assert!(p.matches("v1.2") && p.matches("v1.") && !p.matches("v2.0"));
        assert!(TagPattern::new("*").matches(""));
        assert!(TagPattern::new("release-?").matches("release-7"));
        assert!(!TagPattern::new("release-?").matches("release-17"));
        assert!(TagPattern::new("*-rc*").matches("2.0-rc1"));
    }

    #[test]
    fn tagged_indexes_are_handled_oldest_first_and_keep_tags_count_as_done() {
        let policy = PolicySet::default().default;
        let d = |n: u8| Digest::sha256_of(&[n]);
        let listing = vec![
            (d(1), info(INDEX, &["v2"], 20)),
            (d(2), info(INDEX, &["v1", "latest"], 10)),
            (d(3), info(INDEX, &["v0-index"], 5)),
            (d(4), info(INDEX, &[], 1)),
            (d(5), info(IMAGE, &["plain"], 1)),
            (d(6), info(IMAGE, &["sha256-abc.sig"], 1)),
        ];
        let plan = select(&listing, &policy, &Selection::default());
        let jobs: Vec<(Digest, &str)> = plan.jobs.iter().map(|(d, t)| (d.clone(), t.as_str())).collect();
        assert_eq!(jobs, vec![(d(2), "latest"), (d(2), "v1"), (d(1), "v2")]);
        assert_eq!(plan.indexes_seen, 4);
        assert_eq!(plan.already_fine, 1);
        assert_eq!(plan.untouched[&Untouched::UntaggedIndex], 1);
        assert_eq!(plan.untouched[&Untouched::Signature], 1);
        let since = select(
            &listing,
            &policy,
            &Selection {
                since_ms: Some(15),
                tag: Some(TagPattern::new("v*")),
            },
        );
        assert_eq!(since.jobs, vec![(d(1), ImageTag::parse("v2").unwrap())]);
    }
}
