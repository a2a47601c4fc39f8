//! The planner: from an index, its classification, what the registry says and
//! the policy, an ordered list of actions and of skipped actions with reasons.
//!
//! Invariants, held by construction (and property-tested in `tests/local/plan_properties.rs`):
//!
//! 1. A runnable manifest is never deleted; nothing known to be tagged is
//!    deleted; nothing a known index still lists after the plan is deleted
//!    (ECR enforces the same for indexes the view does not know of); an
//!    index is deleted before the children it frees.
//! 2. The pushed tag is only moved off the index being remediated, or off a
//!    stale remediation of an older index the reader proved (otherwise the
//!    whole plan is skipped as `superseded`); a derived tag only off a
//!    runnable image; a keep tag only off an index.
//! 3. With a keep tag configured, the pushed tag moves only after the keep
//!    tag is on the index (the keep tag is a gate).
//! 4. Planning again on the state the plan produces gives no action.
//! 5. `observe` and `dry_run` plans contain no write.
//! 6. `signature`, `index` and `other` entries are never written to or deleted.

use std::collections::{BTreeMap, BTreeSet};

pub use crate::decide::action::{Action, DeleteRole, TagRole};
use crate::decide::deletion::{Gates, deletions, finish};
pub use crate::decide::planned::{Deployable, Plan};
use crate::decide::provenance::{Coverage, referrer_copies};
pub use crate::decide::skip::{SkipReason, Skipped, chain};
use crate::decide::view::{Held, RepositoryView};
use crate::oci::classify::{Classification, ClassifiedEntry, EntryClass};
use crate::oci::companion::parse_companion;
use crate::oci::digest::Digest;
use crate::oci::lambda::{PlatformTarget, Verdict, verdict};
use crate::oci::manifest::RawManifest;
use crate::oci::names::ImageTag;
use crate::oci::signature::Signing;
use crate::policy::{Mode, Policy, Provenance};

/// Everything the planner looks at.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// The pushed manifest.
    pub manifest: &'a RawManifest,
    /// Its classification (possibly refined with child manifests).
    pub classification: &'a Classification,
    /// The pushed tag.
    pub tag: Option<&'a ImageTag>,
    /// What the registry says.
    pub view: &'a RepositoryView,
    /// The repository's policy.
    pub policy: &'a Policy,
    /// Set when the reader established that the pushed tag points at the
    /// remediation target of an index pushed *before* this one: a stale write
    /// of a concurrent handling that raced this push. The planner then takes
    /// the tag over instead of treating the push as superseded.
    pub stale_holder: Option<&'a Digest>,
    /// Set when ECR refused to move the pushed tag (tag immutability): the
    /// planner falls back to tag mode.
    pub pushed_tag_immutable: bool,
    /// The entries' manifests the reader fetched, bytes as stored (needed
    /// for referrer copies; entries not in it get none).
    pub manifests: &'a BTreeMap<Digest, RawManifest>,
    /// Now, in milliseconds since the epoch (the grace period and the
    /// pull-time window are measured from it).
    pub now_ms: i64,
    /// When the pushed tag arrived (the push event's time, or the first
    /// handling's): the grace period runs from it (`crate::decide::gate::grace`).
    pub tag_arrived_ms: Option<i64>,
}

enum Target<'a> {
    Tag,
    Promote(&'a ClassifiedEntry),
    Strip(Box<RawManifest>),
}

/// Digests listed under a protected class (signature, index, other).
fn protected_digests(c: &Classification) -> BTreeSet<&Digest> {
    c.entries
        .iter()
        .filter(|e| e.class.is_protected())
        .map(ClassifiedEntry::digest)
        .collect()
}

/// Runnable entries, one per digest, in index order. A digest that the index
/// also lists under a protected class is not runnable: recognition must be
/// unambiguous.
pub(crate) fn runnables(c: &Classification) -> Vec<&ClassifiedEntry> {
    let protected = protected_digests(c);
    let mut seen = BTreeSet::new();
    c.entries
        .iter()
        .filter(|e| matches!(e.class, EntryClass::Runnable { .. }))
        .filter(|e| !protected.contains(e.digest()))
        .filter(|e| seen.insert(e.digest().clone()))
        .collect()
}

