//! `cargo fuzz run avatar_messages`: the property is in `sotto_integration::fuzz::avatar_messages`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_integration::fuzz::avatar_messages(data));
