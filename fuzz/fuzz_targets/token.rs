//! `cargo fuzz run token`: the property is in `sotto_integration::fuzz::token`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| sotto_integration::fuzz::token(data));

#[path = "driver.rs"]
mod driver;

fn main() {
    driver::run()
}
