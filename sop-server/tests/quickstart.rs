//! The quick-start binary: two runs on one data directory; the second finds
//! the first, and the check finds no problem.

use std::process::Command;

fn run(dir: &std::path::Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_sop")).arg("--data").arg(dir).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "sop failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

#[test]
fn two_runs_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(dir.path());
    assert!(first.contains("created store \"runs\""), "{first}");
    assert!(first.contains("committed run #1"), "{first}");
    let second = run(dir.path());
    assert!(second.contains("committed run #2") && second.contains("run #1:"), "{second}");
    assert!(second.contains(" 0 problem(s)"), "{second}");
}

#[test]
fn bad_arguments_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_sop")).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
