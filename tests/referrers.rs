//! OCI referrers on the emulator through the real SDK: a referrer copy of a
//! buildx attestation is accepted by ECR (its config and statements are
//! already in the repository) and listed for the image it describes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;

use ecr_remediator::engine::registry::{ImageRef, Registry};
use ecr_remediator::oci::digest::Digest;
use ecr_remediator::oci::manifest::Descriptor;
use ecr_remediator::oci::names::RepositoryName;
use ecr_remediator::oci::referrer::referrer_copy;
use harness::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referrer_copy_is_stored_and_listed_for_its_image() {
    let repo = unique("referrers");
    create_repository(&repo, false);
    let pushed = push_buildx(&repo, "v1", &["linux/arm64"], "referrers");
    let h = handler(&[]).await;
    let name = RepositoryName::parse(&repo).unwrap();
    let ids: Vec<ImageRef> = [pushed.runnable(), pushed.attestation()]
        .iter()
        .map(|d| ImageRef::Digest(Digest::parse(d).unwrap()))
        .collect();
    let got = h.registry.get_images(&name, &ids).await.unwrap();
    let image = got[0].1.as_ref().unwrap().clone();
    let attestation = got[1].1.as_ref().unwrap().clone();
    let subject = Descriptor {
        media_type: image.media_type().as_str().to_owned(),
        digest: image.digest().clone(),
        size: image.bytes().len() as u64,
        platform: None,
        artifact_type: None,
        annotations: Default::default(),
    };
    let copy = referrer_copy(&attestation, &subject).unwrap();
    assert!(
        h.registry
            .list_referrers(&name, image.digest())
            .await
            .unwrap()
            .is_empty(),
        "a default buildx push has no referrer"
    );
    let body = String::from_utf8(copy.bytes().to_vec()).unwrap();
    python_script(&format!(
        "import boto3; boto3.client('ecr').put_image(repositoryName={repo:?}, imageManifest={body:?}, \
         imageManifestMediaType='application/vnd.oci.image.manifest.v1+json')"
    ));
    let listed = h.registry.list_referrers(&name, image.digest()).await.unwrap();
    assert_eq!(listed, vec![copy.digest().clone()]);
    assert!(
        h.registry
            .list_referrers(&name, attestation.digest())
            .await
            .unwrap()
            .is_empty()
    );
}
