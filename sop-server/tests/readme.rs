//! The README's curl walk-through, run as printed against a fresh server:
//! the output must be exactly the README's.

mod common;

use common::{Server, data_dir};

/// The fenced block after `marker` in the README.
fn block_after(readme: &str, marker: &str) -> String {
    let rest = &readme[readme.find(marker).unwrap_or_else(|| panic!("README lacks {marker}"))..];
    let start = rest.find("```").expect("a fence");
    let body = &rest[start..];
    let body = &body[body.find('\n').expect("fence line") + 1..];
    body[..body.find("```").expect("closing fence")].to_owned()
}

#[tokio::test]
async fn curl_walkthrough_works_as_printed() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let script = block_after(&readme, "<!-- walkthrough -->");
    let expected = block_after(&readme, "<!-- walkthrough-output -->");
    let (_d, data) = data_dir();
    let srv = Server::start(&data, &[]);
    let host = srv.base.trim_start_matches("http://");
    let script = script.replace("localhost:7070", host);
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .output()
        .expect("bash and curl (cargo xtask ci installs curl)");
    assert!(out.status.success(), "walk-through failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}
