//! `cargo fuzz run decode`: the property is in `sotto_integration::fuzz::decode`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_integration::fuzz::decode(data));
