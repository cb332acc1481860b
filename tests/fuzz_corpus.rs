//! Replays every committed fuzz corpus file (fuzz/corpus/<target>/) through
//! the fuzz targets' bodies, so each crasher found by `cargo fuzz` stays a
//! regression test and CI runs every target over its corpus without
//! nightly or libFuzzer.

#[allow(dead_code)]
#[path = "../fuzz/src/lib.rs"]
mod bodies;

use std::path::Path;

fn replay(target: &str, body: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let outcome = std::panic::catch_unwind(|| body(&data));
        assert!(outcome.is_ok(), "{target}: {} fails", path.display());
        n += 1;
    }
    assert!(n > 0, "no corpus for {target}");
}

#[test]
fn npy_corpus() {
    replay("npy", bodies::npy);
}

#[test]
fn parsers_corpus() {
    replay("parsers", bodies::parsers);
}

#[test]
fn engine_corpus() {
    replay("engine", bodies::engine);
}

#[test]
fn image_corpus() {
    replay("image", bodies::image);
}
