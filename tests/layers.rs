//! The layout is the architecture: each layer imports only the layers below
//! it, and only the adapters (and binaries) know the AWS SDK.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// Layers from the bottom up; a layer may use the ones before it.
const LAYERS: [&str; 6] = ["oci", "policy", "engine", "service", "trail", "aws"];

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