fn platform_of(e: &ClassifiedEntry) -> Option<&crate::oci::manifest::Platform> {
    match &e.class {
        EntryClass::Runnable { platform } => platform.as_ref(),
        _ => None,
    }
}

/// Picks the runnable to promote, or says why promotion falls back to tag mode.
fn promotion<'a>(c: &'a Classification, policy: &Policy) -> Result<&'a ClassifiedEntry, Option<String>> {
    let all = runnables(c);
    if all.is_empty() {
        return Err(None);
    }
    let describe = |es: &[&ClassifiedEntry]| {
        es.iter()
            .map(|e| platform_of(e).map_or_else(|| "unknown".to_owned(), ToString::to_string))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match &policy.promote_platform {
        None if all.len() == 1 => Ok(all[0]),
        None => Err(Some(format!(
            "promote: {} runnable manifests ({}) and no promote_platform; fell back to tag mode",
            all.len(),
            describe(&all)
        ))),
        Some(sel) => {
            let unknown = all.iter().filter(|e| platform_of(e).is_none()).count();
            let matching: Vec<&ClassifiedEntry> = all
                .iter()
                .copied()
                .filter(|e| platform_of(e).is_some_and(|p| sel.matches(p)))
                .collect();
            if unknown > 0 {
                Err(Some(format!(
                    "promote: {unknown} runnable manifest(s) of unknown platform, so {sel} cannot be \
                     chosen safely; fell back to tag mode"
                )))
            } else if matching.len() == 1 {
                Ok(matching[0])
            } else {
                Err(Some(format!(
                    "promote: {} runnable manifests match {sel} (platforms: {}); fell back to tag mode",
                    matching.len(),
                    describe(&all)
                )))
            }
        }
    }
}

/// The digest the pushed tag ends on when `manifest` is remediated under
/// `policy` (the promoted image, or the stripped index), if the policy moves
/// the tag at all. Lets the reader recognise a remediation already made.
pub fn remediation_target(manifest: &RawManifest, classification: &Classification, policy: &Policy) -> Option<Digest> {
    match policy.mode {
        Mode::Observe | Mode::Tag => None,
        Mode::Promote => promotion(classification, policy).ok().map(|e| e.digest().clone()),
        Mode::Strip => stripped(manifest, classification).ok().map(|m| m.digest().clone()),
    }
}

/// The index without its attestation entries, or why there is none.
pub(crate) fn stripped(manifest: &RawManifest, classification: &Classification) -> Result<RawManifest, SkipReason> {
    if runnables(classification).is_empty() {
        // Nothing would be deployable (a referrers index, an index of artifacts).
        return Err(SkipReason::NoRunnable);
    }
    let positions = classification.attestation_positions();
    if positions.is_empty() {
        return Err(SkipReason::NothingToStrip);
    }
    if positions.len() == classification.entries.len() {
        return Err(SkipReason::StripWouldEmpty);
    }
    manifest
        .without_entries(&positions)
        .map_err(|e| SkipReason::StripFailed { error: chain(&e) })
}

