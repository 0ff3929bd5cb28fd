//! `cargo fuzz run decode`: the property is in `sotto_integration::fuzz::decode`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_integration::fuzz::decode(data));

#[path = "driver.rs"]
mod driver;

fn main() {
    driver::run()
}
