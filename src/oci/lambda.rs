//! Whether AWS Lambda would take an image manifest: a verdict from the
//! manifest's exact bytes and its index entry's platform, with no IO.
//!
//! Lambda checks an image twice: the media types when a function is created
//! or updated, then, asynchronously, the layers while it optimises the image
//! (the function goes `Failed` with `InvalidImage`). The verdict checks only
//! what AWS documents (`docs/facts.md`, "Lambda"):
//!
//! - the manifest is one image manifest (Docker v2 schema 2 or OCI), not an
//!   index or a manifest list;
//! - its config is an image configuration (the refusal names "manifest,
//!   config or layer media type");
//! - one Linux platform, `amd64` (Lambda's `x86_64`) or `arm64`, and the one
//!   the policy targets when it names one;
//! - the image, uncompressed, is at most 10 GiB: refused only when the
//!   manifest proves it is over (uncompressed layers count their size,
//!   compressed ones at least theirs);
//! - manifests under 25,400 bytes are recommended.
//!
//! Lambda lists no layer media types. Plain and gzip-compressed tar layers
//! are what every image builder writes and what Lambda's own base images
//! use; zstd, eStargz, foreign and non-distributable layers are not
//! documented either way, so they make the verdict `unknown`, never a guess.

use serde::Serialize;

use crate::oci::digest::Digest;
use crate::oci::manifest::{Manifest, Platform, RawManifest};
use crate::oci::media_type::{DOCKER_CONFIG, LayerFormat, OCI_CONFIG};

/// Lambda's limit on an image's uncompressed size, layers included (10 GiB).
pub const MAX_UNCOMPRESSED_BYTES: u64 = 10 * 1024 * 1024 * 1024;
/// The manifest size Lambda recommends staying under.
pub const RECOMMENDED_MANIFEST_BYTES: usize = 25_400;

/// The annotation eStargz layers carry (their table of contents).
const ESTARGZ_TOC: &str = "containerd.io/snapshot/stargz/toc.digest";

/// The verdict on one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Every rule AWS documents that a manifest shows holds.
    Yes,
    /// Lambda refuses it, for these reasons.
    No {
        /// Each rule it breaks.
        reasons: Vec<Refusal>,
    },
    /// Nothing it breaks is known, but these could not be checked.
    Unknown {
        /// What could not be checked, and why.
        unchecked: Vec<Unchecked>,
    },
}

impl Verdict {
    /// `yes`, `no` or `unknown`.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Yes => "yes",
            Verdict::No { .. } => "no",
            Verdict::Unknown { .. } => "unknown",
        }
    }

    /// True when Lambda certainly refuses the image.
    pub fn is_no(&self) -> bool {
        matches!(self, Verdict::No { .. })
    }

    /// True when something could not be checked (and nothing is refused).
    pub fn is_unknown(&self) -> bool {
        matches!(self, Verdict::Unknown { .. })
    }

    /// One line for people: `yes`, `no: …`, `unknown: …`.
    pub fn describe(&self) -> String {
        match self {
            Verdict::Yes => "yes".to_owned(),
            Verdict::No { reasons } => {
                format!(
                    "no: {}",
                    reasons.iter().map(Refusal::describe).collect::<Vec<_>>().join("; ")
                )
            }
            Verdict::Unknown { unchecked } => format!(
                "unknown: {}",
                unchecked.iter().map(Unchecked::describe).collect::<Vec<_>>().join("; ")
            ),
        }
    }
}

/// A documented rule the image breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum Refusal {
    /// An index or manifest list: Lambda takes one image manifest.
    NotAnImageManifest {
        /// The manifest's media type.
        media_type: String,
    },
    /// The config is not an image configuration (an artifact's).
    ConfigNotAnImage {
        /// The config's media type.
        media_type: String,
    },
    /// Lambda runs Linux images only.
    NotLinux {
        /// The image's OS.
        os: String,
    },
    /// Lambda offers `x86_64` (`amd64`) and `arm64` only.
    ArchitectureNotOffered {
        /// The image's architecture.
        architecture: String,
    },
    /// Built for another platform than the policy targets.
    NotTheTargetedPlatform {
        /// The image's platform.
        platform: String,
        /// The policy's `promote_platform`.
        target: String,
    },
    /// Certainly over 10 GiB uncompressed.
    TooLarge {
        /// What the manifest proves the uncompressed size is at least.
        at_least_bytes: u64,
    },
}

