//! `cargo fuzz run ingest`: the property is in `sotto_integration::fuzz::ingest`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_integration::fuzz::ingest(data));

#[path = "driver.rs"]
mod driver;

fn main() {
    driver::run()
}
