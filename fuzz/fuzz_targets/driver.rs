//! Every target's `main`. libFuzzer usually brings its own, but the echo
//! canceller's bundled C++ library carries a command-line tool's `main`
//! that the linker would pick instead; defining `main` here keeps both out
//! and starts libFuzzer through its documented entry point.

use std::ffi::{c_char, c_int, CString};

extern "C" {
    fn LLVMFuzzerRunDriver(
        argc: *mut c_int,
        argv: *mut *mut *mut c_char,
        callback: extern "C" fn(*const u8, usize) -> c_int,
    ) -> c_int;
}

extern "C" fn one_input(data: *const u8, size: usize) -> c_int {
    // SAFETY: libFuzzer passes a valid buffer of `size` bytes.
    unsafe { libfuzzer_sys::test_input_wrap(data, size) }
}

/// Runs libFuzzer with this process's arguments.
pub fn run() -> ! {
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.into_encoded_bytes()).expect("an argument without NUL"))
        .collect();
    let mut pointers: Vec<*mut c_char> = args.iter().map(|a| a.as_ptr().cast_mut()).collect();
    pointers.push(std::ptr::null_mut());
    let mut argc = c_int::try_from(args.len()).expect("a sane argument count");
    let mut argv = pointers.as_mut_ptr();
    // SAFETY: argc and argv describe `args`, which outlive the call.
    let code = unsafe { LLVMFuzzerRunDriver(&mut argc, &mut argv, one_input) };
    std::process::exit(code)
}
