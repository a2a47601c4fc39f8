//! The planner on concrete scenarios: what gets tagged, moved, put and deleted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;

use common::{Case, apply, digest_of, fixture, pushed, tag};
use ecr_remediator::decide::plan::{Action, DeleteRole, Plan, SkipReason, TagRole};
use ecr_remediator::policy::{Mode, PlatformSelector, Policy};

fn seed() -> Case {
    Case::new(fixture("buildx-single-platform-index.json"), "v7")
}

fn policy(mode: Mode) -> Policy {
    Policy {
        mode,
        ..Policy::default()
    }
}

/// `mode` with deletion on and no keep tag: the index is meant to go.
fn deleting(mode: Mode) -> Policy {
    Policy {
        delete_orphans: true,
        keep_tag: None,
        ..policy(mode)
    }
}

fn runnable(c: &Case) -> ecr_remediator::Digest {
    c.index.entries()[0].digest.clone()
}

fn attestation(c: &Case) -> ecr_remediator::Digest {
    c.index.entries()[1].digest.clone()
}

#[test]
fn tag_mode_gives_the_runnable_a_platform_tag() {
    let c = seed();
    let view = pushed(&c.index, "v7");
    let p = c.plan(&view, &policy(Mode::Tag));
    assert_eq!(
        p.actions,
        vec![Action::AddTag {
            tag: tag("v7-linux-arm64"),
            digest: runnable(&c),
            role: TagRole::Derived
        }]
    );
    let after = apply(&view, &p);
    assert_eq!(after.tag_target(&tag("v7")), Some(c.index.digest()));
    assert!(c.plan(&after, &policy(Mode::Tag)).is_empty());
}

#[test]
fn promote_moves_the_tag_and_keeps_the_index_reachable() {
    let c = seed();
    let view = pushed(&c.index, "v7");
    let p = c.plan(&view, &policy(Mode::Promote));
    assert_eq!(
        p.actions,
        vec![
            Action::AddTag {
                tag: tag("v7-index"),
                digest: c.index.digest().clone(),
                role: TagRole::Keep
            },
            Action::MoveTag {
                tag: tag("v7"),
                from: c.index.digest().clone(),
                to: runnable(&c),
                role: TagRole::Pushed
            },
        ]
    );
    let after = apply(&view, &p);
    assert_eq!(after.tag_target(&tag("v7")), Some(&runnable(&c)));
    assert_eq!(after.tag_target(&tag("v7-index")), Some(c.index.digest()));
    assert!(
        after.contains(&attestation(&c)),
        "provenance stays reachable through v7-index"
    );
    let again = c.plan(&after, &policy(Mode::Promote));
    assert!(again.is_empty(), "{again:?}");
}

#[test]
fn promote_with_delete_and_keep_deletes_nothing_because_the_index_stays_tagged() {
    let c = seed();
    let view = pushed(&c.index, "v7");
    let p = c.plan(
        &view,
        &Policy {
            delete_orphans: true,
            ..policy(Mode::Promote)
        },
    );
    assert!(p.actions.iter().all(|a| !a.is_delete()));
    assert!(
        p.skipped
            .iter()
            .any(|s| matches!(&s.reason, SkipReason::StillTagged { tags } if tags == &[tag("v7-index")]))
    );
}

#[test]
fn promote_without_keep_and_with_delete_removes_index_then_attestation() {
    let c = seed();
    let view = pushed(&c.index, "v7");
    let pol = deleting(Mode::Promote);
    let p = c.plan(&view, &pol);
    assert_eq!(
        p.actions,
        vec![
            Action::MoveTag {
                tag: tag("v7"),
                from: c.index.digest().clone(),
                to: runnable(&c),
                role: TagRole::Pushed
            },
            Action::Delete {
                digest: c.index.digest().clone(),
                role: DeleteRole::Index,
                removes_tags: Vec::new(),
            },
            Action::Delete {
                digest: attestation(&c),
                role: DeleteRole::Attestation,
                removes_tags: Vec::new(),
            },
        ]
    );
    let after = apply(&view, &p);
    assert!(after.contains(&runnable(&c)));
    assert!(!after.contains(&attestation(&c)));
    assert_eq!(c.plan(&after, &pol).halted(), Some(&SkipReason::IndexGone));
}

