//! `cargo fuzz run join`: the property is in `sotto_integration::fuzz::join`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_integration::fuzz::join(data));

#[path = "driver.rs"]
mod driver;

fn main() {
    driver::run()
}
