//! The test layout itself. With `autotests = false` (tests/Cargo.toml) a `tests/*.rs` file is compiled
//! only when a `[[test]]` target or a root file's `#[path = "…"] mod` names it; a new file that nothing
//! names would be silently skipped. This finds such files.

use crate::support::REPO;
use std::collections::BTreeSet;
use std::path::Path;

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn every_test_file_is_a_target_or_a_module_of_one() {
    let dir = Path::new(REPO).join("tests");
    // `[[test]]` paths (the example's `../examples/…` is not a test file).
    let roots: Vec<String> = read(&dir.join("Cargo.toml"))
        .lines()
        .filter_map(|l| l.strip_prefix("path = \""))
        .map(|p| p.trim_end_matches('"').to_string())
        .filter(|p| !p.starts_with(".."))
        .collect();
    assert!(roots.len() >= 2, "no [[test]] paths found: {roots:?}");
    let mut named: BTreeSet<String> = roots.iter().cloned().collect();
    for root in &roots {
        for line in read(&dir.join(root)).lines() {
            if let Some(p) = line.trim().strip_prefix("#[path = \"") {
                named.insert(p.trim_end_matches("\"]").to_string());
            }
        }
    }
    let files: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".rs"))
        .collect();
    let unnamed: Vec<&String> = files.difference(&named).collect();
    assert!(
        unnamed.is_empty(),
        "tests/{unnamed:?} not compiled: add a `#[path = \"…\"] mod` to a root file (tests/<area>.rs) \
         or a [[test]] to tests/Cargo.toml"
    );
}