#[test]
fn strip_puts_an_index_without_attestations() {
    let c = seed();
    let view = pushed(&c.index, "v7");
    let pol = deleting(Mode::Strip);
    let p = c.plan(&view, &pol);
    let [
        Action::PutIndex {
            tag: t,
            manifest,
            replaces,
        },
        Action::Delete { digest: d1, .. },
        Action::Delete { digest: d2, .. },
    ] = p.actions.as_slice()
    else {
        panic!("unexpected plan {p:?}")
    };
    assert_eq!(t, &tag("v7"));
    assert_eq!(replaces, c.index.digest());
    assert_eq!(manifest.entries().len(), 1);
    assert_eq!(manifest.entries()[0].digest, runnable(&c));
    assert_eq!((d1, d2), (c.index.digest(), &attestation(&c)));
    let after = apply(&view, &p);
    assert_eq!(after.tag_target(&tag("v7")), Some(manifest.digest()));
}

#[test]
fn strip_with_keep_tag_keeps_the_original_index() {
    let c = seed();
    let view = pushed(&c.index, "v7");
    let pol = Policy {
        delete_orphans: true,
        ..policy(Mode::Strip)
    };
    let p = c.plan(&view, &pol);
    assert!(matches!(
        p.actions[0],
        Action::AddTag {
            role: TagRole::Keep,
            ..
        }
    ));
    assert!(matches!(p.actions[1], Action::PutIndex { .. }));
    assert_eq!(p.actions.len(), 2);
    let after = apply(&view, &p);
    assert!(c.plan(&after, &pol).is_empty());
}

