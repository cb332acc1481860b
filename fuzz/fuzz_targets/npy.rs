#![no_main]
//! `cargo +nightly fuzz run npy`: see fuzz/src/lib.rs.

libfuzzer_sys::fuzz_target!(|data: &[u8]| convpool_fuzz::npy(data));