/// Plans the remediation of one pushed index.
pub fn plan(input: &PlanInput<'_>) -> Plan {
    let PlanInput {
        manifest,
        classification,
        tag,
        view,
        policy,
        stale_holder,
        pushed_tag_immutable,
        manifests,
        now_ms,
        tag_arrived_ms,
    } = *input;
    let mut p = Plan::new(policy);
    if policy.mode == Mode::Observe {
        p.notes
            .push("observe mode: classified and recorded, nothing changed".to_owned());
        return p;
    }
    let idx = manifest.digest();
    if classification.digest != *idx {
        return p.halt(SkipReason::Inconsistent);
    }
    if !manifest.media_type().is_index() {
        return p.halt(SkipReason::NotAnIndex);
    }
    let Some(tag) = tag else {
        return p.halt(SkipReason::Untagged);
    };
    if let Some((companion, subject)) = parse_companion(tag) {
        return p.halt(SkipReason::CompanionTag {
            tag: tag.clone(),
            companion,
            subject,
        });
    }
    if policy.is_keep_tag(tag) {
        return p.halt(SkipReason::OwnKeepTag { tag: tag.clone() });
    }
    if let Some(why) = view.unreadable_tag(tag) {
        return p.halt(SkipReason::TagUnreadable {
            tag: tag.clone(),
            why: why.to_owned(),
        });
    }
    if !view.contains(idx) {
        return p.halt(SkipReason::IndexGone);
    }
    if pushed_tag_immutable && matches!(policy.mode, Mode::Promote | Mode::Strip) {
        p.mode = Mode::Tag;
        p.notes.push(format!(
            "{tag} is immutable in this repository (ECR refused to move it): fell back to tag mode"
        ));
    }

    let target = match p.mode {
        Mode::Observe | Mode::Tag => Target::Tag,
        Mode::Promote => match promotion(classification, policy) {
            Ok(e) => match lambda_verdict(e, manifests, policy) {
                Some(v) if v.is_no() && !policy.promote_when_lambda_refuses => {
                    p.mode = Mode::Tag;
                    p.notes.push(format!(
                        "promote: Lambda would refuse {} ({}); promote_when_lambda_refuses is off, so the \
                         tag stays on the index: fell back to tag mode",
                        e.digest(),
                        v.describe()
                    ));
                    Target::Tag
                }
                _ => Target::Promote(e),
            },
            Err(None) => return p.halt(SkipReason::NoRunnable),
            Err(Some(why)) => {
                p.mode = Mode::Tag;
                p.notes.push(why);
                Target::Tag
            }
        },
        Mode::Strip => match stripped(manifest, classification) {
            Ok(stripped) => Target::Strip(Box::new(stripped)),
            Err(reason) => return p.halt(reason),
        },
    };
    // Only a tag still on the index is gated: one already moved (an earlier
    // handling of this push) is never moved back.
    let target = match &target {
        Target::Tag => target,
        _ if view.tag_target(tag) != Some(idx) => target,
        Target::Promote(e) => {
            let image = e.digest();
            match signature_gate(&mut p, idx, Some(image), view, policy) {
                Gate::Move => target,
                Gate::Stay => Target::Tag,
                Gate::Unknown => return p.halt(SkipReason::SignaturesUnknown),
            }
        }
        // The stripped index is new: nothing signs it yet.
        Target::Strip(_) => match signature_gate(&mut p, idx, None, view, policy) {
            Gate::Move => target,
            Gate::Stay => Target::Tag,
            Gate::Unknown => return p.halt(SkipReason::SignaturesUnknown),
        },
    };

    let pushed_target = match &target {
        Target::Tag => idx,
        Target::Promote(e) => e.digest(),
        Target::Strip(n) => n.digest(),
    };
    // Where the pushed tag must be moved from (None: it needs no move).
    let from: Option<&Digest> = match view.tag_target(tag) {
        Some(d) if d == idx => Some(idx),
        Some(d) if d == pushed_target => {
            p.notes
                .push(format!("{tag} already points to {d}: resuming an earlier remediation"));
            None
        }
        Some(d) if stale_holder == Some(d) && !matches!(target, Target::Tag) => {
            p.notes.push(format!(
                "{tag} points to {d}, the remediation of an index pushed before this one (a concurrent \
                 handling raced this push): taken over"
            ));
            Some(d)
        }
        other => {
            // What an earlier handling of this index wrote may still be in
            // place: its keep tag, its derived tags.
            earlier_writes(&mut p, classification, tag, idx, &target, view, policy);
            return p.halt(SkipReason::Superseded { now: other.cloned() });
        }
    };
    if from.is_none() || matches!(target, Target::Tag) {
        p.guards.push((tag.clone(), pushed_target.clone()));
    }

    match &target {
        Target::Tag => derived_tags(&mut p, classification, tag, view, policy),
        Target::Promote(e) => {
            if !view.contains(e.digest()) {
                p.skip_entry(e.digest(), SkipReason::ChildMissing);
                return finish(p, policy);
            }
            if let Err(reason) = keep_tag(&mut p, tag, idx, view, policy) {
                return p.halt(reason);
            }
            let to = e.digest().clone();
            match from {
                Some(from) => p.actions.push(Action::MoveTag {
                    tag: tag.clone(),
                    from: from.clone(),
                    to,
                    role: TagRole::Pushed,
                }),
                None => p.in_place.push(Action::MoveTag {
                    tag: tag.clone(),
                    from: idx.clone(),
                    to,
                    role: TagRole::Pushed,
                }),
            }
        }
        Target::Strip(stripped) => {
            if let Some(missing) = stripped.entries().iter().find(|d| !view.contains(&d.digest)) {
                p.skip_entry(&missing.digest, SkipReason::ChildMissing);
                return finish(p, policy);
            }
            if let Err(reason) = keep_tag(&mut p, tag, idx, view, policy) {
                return p.halt(reason);
            }
            let (manifest, replaces) = (stripped.clone(), from.unwrap_or(idx).clone());
            let put = Action::PutIndex {
                tag: tag.clone(),
                manifest,
                replaces,
            };
            match from {
                Some(_) => p.actions.push(put),
                None => p.in_place.push(put),
            }
        }
    }

    deployability(&mut p, classification, tag, &target, manifests, policy);

    let coverage = if policy.provenance == Provenance::Referrers {
        // The images that stay deployable: the promoted one, and any other
        // that something else still tags or lists (its provenance is not
        // ours to drop); in tag and strip modes, every runnable entry.
        // Every entry classified runnable, even one also listed under a
        // protected class: its provenance is not ours to drop either.
        let listed_runnable = classification
            .entries
            .iter()
            .filter(|e| matches!(e.class, EntryClass::Runnable { .. }))
            .map(ClassifiedEntry::digest);
        let kept: BTreeSet<&Digest> = match &target {
            Target::Promote(e) => listed_runnable
                .filter(|d| {
                    *d == e.digest()
                        || view.tags_of(d).is_some_and(|t| !t.is_empty())
                        || !view.referrers(d, Some(idx)).is_empty()
                })
                .collect(),
            Target::Tag | Target::Strip(_) => listed_runnable.filter(|d| view.contains(d)).collect(),
        };
        referrer_copies(&mut p, classification, manifests, view, &kept)
    } else {
        Coverage::default()
    };
    if policy.delete_orphans {
        if p.mode == Mode::Tag {
            p.notes.push(
                "delete_orphans has no effect in tag mode: the index keeps its tag, so its attestations stay referenced"
                    .to_owned(),
            );
        } else {
            deletions(
                &mut p,
                classification,
                idx,
                view,
                &coverage,
                Gates {
                    policy,
                    now_ms,
                    tag_arrived_ms,
                },
            );
        }
    }
    finish(p, policy)
}

