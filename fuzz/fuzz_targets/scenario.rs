//! `cargo fuzz run scenario`: the property is in `sotto_integration::fuzz::scenario`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_integration::fuzz::scenario(data));
