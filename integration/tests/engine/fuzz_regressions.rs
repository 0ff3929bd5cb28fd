//! Every fuzz seed and every input a fuzz run ever crashed on, through the
//! same checks the fuzz targets make, on the stable toolchain.

use std::path::{Path, PathBuf};

use sotto_integration::fuzz::TARGETS;

fn inputs(folder: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(folder)
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.file_name().is_none_or(|n| n != ".keep"));
    files.sort();
    files
}

#[test]
fn the_fuzz_corpus_passes_every_check() {
    let mut ran = 0;
    for (target, check) in TARGETS {
        let seeds = inputs("seeds", target);
        assert!(!seeds.is_empty(), "no seeds for {target}");
        for path in seeds.iter().chain(&inputs("regressions", target)) {
            let data = std::fs::read(path).expect("readable input");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            ran += 1;
        }
    }
    assert!(ran >= 15);
}

#[test]
fn the_decode_seeds_really_decode() {
    // The decode check passes on an error too; the seeds must reach the
    // decoder for the fuzzer to start from real files.
    for path in inputs("seeds", "decode") {
        let data = std::fs::read(&path).expect("readable seed");
        let name = Path::new("seed").with_extension(path.extension().expect("an extension"));
        let mut d =
            sotto_actors::decode::FileDecoder::from_bytes(&name, data[1..].to_vec(), 48_000, 1)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (audio, _) = d.decode_all(|| false).expect("decodes");
        assert!(
            audio.len() > 1000,
            "{}: {} samples",
            path.display(),
            audio.len()
        );
    }
}
