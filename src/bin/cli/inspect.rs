//! `ecr-remediator inspect`: classify a manifest file.

use anyhow::Context;
use ecr_remediator::oci::inspect::InspectReport;
use ecr_remediator::oci::manifest::{Platform, RawManifest};

/// The classification of `file` and Lambda's verdict on it, as JSON
/// (`platform`: the image's, as its index entry names it).
pub(crate) fn run(
    file: &std::path::Path,
    media_type: Option<&str>,
    platform: Option<&Platform>,
) -> anyhow::Result<String> {
    // Never more than one byte past ECR's manifest limit, whatever the file
    // is (`/dev/zero`, a pipe, a huge file): the parser then reports the size.
    let limit = u64::try_from(ecr_remediator::oci::manifest::MAX_MANIFEST_BYTES).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, limit + 1), &mut bytes))
        .with_context(|| format!("cannot read {}", file.display()))?;
    let manifest = RawManifest::parse(bytes, media_type)
        .with_context(|| format!("{} is not a usable manifest", file.display()))?;
    let report = InspectReport::of(&manifest, platform);
    Ok(serde_json::to_string(&report)?)
}

/// `--platform os/arch[/variant]`, as an index entry would name it.
pub(crate) fn platform_arg(s: &str) -> Result<Platform, String> {
    let parts: Vec<&str> = s.split('/').collect();
    match parts.as_slice() {
        [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform::new(os, arch, None)),
        [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
            Ok(Platform::new(os, arch, Some(variant)))
        }
        _ => Err(format!("{s:?} is not os/arch or os/arch/variant (linux/arm64)")),
    }
}
