//! Planning `provenance = "referrers"`: each attestation of an image the plan
//! keeps deployable gets a referrer copy attached to that image (see
//! [`crate::oci::referrer`]), so the index that carried it may go.
//!
//! Pure. The deletion planner then takes [`Coverage`] into account: an
//! attestation that already is a referrer of a kept image is never deleted,
//! and when any attestation of a kept image could not be covered, nothing is
//! deleted at all (the index keeps its provenance reachable).

use std::collections::{BTreeMap, BTreeSet};

use crate::decide::action::Action;
use crate::decide::planned::Plan;
use crate::decide::skip::{SkipReason, chain};
use crate::decide::view::RepositoryView;
use crate::oci::classify::{Classification, EntryClass, ManifestKind, classify_manifest};
use crate::oci::digest::Digest;
use crate::oci::manifest::RawManifest;
use crate::oci::referrer::referrer_copy;

/// What the referrer copies cover.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Attestations that are themselves referrers of a kept image: kept.
    pub attached: BTreeSet<Digest>,
    /// Why deletions must not happen (an attestation of a kept image has no copy).
    pub blocked: Option<String>,
}

/// Plans a `PutReferrer` for each attestation entry whose subject is in
/// `kept`, from the manifests read (`known`), unless the copy is already in
/// the repository or the attestation already is a referrer of its image.
pub fn referrer_copies(
    p: &mut Plan,
    c: &Classification,
    known: &BTreeMap<Digest, RawManifest>,
    view: &RepositoryView,
    kept: &BTreeSet<&Digest>,
) -> Coverage {
    let mut cover = Coverage::default();
    let mut seen = BTreeSet::new();
    for e in &c.entries {
        let EntryClass::Attestation { subject: Some(subject) } = &e.class else {
            continue;
        };
        let d = e.digest();
        if !kept.contains(subject) || !seen.insert((d.clone(), subject.clone())) {
            continue;
        }
        let uncovered = |why: String| format!("the attestation {d} of {subject} has no referrer copy: {why}");
        let (Some(attestation), Some(image)) = (known.get(d), known.get(subject)) else {
            p.skip_entry(d, SkipReason::ChildMissing);
            cover.blocked = Some(uncovered("its manifest or its image's was not read".into()));
            continue;
        };
        let predicate_types = match classify_manifest(attestation.manifest()) {
            ManifestKind::Attestation { subject: Some(own), .. } if own == *subject => {
                // Already attached to the image (BuildKit's artifact form).
                cover.attached.insert(d.clone());
                continue;
            }
            ManifestKind::Attestation { predicate_types, .. } => predicate_types,
            other => {
                cover.blocked = Some(uncovered(format!("its manifest is a {} manifest", other.name())));
                continue;
            }
        };
        match referrer_copy(attestation, &image.descriptor()) {
            Ok(copy) if view.contains(copy.digest()) => {
                p.notes
                    .push(format!("referrer {} of {subject} already stored", copy.digest()));
            }
            Ok(copy) => p.actions.push(Action::PutReferrer {
                manifest: Box::new(copy),
                subject: subject.clone(),
                attestation: d.clone(),
                predicate_types,
            }),
            Err(err) => {
                let error = chain(&err);
                p.skip_entry(d, SkipReason::ReferrerCopyFailed { error: error.clone() });
                cover.blocked = Some(uncovered(error));
            }
        }
    }
    cover
}
