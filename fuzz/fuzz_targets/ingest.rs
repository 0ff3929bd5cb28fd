//! `cargo fuzz run ingest`: the property is in `sotto_integration::fuzz::ingest`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_integration::fuzz::ingest(data));
