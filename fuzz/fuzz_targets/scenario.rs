//! `cargo fuzz run scenario`: the property is in `sotto_integration::fuzz::scenario`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_integration::fuzz::scenario(data));

#[path = "driver.rs"]
mod driver;

fn main() {
    driver::run()
}
