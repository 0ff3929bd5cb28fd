//! `cargo fuzz run avatar_messages`: the property is in `sotto_integration::fuzz::avatar_messages`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_integration::fuzz::avatar_messages(data));

#[path = "driver.rs"]
mod driver;

fn main() {
    driver::run()
}