/// Lambda's verdict on a runnable entry, from its manifest as read (`None`
/// when it was not read). The promoted image is judged against the policy's
/// `promote_platform`.
fn lambda_verdict(e: &ClassifiedEntry, manifests: &BTreeMap<Digest, RawManifest>, policy: &Policy) -> Option<Verdict> {
    let m = manifests.get(e.digest())?;
    let target = policy.promote_platform.as_ref().map(|t| t as &dyn PlatformTarget);
    Some(verdict(m, platform_of(e), target))
}

/// Records the images the plan makes deployable by a tag (the promoted
/// image; each image a derived tag lands on) with Lambda's verdict, and
/// warns in a note for each Lambda would refuse.
fn deployability(
    p: &mut Plan,
    classification: &Classification,
    tag: &ImageTag,
    target: &Target<'_>,
    manifests: &BTreeMap<Digest, RawManifest>,
    policy: &Policy,
) {
    let tagged: Vec<(ImageTag, &ClassifiedEntry)> = match target {
        Target::Promote(e) => vec![(tag.clone(), *e)],
        Target::Strip(_) => Vec::new(),
        Target::Tag => {
            let runnable = runnables(classification);
            p.actions
                .iter()
                .chain(&p.in_place)
                .filter_map(|a| match a {
                    Action::AddTag {
                        tag,
                        digest,
                        role: TagRole::Derived,
                    } => Some((tag.clone(), *runnable.iter().find(|e| e.digest() == digest)?)),
                    _ => None,
                })
                .collect()
        }
    };
    // Only the promoted image is judged against `promote_platform`: a
    // derived tag is for whoever deploys that platform.
    let judged = |e: &ClassifiedEntry| match target {
        Target::Promote(_) => lambda_verdict(e, manifests, policy),
        _ => manifests.get(e.digest()).map(|m| verdict(m, platform_of(e), None)),
    };
    for (t, e) in tagged {
        let Some(v) = judged(e) else { continue };
        if v.is_no() {
            p.notes
                .push(format!("Lambda would refuse {t} ({}): {}", e.digest(), v.describe()));
        }
        p.deployability.push(Deployable {
            tag: t,
            digest: e.digest().clone(),
            platform: platform_of(e).cloned(),
            verdict: v,
        });
    }
}