#[test]
fn multi_platform_promote_falls_back_to_tag_mode_and_says_why() {
    let c = Case::new(fixture("postgres-17.11-index.json"), "17.11");
    let view = pushed(&c.index, "17.11");
    let p = c.plan(&view, &policy(Mode::Promote));
    assert_eq!(p.mode, Mode::Tag);
    assert_eq!(p.requested_mode, Mode::Promote);
    assert!(
        p.notes.iter().any(|n| n.contains("8 runnable manifests")),
        "{:?}",
        p.notes
    );
    let tags: Vec<String> = p
        .actions
        .iter()
        .map(|a| match a {
            Action::AddTag { tag, .. } => tag.to_string(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        tags,
        [
            "17.11-linux-386",
            "17.11-linux-amd64",
            "17.11-linux-arm-v5",
            "17.11-linux-arm-v7",
            "17.11-linux-arm64-v8",
            "17.11-linux-ppc64le",
            "17.11-linux-riscv64",
            "17.11-linux-s390x"
        ]
    );
}

#[test]
fn promote_platform_selects_one_of_many() {
    let c = Case::new(fixture("postgres-17.11-index.json"), "17.11");
    let view = pushed(&c.index, "17.11");
    let pol = Policy {
        promote_platform: PlatformSelector::parse("linux/arm64"),
        ..policy(Mode::Promote)
    };
    let p = c.plan(&view, &pol);
    let arm64 =
        ecr_remediator::Digest::parse("sha256:86fa57b44a1d38f09970f64ac71eb492f7a9cf94d08b85e1c8f07bb0fc0a1761")
            .unwrap();
    assert!(p.actions.contains(&Action::MoveTag {
        tag: tag("17.11"),
        from: c.index.digest().clone(),
        to: arm64,
        role: TagRole::Pushed
    }));
}

#[test]
fn a_newer_push_supersedes_and_nothing_is_clobbered() {
    let c = seed();
    let mut view = pushed(&c.index, "v6");
    let newer = digest_of("newer index");
    view.insert_image(newer.clone(), [tag("v7")]).unwrap();
    for mode in [Mode::Tag, Mode::Promote, Mode::Strip] {
        let p = c.plan(
            &view,
            &Policy {
                delete_orphans: true,
                keep_tag: None,
                ..policy(mode)
            },
        );
        assert!(p.is_empty(), "{mode}: {p:?}");
        assert_eq!(
            p.halted(),
            Some(&SkipReason::Superseded {
                now: Some(newer.clone())
            })
        );
    }
}

#[test]
fn own_keep_tag_pushes_are_ignored() {
    let c = Case::new(fixture("buildx-single-platform-index.json"), "v7-index");
    let view = pushed(&c.index, "v7-index");
    let p = c.plan(&view, &policy(Mode::Promote));
    assert_eq!(p.halted(), Some(&SkipReason::OwnKeepTag { tag: tag("v7-index") }));
}

#[test]
fn observe_writes_nothing_and_a_dry_run_plans_exactly_as_the_real_run() {
    let c = seed();
    let view = pushed(&c.index, "v7");
    assert!(c.plan(&view, &policy(Mode::Observe)).is_empty());
    let real = Policy {
        delete_orphans: true,
        keep_tag: None,
        ..policy(Mode::Promote)
    };
    let dry = c.plan(
        &view,
        &Policy {
            dry_run: true,
            ..real.clone()
        },
    );
    // The engine records a dry run's actions as planned and applies none.
    assert!(dry.dry_run);
    assert_eq!(dry.actions, c.plan(&view, &real).actions);
    assert_eq!(dry.actions.len(), 3, "the move and two deletions");
}

#[test]
fn max_deletes_caps_the_blast_radius() {
    let c = Case::new(fixture("postgres-17.11-index.json"), "17.11");
    let view = pushed(&c.index, "17.11");
    let pol = Policy {
        delete_orphans: true,
        keep_tag: None,
        max_deletes: 5,
        ..policy(Mode::Strip)
    };
    let p = c.plan(&view, &pol);
    assert!(p.actions.iter().all(|a| !a.is_delete()));
    assert_eq!(
        p.skipped
            .iter()
            .filter(|s| s.reason == SkipReason::MaxDeletes { planned: 9, max: 5 })
            .count(),
        9
    );
    let p = c.plan(&view, &Policy { max_deletes: 9, ..pol });
    assert_eq!(p.actions.iter().filter(|a| a.is_delete()).count(), 9);
}

#[test]
fn attestations_still_referenced_tagged_or_of_unknown_reference_are_kept() {
    let c = seed();
    let pol = deleting(Mode::Promote);
    // referenced by another index
    let mut view = pushed(&c.index, "v7");
    let other = digest_of("other index");
    view.insert_image(other.clone(), [tag("other")]).unwrap();
    view.insert_index(other.clone(), vec![attestation(&c)]);
    let p = c.plan(&view, &pol);
    assert!(p.actions.contains(&Action::Delete {
        digest: c.index.digest().clone(),
        role: DeleteRole::Index,
        removes_tags: Vec::new(),
    }));
    assert!(
        !p.actions
            .iter()
            .any(|a| a.target() == &attestation(&c) && a.is_delete())
    );
    assert!(p.skipped.iter().any(|s| s.reason
        == SkipReason::StillReferenced {
            by: vec![other.clone()]
        }));
    // tagged
    let mut view = pushed(&c.index, "v7");
    view.insert_image(attestation(&c), [tag("keep-me")]).unwrap();
    let p = c.plan(&view, &pol);
    assert!(!p.actions.iter().any(|a| a.target() == &attestation(&c)));
    // Other indexes unknown: the deletion is planned all the same; ECR itself
    // refuses to delete what an index it holds still lists, and the engine
    // records that as kept (tests/local/engine_memory.rs).
    let mut partial = ecr_remediator::decide::view::RepositoryView::new();
    for d in c.index.entries() {
        partial.insert_image(d.digest.clone(), []).unwrap();
        partial.set_attachments(&d.digest, Default::default());
        common::unused(&mut partial, &d.digest);
    }
    partial.insert_image(c.index.digest().clone(), [tag("v7")]).unwrap();
    partial.set_attachments(c.index.digest(), Default::default());
    common::unused(&mut partial, c.index.digest());
    let p = c.plan(&partial, &pol);
    assert!(
        p.actions
            .iter()
            .any(|a| a.is_delete() && a.target() == &attestation(&c))
    );
    // What is attached to a manifest unknown: never deleted.
    let mut unread = pushed(&c.index, "v7");
    unread.set_companion_tags(&attestation(&c), Vec::new());
    let unread = {
        let mut v = ecr_remediator::decide::view::RepositoryView::new();
        for (d, tags) in unread.images() {
            v.insert_image(d.clone(), tags.iter().cloned()).unwrap();
        }
        v.insert_index(
            c.index.digest().clone(),
            c.index.entries().iter().map(|d| d.digest.clone()).collect(),
        );
        v.set_attachments(c.index.digest(), Default::default());
        // What signs the image the tag moves to is known; only the
        // attestation's attachments are not.
        for d in c
            .index
            .entries()
            .iter()
            .map(|d| &d.digest)
            .filter(|d| **d != attestation(&c))
        {
            v.set_attachments(d, Default::default());
        }
        for (d, _) in unread.images() {
            common::unused(&mut v, d);
        }
        v
    };
    let p = c.plan(&unread, &pol);
    assert!(!p.actions.iter().any(|a| a.target() == &attestation(&c)), "{p:?}");
    assert!(
        p.skipped.iter().any(|s| s.digest.as_ref() == Some(&attestation(&c))
            && s.reason == ecr_remediator::decide::plan::SkipReason::AttachmentsUnknown),
        "{p:?}"
    );
}

#[test]
fn index_deleted_before_handling_or_single_manifest_pushes_are_noops() {
    let c = seed();
    let view = ecr_remediator::decide::view::RepositoryView::new();
    assert_eq!(
        c.plan(&view, &policy(Mode::Promote)).halted(),
        Some(&SkipReason::IndexGone)
    );
    let single = Case::new(fixture("buildx-arm64-image.json"), "v7");
    assert_eq!(
        single
            .plan(&pushed(&single.index, "v7"), &policy(Mode::Promote))
            .halted(),
        Some(&SkipReason::NotAnIndex)
    );
}

#[test]
fn unknown_platforms_never_get_derived_tags() {
    let c = Case::new(fixture("edge-cases-index.json"), "v1");
    let view = pushed(&c.index, "v1");
    let p = c.plan(&view, &policy(Mode::Tag));
    assert!(p.is_empty());
    assert!(p.skipped.iter().any(|s| s.reason == SkipReason::UnknownPlatform));
    // but promote may promote the single runnable: Lambda does not need the platform
    let p = c.plan(&view, &policy(Mode::Promote));
    assert!(p.actions.iter().any(|a| matches!(
        a,
        Action::MoveTag {
            role: TagRole::Pushed,
            ..
        }
    )));
}

#[test]
fn resuming_after_a_partial_run_finishes_the_job() {
    let c = seed();
    let pol = deleting(Mode::Promote);
    let mut view = pushed(&c.index, "v7");
    // An earlier run moved the tag, then died before deleting.
    view.apply(&Action::MoveTag {
        tag: tag("v7"),
        from: c.index.digest().clone(),
        to: runnable(&c),
        role: TagRole::Pushed,
    })
    .unwrap();
    let p = c.plan(&view, &pol);
    assert_eq!(p.actions.len(), 2, "{p:?}");
    assert!(p.actions.iter().all(Action::is_delete));
}

/// The deletions of `p`, as digests.
fn deleted(p: &Plan) -> Vec<ecr_remediator::Digest> {
    p.actions
        .iter()
        .filter(|a| a.is_delete())
        .map(|a| a.target().clone())
        .collect()
}

#[test]
fn an_index_a_workload_runs_or_pulled_recently_is_kept_and_the_record_says_who() {
    use ecr_remediator::decide::usage::{InUse, Workload, WorkloadKind};
    let c = seed();
    let pol = deleting(Mode::Promote);
    // Nothing uses it: the index and its attestation go.
    let p = c.plan(&pushed(&c.index, "v7"), &pol);
    assert_eq!(deleted(&p), vec![c.index.digest().clone(), attestation(&c)]);

    // An ECS service's deployment resolved the tag to the index.
    let mut view = pushed(&c.index, "v7");
    let mut found = InUse::new(common::NOW);
    let service = Workload {
        kind: WorkloadKind::EcsService,
        name: "arn:aws:ecs:us-east-1:123456789012:service/prod/web".into(),
    };
    found.add(c.index.digest().clone(), service.clone());
    view.set_in_use(Ok(std::sync::Arc::new(found)));
    let p = c.plan(&view, &pol);
    assert!(deleted(&p).is_empty(), "{p:?}");
    assert!(p.skipped.iter().any(|s| s.digest.as_ref() == Some(c.index.digest())
        && s.reason
            == SkipReason::InUse {
                by: vec![service.clone()],
                count: 1
            }));
    // The pushed tag still moves: only the deletion waits on the evidence.
    assert!(p.actions.iter().any(|a| matches!(a, Action::MoveTag { .. })));

    // Pulled an hour ago (within the default 30 days): kept.
    let mut view = pushed(&c.index, "v7");
    view.set_pull_time(c.index.digest(), Some(common::NOW - 3_600_000));
    let p = c.plan(&view, &pol);
    assert!(deleted(&p).is_empty());
    assert!(p.skipped.iter().any(|s| matches!(
        s.reason,
        SkipReason::RecentlyPulled {
            within_s: 2_592_000,
            ..
        }
    )));
    // Pulled long ago, or the window switched off: deleted.
    let mut view = pushed(&c.index, "v7");
    view.set_pull_time(c.index.digest(), Some(common::NOW - 40 * 86_400_000));
    assert_eq!(deleted(&c.plan(&view, &pol)).len(), 2);
    let mut view = pushed(&c.index, "v7");
    view.set_pull_time(c.index.digest(), Some(common::NOW - 3_600_000));
    let off = Policy {
        keep_if_pulled_within_s: None,
        ..pol.clone()
    };
    assert_eq!(deleted(&c.plan(&view, &off)).len(), 2);
}

#[test]
fn a_failed_workload_scan_deletes_nothing() {
    let c = seed();
    let pol = deleting(Mode::Promote);
    let mut view = pushed(&c.index, "v7");
    view.set_in_use(Err("ecs:ListClusters: AccessDeniedException: not authorized".into()));
    let p = c.plan(&view, &pol);
    assert!(deleted(&p).is_empty());
    assert!(
        p.skipped
            .iter()
            .any(|s| matches!(&s.reason, SkipReason::InUseUnknown { why } if why.contains("AccessDenied")))
    );
    // With the check off, the scan is not looked at.
    let off = Policy {
        keep_if_in_use: false,
        ..pol
    };
    assert_eq!(deleted(&c.plan(&view, &off)).len(), 2);
}

#[test]
fn within_the_grace_period_deletions_are_deferred_not_dropped() {
    let c = seed();
    let pol = deleting(Mode::Promote);
    let mut view = pushed(&c.index, "v7");
    // Pushed a minute ago; the grace period is 15 minutes.
    view.set_pushed_at(c.index.digest(), common::NOW - 60_000);
    let p = c.plan(&view, &pol);
    assert!(deleted(&p).is_empty(), "{p:?}");
    assert_eq!(p.deferred_until_ms, Some(common::NOW - 60_000 + 900_000));
    let deferred: Vec<_> = p
        .skipped
        .iter()
        .filter(|s| {
            matches!(
                s.reason,
                SkipReason::GracePeriod {
                    grace_period_s: 900,
                    ..
                }
            )
        })
        .filter_map(|s| s.action.as_ref().map(|a| a.target().clone()))
        .collect();
    assert_eq!(deferred, vec![c.index.digest().clone(), attestation(&c)]);
    // The tag moves at once.
    assert!(p.actions.iter().any(|a| matches!(a, Action::MoveTag { .. })));
    // Within the grace period nothing asks what runs it: a failed or
    // missing scan does not change the plan.
    view.set_in_use(Err("denied".into()));
    assert_eq!(c.plan(&view, &pol).deferred_until_ms, p.deferred_until_ms);
    // A dry run says the same.
    let dry = Policy {
        dry_run: true,
        ..pol.clone()
    };
    assert_eq!(c.plan(&view, &dry).deferred_until_ms, p.deferred_until_ms);
    // No grace period: deleted at once.
    let now = Policy {
        grace_period_s: 0,
        ..pol
    };
    let mut view = pushed(&c.index, "v7");
    view.set_pushed_at(c.index.digest(), common::NOW - 60_000);
    assert_eq!(deleted(&c.plan(&view, &now)).len(), 2);
}

#[test]
fn a_tag_moves_off_a_signed_index_only_onto_a_signed_image_or_when_the_policy_allows() {
    use ecr_remediator::decide::view::Attachments;
    use ecr_remediator::oci::companion::Companion;
    use ecr_remediator::oci::media_type::NOTATION_SIGNATURE as NOTATION_ARTIFACT_TYPE;
    use ecr_remediator::oci::signature::{Referrer, SignatureKind};
    let c = seed();
    let notation = |v: &mut ecr_remediator::decide::view::RepositoryView, d: &ecr_remediator::Digest| {
        v.set_attachments(
            d,
            Attachments {
                referrers: vec![Referrer::new(
                    digest_of(&format!("sig of {d}")),
                    Some(NOTATION_ARTIFACT_TYPE),
                )],
                companion_tags: vec![],
            },
        );
    };
    // The index signed, the image not: tag mode, index_signed, nothing moves.
    let mut view = pushed(&c.index, "v7");
    notation(&mut view, c.index.digest());
    let p = c.plan(&view, &deleting(Mode::Promote));
    assert_eq!(p.mode, Mode::Tag);
    assert!(p.actions.iter().all(|a| matches!(a, Action::AddTag { .. })), "{p:?}");
    assert!(
        p.skipped
            .iter()
            .any(|s| matches!(s.reason, SkipReason::IndexSigned { .. }))
    );
    let signing = p.signing.clone().unwrap();
    assert_eq!(signing.index[0].kind, SignatureKind::Notation);
    assert!(signing.image.is_empty());
    // Strip would move the tag to a new, unsigned index: the same.
    assert_eq!(c.plan(&view, &policy(Mode::Strip)).mode, Mode::Tag);
    // The policy allows it: promoted, with a warning; the signed index is not deleted.
    let anyway = Policy {
        promote_signed_index: true,
        ..deleting(Mode::Promote)
    };
    let p = c.plan(&view, &anyway);
    assert_eq!(p.mode, Mode::Promote);
    assert!(p.notes.iter().any(|n| n.starts_with("warning: the index is signed")));
    assert!(
        !p.actions
            .iter()
            .any(|a| a.is_delete() && a.target() == c.index.digest())
    );
    // The image signed too (cosign sign --recursive, legacy tags): promoted.
    let mut both = pushed(&c.index, "v7");
    for d in [c.index.digest().clone(), runnable(&c)] {
        let sig = Companion::Signature.tag_for(&d).unwrap();
        both.set_attachments(
            &d,
            Attachments {
                referrers: vec![],
                companion_tags: vec![(Companion::Signature, sig)],
            },
        );
    }
    let p = c.plan(&both, &policy(Mode::Promote));
    assert_eq!(p.mode, Mode::Promote);
    assert!(p.actions.iter().any(|a| matches!(a, Action::MoveTag { .. })), "{p:?}");
    assert_eq!(p.signing.unwrap().image[0].kind, SignatureKind::CosignTag);
    // What signs the image unread: nothing moves until it is read.
    let mut unread = ecr_remediator::decide::view::RepositoryView::new();
    for (d, tags) in view.images() {
        unread.insert_image(d.clone(), tags.iter().cloned()).unwrap();
    }
    unread.insert_index(
        c.index.digest().clone(),
        c.index.entries().iter().map(|d| d.digest.clone()).collect(),
    );
    let p = c.plan(&unread, &policy(Mode::Promote));
    assert!(p.actions.is_empty());
    assert_eq!(p.halted(), Some(&SkipReason::SignaturesUnknown));
}
