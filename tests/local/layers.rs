//! The layout is the architecture: each layer imports only the layers below
//! it, and only the adapters (and binaries) know the AWS SDK.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// Layers from the bottom up; a layer may use the ones before it: the
/// manifest model, the policy, the pure decisions, the IO line, the
/// whole-registry walks, the service around them, the audit-trail queries,
/// and the adapters.
const LAYERS: [&str; 9] = [
    "oci", "policy", "decide", "engine", "sweep", "service", "trail", "selftest", "aws",
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn layers_only_import_downwards_and_the_sdk_stays_in_the_adapters() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for (level, layer) in LAYERS.iter().enumerate() {
        let mut files = Vec::new();
        rust_files(&src.join(layer), &mut files);
        assert!(!files.is_empty(), "no files in src/{layer}");
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for above in &LAYERS[level + 1..] {
                assert!(
                    !text.contains(&format!("crate::{above}")),
                    "{} (layer {layer}) imports the layer above it: {above}",
                    file.display()
                );
            }
            if *layer != "aws" {
                assert!(
                    !text.contains("aws_sdk_") && !text.contains("aws_config"),
                    "{} uses the AWS SDK outside src/aws",
                    file.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 20, "{checked}");
}

/// `src/decide` is pure: no `async`, no runtime, no registry; it decides
/// from what it is given.
#[test]
fn decisions_do_no_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join("decide");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(files.len() >= 10, "{files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let code: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for io in [
            "async ",
            ".await",
            "tokio",
            "Registry",
            "AuditSink",
            "std::fs",
            "std::net",
            "reqwest",
            "hyper",
        ] {
            assert!(!code.contains(io), "{} (pure decisions) uses `{io}`", file.display());
        }
    }
}

/// `src/a/b.rs` (or `src/a/b/mod.rs`) → `a::b`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// The modules a file's code (not its tests) names with `crate::…` or `super::…`.
fn imports(text: &str, own: &str, modules: &std::collections::BTreeSet<String>) -> Vec<String> {
    // Code only: not its tests, not its comments (a doc link is no import).
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or(text)
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let code = code.as_str();
    let parent = own.rsplit_once("::").map_or("", |(p, _)| p);
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent.to_owned())] {
        for (at, _) in code.match_indices(prefix) {
            // `crate::` inside a longer word (`$crate::`) is a macro's, not an import.
            if prefix == "crate::" && code[..at].ends_with('$') {
                continue;
            }
            for path in paths(&code[at + prefix.len()..]) {
                // The longest prefix of the path that is a module.
                let mut found = None;
                for n in 1..=path.len() {
                    let candidate = if base.is_empty() {
                        path[..n].join("::")
                    } else {
                        format!("{base}::{}", path[..n].join("::"))
                    };
                    if modules.contains(&candidate) {
                        found = Some(candidate);
                    }
                }
                if let Some(m) = found {
                    out.push(m);
                }
            }
        }
    }
    out
}

/// The paths a `use` tree starting at `rest` names, braces expanded
/// (`a::{b, c::{d, self}}` → `a::b`, `a::c::d`, `a::c`), each as segments.
fn paths(rest: &str) -> Vec<Vec<String>> {
    let head: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let mut segments: Vec<String> = head
        .split("::")
        .filter(|s| !s.is_empty() && *s != "self")
        .map(str::to_owned)
        .collect();
    let after = &rest[head.len()..];
    if !(head.is_empty() || head.ends_with("::")) || !after.starts_with('{') {
        return vec![segments];
    }
    // The group up to its matching brace, split at its top-level commas.
    let mut depth = 0;
    let mut items = Vec::new();
    let mut start = 1;
    for (i, c) in after.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    items.push(&after[start..i]);
                    break;
                }
            }
            ',' if depth == 1 => {
                items.push(&after[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    let mut out = vec![segments.clone()];
    for item in items {
        for tail in paths(item.trim()) {
            let mut full = segments.clone();
            full.extend(tail);
            out.push(full);
        }
    }
    segments.clear();
    out
}

#[test]
fn use_groups_are_read_as_the_paths_they_name() {
    let got: Vec<String> = paths("{Engine, Job, attachments::{self, x}, skipped};")
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(
        got,
        [
            "",
            "Engine",
            "Job",
            "attachments",
            "attachments",
            "attachments::x",
            "skipped"
        ]
    );
    let got: Vec<String> = paths("decide::gate::{self, Gates};")
        .into_iter()
        .map(|p| p.join("::"))
        .collect();
    assert_eq!(got, ["decide::gate", "decide::gate", "decide::gate::Gates"]);
}

#[test]
fn no_module_imports_a_sibling_that_imports_it_back() {
    use std::collections::{BTreeMap, BTreeSet};
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| !f.starts_with(src.join("bin")));
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let own = module_of(&src, file);
        let text = std::fs::read_to_string(file).unwrap();
        let edges = imports(&text, &own, &modules)
            .into_iter()
            // A module may use what its ancestors (their `mod.rs`) define:
            // that is how a folder's facade works, not a cycle of siblings.
            .filter(|m| *m != own && !own.starts_with(&format!("{m}::")) && !m.is_empty())
            .collect();
        graph.insert(own, edges);
    }
    assert!(graph.len() > 40, "{}", graph.len());
    // Depth-first search for a cycle.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|s| s == m) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        let cycle = visit(m, &graph, &mut Vec::new(), &mut done);
        assert!(cycle.is_none(), "import cycle: {}", cycle.unwrap().join(" -> "));
    }
}

/// One place reaches `BatchDeleteImage`: the applier behind the deletion
/// gate (`src/engine/apply.rs`). Besides it, only the `Registry`
/// trait and its implementations (the SDK adapter, the test double) name
/// the call; any other caller would be a deletion path beside the gate.
#[test]
fn only_the_applier_behind_the_gate_deletes() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut callers = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let rel = file.strip_prefix(&src).unwrap().to_string_lossy().replace('\\', "/");
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            let calls = code.contains(".delete_images(") || code.contains(".batch_delete_image(");
            if calls {
                callers.push(format!("{rel}:{}", n + 1));
            }
        }
    }
    let allowed = |c: &String| c.starts_with("engine/apply.rs:") || c.starts_with("aws/ecr.rs:");
    assert!(
        callers.iter().all(allowed),
        "deletions outside the gate's applier: {callers:?}"
    );
    assert!(
        callers.iter().any(|c| c.starts_with("engine/apply.rs:")),
        "the applier no longer deletes: {callers:?}"
    );
    let in_adapter = callers.iter().filter(|c| c.starts_with("aws/ecr.rs:")).count();
    assert_eq!(
        in_adapter, 1,
        "the SDK adapter calls BatchDeleteImage once, in Registry::delete_images: {callers:?}"
    );
}
