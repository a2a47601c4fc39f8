//! `ecr-remediator inspect`: classify a manifest file.

use anyhow::Context;
use ecr_remediator::oci::classify::classify;
use ecr_remediator::oci::inspect::InspectReport;
use ecr_remediator::oci::manifest::RawManifest;

/// The classification of `file` as JSON.
pub(crate) fn run(file: &std::path::Path, media_type: Option<&str>) -> anyhow::Result<String> {
    // Never more than one byte past ECR's manifest limit, whatever the file
    // is (`/dev/zero`, a pipe, a huge file): the parser then reports the size.
    let limit = u64::try_from(ecr_remediator::oci::manifest::MAX_MANIFEST_BYTES).unwrap_or(u64::MAX);
    let mut bytes = Vec::new();
    std::fs::File::open(file)
        .and_then(|f| std::io::Read::read_to_end(&mut std::io::Read::take(f, limit + 1), &mut bytes))
        .with_context(|| format!("cannot read {}", file.display()))?;
    let manifest = RawManifest::parse(bytes, media_type)
        .with_context(|| format!("{} is not a usable manifest", file.display()))?;
    let report = InspectReport::from(&classify(&manifest));
    Ok(serde_json::to_string(&report)?)
}