impl Refusal {
    fn describe(&self) -> String {
        match self {
            Refusal::NotAnImageManifest { media_type } => format!("{media_type} is not one image manifest"),
            Refusal::ConfigNotAnImage { media_type } => format!("config {media_type} is not an image configuration"),
            Refusal::NotLinux { os } => format!("{os} image (Lambda runs Linux only)"),
            Refusal::ArchitectureNotOffered { architecture } => {
                format!("{architecture} (Lambda offers x86_64 and arm64)")
            }
            Refusal::NotTheTargetedPlatform { platform, target } => {
                format!("built for {platform}, the policy targets {target}")
            }
            Refusal::TooLarge { at_least_bytes } => {
                format!("at least {at_least_bytes} bytes uncompressed (the limit is {MAX_UNCOMPRESSED_BYTES})")
            }
        }
    }
}

/// What could not be checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub enum Unchecked {
    /// Neither the index entry nor anything read names the platform.
    Platform,
    /// A layer media type Lambda does not document (zstd, foreign,
    /// non-distributable, anything else).
    LayerMediaType {
        /// The layer.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// An eStargz layer (gzip-compatible, with a table of contents Lambda
    /// does not document).
    EstargzLayer {
        /// The layer.
        digest: Digest,
    },
    /// A layer with external URLs (a foreign layer: Lambda reads ECR only).
    ExternalLayer {
        /// The layer.
        digest: Digest,
    },
    /// The manifest is larger than Lambda recommends.
    ManifestSize {
        /// Its size.
        bytes: usize,
    },
    /// A platform variant (e.g. `amd64/v3`) Lambda does not document.
    Variant {
        /// The image's platform.
        platform: String,
    },
}

impl Unchecked {
    fn describe(&self) -> String {
        match self {
            Unchecked::Platform => "platform not known".to_owned(),
            Unchecked::LayerMediaType { media_type, .. } => format!("layer {media_type} (not documented)"),
            Unchecked::EstargzLayer { digest } => format!("eStargz layer {}", short(digest)),
            Unchecked::ExternalLayer { digest } => format!("layer {} is fetched from outside ECR", short(digest)),
            Unchecked::ManifestSize { bytes } => {
                format!("manifest of {bytes} bytes (Lambda recommends under {RECOMMENDED_MANIFEST_BYTES})")
            }
            Unchecked::Variant { platform } => format!("variant {platform} (not documented)"),
        }
    }
}

/// The architectures Lambda offers (`x86_64`, `arm64`), as Linux image
/// platforms name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LambdaArchitecture {
    /// `linux/amd64`.
    X86_64,
    /// `linux/arm64`.
    Arm64,
}

impl LambdaArchitecture {
    /// The Lambda architecture of a platform Lambda runs (the variant
    /// included), or why it does not, in one line.
    pub fn running(p: &Platform) -> Result<Self, String> {
        let arch = Self::of(p).map_err(|r| r.describe())?;
        if arch.takes_variant(p.variant.as_deref()) {
            Ok(arch)
        } else {
            Err(Unchecked::Variant {
                platform: p.to_string(),
            }
            .describe())
        }
    }