/// For a superseded push: what a handling of it would have written that is
/// still in place (its keep tag on the index, its derived tags on the
/// images), recorded as found (`in_place`); never planned. The pushed tag
/// itself has moved on, by definition.
fn earlier_writes(
    p: &mut Plan,
    classification: &Classification,
    tag: &ImageTag,
    idx: &Digest,
    target: &Target,
    view: &RepositoryView,
    policy: &Policy,
) {
    let writes: Vec<Action> = match target {
        Target::Tag => runnables(classification)
            .into_iter()
            .filter_map(|e| {
                let t = policy.tag_template.render(tag, Some(platform_of(e)?)).ok()?;
                (t != *tag).then(|| Action::AddTag {
                    tag: t,
                    digest: e.digest().clone(),
                    role: TagRole::Derived,
                })
            })
            .collect(),
        Target::Promote(_) | Target::Strip(_) => policy
            .keep_tag
            .as_ref()
            .and_then(|k| k.render(tag, None).ok())
            .map(|keep| Action::AddTag {
                tag: keep,
                digest: idx.clone(),
                role: TagRole::Keep,
            })
            .into_iter()
            .collect(),
    };
    p.in_place.extend(
        writes
            .into_iter()
            .filter(|w| w.tag().is_some_and(|t| view.tag_target(t) == Some(w.target()))),
    );
}

/// What the signature gate decided about moving the pushed tag.
enum Gate {
    /// Move it (nothing signs the index, or the image is signed too, or the
    /// policy allows it).
    Move,
    /// Keep it on the signed index: tag mode (`index_signed`).
    Stay,
    /// What signs them was not read yet (the planner marked which).
    Unknown,
}

/// Whether the pushed tag may move off the index `idx` onto `image` (`None`:
/// a new manifest, which nothing signs): verifiers check the digest a tag
/// resolves to, so a tag moved from a signed index onto an unsigned image
/// fails verification. Records what signs each in the plan.
fn signature_gate(p: &mut Plan, idx: &Digest, image: Option<&Digest>, view: &RepositoryView, policy: &Policy) -> Gate {
    let on_index = view.attachments(idx).map(|a| a.signatures());
    let on_image = match image {
        None => Some(Vec::new()),
        Some(d) => view.attachments(d).map(|a| a.signatures()),
    };
    let (Some(on_index), Some(on_image)) = (on_index, on_image) else {
        // Both read in one round.
        for d in std::iter::once(idx).chain(image) {
            if view.attachments(d).is_none() {
                p.skip_entry(d, SkipReason::SignaturesUnknown);
            }
        }
        return Gate::Unknown;
    };
    p.signing = Some(Signing {
        index: on_index.clone(),
        image: on_image.clone(),
    });
    if on_index.is_empty() || !on_image.is_empty() {
        return Gate::Move;
    }
    let names: Vec<String> = on_index.iter().map(ToString::to_string).collect();
    if policy.promote_signed_index {
        p.notes.push(format!(
            "warning: the index is signed ({}) and the image the tag moves to is not; promote_signed_index is set, \
             so the tag moves anyway and verification of it fails until the image is signed",
            names.join(", ")
        ));
        return Gate::Move;
    }
    p.mode = Mode::Tag;
    p.skip_entry(idx, SkipReason::IndexSigned { signatures: names });
    Gate::Stay
}

