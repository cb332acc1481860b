//! Validates every WGSL shader under `shaders/` with naga, so a broken shader
//! is a build error that names its file and line rather than a runtime panic.
//! Each shader is validated as the GPU gets it: `shaders/common.wgsl` (the
//! params structs and shared rules) followed by the shader itself.

use std::fs;
use std::path::Path;

fn main() {
    let dir = Path::new("shaders");
    println!("cargo:rerun-if-changed=shaders");
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("shaders/ folder")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    entries.sort();
    let common_path = dir.join("common.wgsl");
    let common = fs::read_to_string(&common_path).expect("shaders/common.wgsl");
    let mut failures = Vec::new();
    for path in entries {
        println!("cargo:rerun-if-changed={}", path.display());
        if path == common_path {
            continue;
        }
        let source = format!("{common}{}", fs::read_to_string(&path).expect("readable shader"));
        let name = format!(
            "{} (after common.wgsl, {} lines)",
            path.display(),
            common.lines().count()
        );
        let module = match naga::front::wgsl::parse_str(&source) {
            Ok(m) => m,
            Err(e) => {
                failures.push(e.emit_to_string_with_path(&source, &name));
                continue;
            }
        };
        let mut validator = naga::valid::Validator::new(
            naga::valid::ValidationFlags::all(),
            naga::valid::Capabilities::default(),
        );
        if let Err(e) = validator.validate(&module) {
            failures.push(e.emit_to_string_with_path(&source, &name));
        }
    }
    if !failures.is_empty() {
        panic!("invalid WGSL:\n{}", failures.join("\n"));
    }
}
