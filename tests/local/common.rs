//! Helpers shared by the planner tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use ecr_remediator::Digest;
use ecr_remediator::ImageTag;
use ecr_remediator::Policy;
use ecr_remediator::RawManifest;
use ecr_remediator::decide::plan::{Plan, PlanInput, plan};
use ecr_remediator::decide::view::{Held, RepositoryView};
use ecr_remediator::oci::classify::EntryClass;
use ecr_remediator::oci::classify::{Classification, classify};

pub fn tag(s: &str) -> ImageTag {
    ImageTag::parse(s).unwrap()
}

pub fn digest_of(s: &str) -> Digest {
    Digest::sha256_of(s.as_bytes())
}

pub fn fixture(name: &str) -> RawManifest {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/manifests")
        .join(name);
    RawManifest::parse(std::fs::read(path).unwrap(), None).unwrap()
}

/// "Now" for the plans these helpers make: long after every push.
pub const NOW: i64 = 10_000_000_000;

/// Marks `d` as the reader finds an image nothing uses: pushed long ago,
/// never pulled, and the workload scan (answered) names nothing.
pub fn unused(v: &mut RepositoryView, d: &Digest) {
    v.set_pull_time(d, None);
    v.set_pushed_at(d, 0);
    if v.in_use().is_none() {
        v.set_in_use(Ok(std::sync::Arc::new(ecr_remediator::decide::usage::InUse::new(0))));
    }
}

/// A repository as `docker push` leaves it: children untagged, the index
/// tagged, nothing signed or referring to any of them (as the reader finds
/// it when it reads their attachments).
pub fn pushed(index: &RawManifest, pushed_tag: &str) -> RepositoryView {
    let mut v = RepositoryView::new();
    for e in classify(index).entries {
        let kind = match e.class {
            EntryClass::Runnable { .. } => Held::Runnable,
            EntryClass::Index => Held::Index,
            _ => Held::Other,
        };
        v.set_kind(e.digest(), kind);
        v.set_attachments(e.digest(), Default::default());
        unused(&mut v, e.digest());
    }
    v.set_attachments(index.digest(), Default::default());
    unused(&mut v, index.digest());
    v.insert_image(index.digest().clone(), [tag(pushed_tag)]).unwrap();
    v.insert_index(
        index.digest().clone(),
        index.entries().iter().map(|d| d.digest.clone()).collect(),
    );
    v
}

pub struct Case {
    pub index: RawManifest,
    pub classification: Classification,
    pub tag: ImageTag,
}

impl Case {
    pub fn new(index: RawManifest, pushed_tag: &str) -> Self {
        let classification = classify(&index);
        Case {
            index,
            classification,
            tag: tag(pushed_tag),
        }
    }

    pub fn plan(&self, view: &RepositoryView, policy: &Policy) -> Plan {
        plan(&PlanInput {
            manifest: &self.index,
            classification: &self.classification,
            tag: Some(&self.tag),
            view,
            policy,
            stale_holder: None,
            pushed_tag_immutable: false,
            manifests: &std::collections::BTreeMap::new(),
            now_ms: NOW,
            tag_arrived_ms: None,
        })
    }
}

/// Applies every action of the plan, panicking on a refusal ECR would give.
pub fn apply(view: &RepositoryView, p: &Plan) -> RepositoryView {
    let mut after = view.clone();
    for a in &p.actions {
        after.apply(a).unwrap_or_else(|e| panic!("ECR would refuse {a}: {e}"));
    }
    after
}
