//! `cargo fuzz run token`: the property is in `sotto_integration::fuzz::token`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_integration::fuzz::token(data));
