#![no_main]
//! `cargo +nightly fuzz run image`: see fuzz/src/lib.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| convpool_fuzz::image(data));