    /// As Lambda's API names it (`Architectures`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Arm64 => "arm64",
        }
    }

    /// The Lambda architecture of a platform, or the rule it breaks.
    fn of(p: &Platform) -> Result<Self, Refusal> {
        match (p.os.as_str(), p.architecture.as_str()) {
            ("linux", "amd64") => Ok(Self::X86_64),
            ("linux", "arm64") => Ok(Self::Arm64),
            ("linux", other) => Err(Refusal::ArchitectureNotOffered {
                architecture: other.to_owned(),
            }),
            (os, _) => Err(Refusal::NotLinux { os: os.to_owned() }),
        }
    }

    /// True for no variant, or the one every arm64 image is (`v8`); Lambda
    /// documents no other (`amd64/v3`, `arm64/v9`, …).
    fn takes_variant(&self, variant: Option<&str>) -> bool {
        match (self, variant) {
            (_, None) | (Self::Arm64, Some("v8")) => true,
            (Self::X86_64, Some(_)) | (Self::Arm64, Some(_)) => false,
        }
    }
}

/// The platform a policy targets (`promote_platform`): implemented by the
/// policy's selector, so that this module needs nothing of the policy.
pub trait PlatformTarget: std::fmt::Display {
    /// True when `platform` is the one targeted.
    fn matches(&self, platform: &Platform) -> bool;
}

fn short(d: &Digest) -> &str {
    d.hex().get(..12).unwrap_or(d.hex())
}

/// The verdict on `manifest`, whose platform its index entry (or its config)
/// gives as `platform`, for a policy that targets `target` (if any).
pub fn verdict(manifest: &RawManifest, platform: Option<&Platform>, target: Option<&dyn PlatformTarget>) -> Verdict {
    let mut no = Vec::new();
    let mut unchecked = Vec::new();
    let image = match manifest.manifest() {
        Manifest::Image(m) => m,
        Manifest::Index(_) => {
            return Verdict::No {
                reasons: vec![Refusal::NotAnImageManifest {
                    media_type: manifest.media_type().as_str().to_owned(),
                }],
            };
        }
    };
    if image.config.media_type != OCI_CONFIG && image.config.media_type != DOCKER_CONFIG {
        no.push(Refusal::ConfigNotAnImage {
            media_type: image.config.media_type.clone(),
        });
    }
    match platform.filter(|p| !p.is_unknown()) {
        None => unchecked.push(Unchecked::Platform),
        Some(p) => match LambdaArchitecture::of(p) {
            Err(refusal) => no.push(refusal),
            Ok(arch) => {
                if let Some(t) = target.filter(|t| !t.matches(p)) {
                    no.push(Refusal::NotTheTargetedPlatform {
                        platform: p.to_string(),
                        target: t.to_string(),
                    });
                } else if !arch.takes_variant(p.variant.as_deref()) {
                    unchecked.push(Unchecked::Variant {
                        platform: p.to_string(),
                    });
                }
            }
        },
    }
    // A gzip stream is never much smaller than what it holds (stored
    // blocks: 5 bytes of header per 64 KiB, plus 18): what it holds is at
    // least 99.9 % of its size.
    let mut at_least: u64 = 0;
    for layer in &image.layers {
        match LayerFormat::of(&layer.media_type) {
            LayerFormat::Tar => at_least = at_least.saturating_add(layer.size),
            LayerFormat::TarGzip => {
                at_least = at_least.saturating_add(layer.size - layer.size / 1000);
                if layer.annotation(ESTARGZ_TOC).is_some() {
                    unchecked.push(Unchecked::EstargzLayer {
                        digest: layer.digest.clone(),
                    });
                }
            }
            LayerFormat::TarZstd | LayerFormat::Other => unchecked.push(Unchecked::LayerMediaType {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
            }),
        }
        if !layer.urls.is_empty() {
            unchecked.push(Unchecked::ExternalLayer {
                digest: layer.digest.clone(),
            });
        }
    }
    if at_least > MAX_UNCOMPRESSED_BYTES {
        no.push(Refusal::TooLarge {
            at_least_bytes: at_least,
        });
    }
    if manifest.bytes().len() >= RECOMMENDED_MANIFEST_BYTES {
        unchecked.push(Unchecked::ManifestSize {
            bytes: manifest.bytes().len(),
        });
    }
    if !no.is_empty() {
        Verdict::No { reasons: no }
    } else if !unchecked.is_empty() {
        Verdict::Unknown { unchecked }
    } else {
        Verdict::Yes
    }
}

#[cfg(test)]
mod tests;
