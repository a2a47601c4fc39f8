//! `ecr-remediator inspect`: classify a manifest, from a file or the registry.

use anyhow::Context;
use ecr_remediator::RepositoryName;
use ecr_remediator::aws::ecr::EcrRegistry;
use ecr_remediator::engine::registry::{FetchFailure, ImageRef, Registry as _};
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

/// The classification of what `repository` holds under `named` (a tag or a
/// digest) and Lambda's verdict on it, as JSON: the same report as for a
/// file, of the exact bytes ECR serves. One `BatchGetImage`.
pub(crate) async fn run_registry(
    repository: &RepositoryName,
    named: ImageRef,
    platform: Option<&Platform>,
    aws: &crate::connect::AwsArgs,
) -> anyhow::Result<String> {
    let (sdk, _) = crate::connect::connect_to_read(aws, 3).await?;
    let registry = EcrRegistry::new(ecr_remediator::aws::ecr_client(&sdk), 10.0, 10);
    let what = match &named {
        ImageRef::Tag(t) => format!("{repository}:{t}"),
        ImageRef::Digest(d) => format!("{repository}@{d}"),
    };
    let fetched = registry
        .get_images(repository, std::slice::from_ref(&named))
        .await
        .with_context(|| format!("cannot read {what}"))?;
    let manifest = match fetched.into_iter().next().map(|(_, r)| r) {
        Some(Ok(m)) => m,
        Some(Err(FetchFailure::NotFound)) | None => anyhow::bail!("{what} does not exist"),
        Some(Err(e)) => anyhow::bail!("{what} cannot be read: {e}"),
    };
    Ok(serde_json::to_string(&InspectReport::of(&manifest, platform))?)
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