/// Points `tag` at `digest`, moving it only off an image of the kind this
/// service writes that tag on (`owner`); anything else holding it is never taken.
fn set_tag(
    p: &mut Plan,
    tag: &ImageTag,
    digest: &Digest,
    view: &RepositoryView,
    role: TagRole,
    owner: Held,
) -> Result<(), SkipReason> {
    if let Some(why) = view.unreadable_tag(tag) {
        return Err(SkipReason::TagUnreadable {
            tag: tag.clone(),
            why: why.to_owned(),
        });
    }
    match view.tag_target(tag) {
        Some(d) if d == digest => p.in_place.push(Action::AddTag {
            tag: tag.clone(),
            digest: digest.clone(),
            role,
        }),
        None => p.actions.push(Action::AddTag {
            tag: tag.clone(),
            digest: digest.clone(),
            role,
        }),
        Some(from) if view.kind_of(from) == Some(owner) => p.actions.push(Action::MoveTag {
            tag: tag.clone(),
            from: from.clone(),
            to: digest.clone(),
            role,
        }),
        Some(holder) => {
            let (tag, holder) = (tag.clone(), holder.clone());
            return Err(match owner {
                Held::Index => SkipReason::KeepTagTaken { tag, holder },
                _ => SkipReason::DerivedTagTaken { tag, holder },
            });
        }
    }
    Ok(())
}

/// The keep tag, a gate: when configured, it must be rendered and put on the
/// index (or already be there) before the pushed tag moves.
fn keep_tag(
    p: &mut Plan,
    tag: &ImageTag,
    idx: &Digest,
    view: &RepositoryView,
    policy: &Policy,
) -> Result<(), SkipReason> {
    let Some(template) = &policy.keep_tag else {
        return Ok(());
    };
    let keep = template
        .render(tag, None)
        .map_err(|e| SkipReason::KeepTagInvalid { error: chain(&e) })?;
    set_tag(p, &keep, idx, view, TagRole::Keep, Held::Index)
}

fn derived_tags(p: &mut Plan, c: &Classification, tag: &ImageTag, view: &RepositoryView, policy: &Policy) {
    let keep = policy.keep_tag.as_ref().and_then(|k| k.render(tag, None).ok());
    let mut wanted: BTreeMap<ImageTag, Vec<&Digest>> = BTreeMap::new();
    for e in runnables(c) {
        let Some(platform) = platform_of(e) else {
            p.skip_entry(e.digest(), SkipReason::UnknownPlatform);
            continue;
        };
        match policy.tag_template.render(tag, Some(platform)) {
            Err(err) => p.skip_entry(e.digest(), SkipReason::InvalidDerivedTag { error: err.to_string() }),
            Ok(t) if t == *tag || Some(&t) == keep.as_ref() => {
                p.skip_entry(e.digest(), SkipReason::DerivedTagClash { tag: t })
            }
            Ok(t) => wanted.entry(t).or_default().push(e.digest()),
        }
    }
    for (t, digests) in wanted {
        if let [d] = digests.as_slice() {
            if view.contains(d) {
                if let Err(reason) = set_tag(p, &t, d, view, TagRole::Derived, Held::Runnable) {
                    p.skip_entry(d, reason);
                }
            } else {
                p.skip_entry(d, SkipReason::ChildMissing);
            }
        } else {
            for d in digests {
                p.skip_entry(d, SkipReason::DerivedTagCollision { tag: t.clone() });
            }
        }
    }
}
