//! The `sop` command line, on a data directory and through a server.

mod common;

use std::fmt::Write as _;

use common::{Server, data_dir, run_sop, sop};
use serde_json::{Value, json};

/// Runs `sop --data DATA ARGS`, asserting success; returns stdout.
fn ok(data: &str, args: &[&str]) -> String {
    let mut all = vec!["--data", data];
    all.extend_from_slice(args);
    let (success, out, err) = run_sop(&all);
    assert!(success, "sop {args:?} failed: {err}");
    out
}

/// Runs `sop --data DATA ARGS`, asserting failure with one clear line.
fn fails(data: &str, args: &[&str], needle: &str) {
    let mut all = vec!["--data", data];
    all.extend_from_slice(args);
    let (success, _, err) = run_sop(&all);
    assert!(!success, "sop {args:?} should fail");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one line, got: {err}");
    assert!(lines[0].starts_with("sop: ") && lines[0].contains(needle), "{err}");
}

fn lines(out: &str) -> Vec<Value> {
    out.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

#[test]
fn every_subcommand_has_help() {
    for sub in [
        "serve",
        "stores",
        "create-store",
        "drop-store",
        "get",
        "put",
        "del",
        "scan",
        "load",
        "dump",
        "check",
        "compact",
    ] {
        let out = sop().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub} --help");
        assert!(String::from_utf8_lossy(&out.stdout).contains("Usage: sop"), "{sub}");
    }
    let out = sop().arg("frobnicate").output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn local_commands_round_trip() {
    let (d, data) = data_dir();
    let data = data.to_str().unwrap();
    ok(data, &["create-store", "users", "--slot-length", "8"]);
    fails(data, &["create-store", "users"], "exists");
    ok(data, &["put", "users", "alice", r#"{"age":30}"#]);
    ok(data, &["put", "users", "bob", "\"builder\""]);
    ok(data, &["put", "users", "carol", "7"]);
    fails(data, &["put", "users", "dave", "not json"], "not JSON");
    assert_eq!(ok(data, &["get", "users", "alice"]).trim(), r#"{"age":30}"#);
    fails(data, &["get", "users", "nobody"], "no key");
    fails(data, &["get", "nostore", "k"], "nostore");
    ok(data, &["del", "users", "carol"]);
    fails(data, &["del", "users", "carol"], "no key");

    let stores = lines(&ok(data, &["stores"]));
    assert_eq!(
        stores,
        vec![
            json!({ "name": "users", "count": 2, "options": { "slot_length": 8, "unique": true, "value_in_node_threshold": 1024 } })
        ]
    );

    // Load 2 500 items in transactions of 1 000 (the store is created).
    let mut ndjson = String::new();
    for i in 0..2500 {
        writeln!(
            ndjson,
            "{}",
            json!({ "key": format!("k{i:05}"), "value": { "i": i, "s": "x".repeat(i % 7) } })
        )
        .unwrap();
    }
    let file = d.path().join("in.ndjson");
    std::fs::write(&file, &ndjson).unwrap();
    fails(data, &["load", "bulk", file.to_str().unwrap()], "--create");
    let (success, _, err) = run_sop(&["--data", data, "load", "bulk", file.to_str().unwrap(), "--create"]);
    assert!(success, "{err}");
    assert!(err.contains("loaded 2500 items") && err.contains("items/s"), "{err}");

    let scan = lines(&ok(data, &["scan", "bulk", "--from", "k00010", "--to", "k00013"]));
    assert_eq!(
        scan.iter().map(|v| v["key"].as_str().unwrap()).collect::<Vec<_>>(),
        ["k00010", "k00011", "k00012"]
    );
    let scan = lines(&ok(data, &["scan", "bulk", "--reverse", "--limit", "2"]));
    assert_eq!(
        scan,
        vec![
            json!({ "key": "k02499", "value": { "i": 2499, "s": "" } }),
            json!({ "key": "k02498", "value": { "i": 2498, "s": "xxxxxx" } })
        ]
    );
    assert_eq!(lines(&ok(data, &["scan", "bulk"])).len(), 2500);

    // dump -> load -> dump is the identity.
    let dumped = d.path().join("out.ndjson");
    ok(data, &["dump", "bulk", "-o", dumped.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(&dumped).unwrap(), ndjson);
    ok(data, &["load", "copy", dumped.to_str().unwrap(), "--create", "--batch", "333"]);
    assert_eq!(ok(data, &["dump", "copy"]), ndjson);

    // Bad input to load: the line is named; earlier batches stay.
    let bad = d.path().join("bad.ndjson");
    std::fs::write(&bad, "{\"key\":\"a\",\"value\":1}\n{\"key\":\"b\",\"value\":2}\n{\"key\":3}\n").unwrap();
    fails(data, &["load", "partial", bad.to_str().unwrap(), "--create", "--batch", "2"], "line 3");
    assert_eq!(lines(&ok(data, &["scan", "partial"])).len(), 2);

    let report = ok(data, &["check"]);
    assert!(report.contains("0 problem(s)"), "{report}");
    ok(data, &["drop-store", "copy"]);
    let compacted = ok(data, &["compact"]);
    assert!(compacted.starts_with("compact: ") && compacted.contains("MiB on disk"), "{compacted}");
    assert_eq!(lines(&ok(data, &["scan", "bulk"])).len(), 2500, "compaction changed contents");
    fails(data, &["drop-store", "copy"], "copy");
}

#[tokio::test]
async fn commands_through_a_server() {
    let (d, data) = data_dir();
    let mut srv = Server::start(&data, &[]);
    let base = srv.base.clone();
    let remote = |args: &[&str]| {
        let mut all = vec!["--server", base.as_str()];
        all.extend_from_slice(args);
        run_sop(&all)
    };
    assert!(remote(&["create-store", "s"]).0);
    assert!(remote(&["put", "s", "a b/c", "[1,2]"]).0);
    assert_eq!(remote(&["get", "s", "a b/c"]).1.trim(), "[1,2]");
    let (success, _, err) = remote(&["get", "s", "zz"]);
    assert!(!success && err.contains("no key"), "{err}");
    let mut ndjson = String::new();
    for i in 0..1200 {
        writeln!(ndjson, "{}", json!({ "key": format!("r{i:04}"), "value": i })).unwrap();
    }
    let file = d.path().join("in.ndjson");
    std::fs::write(&file, &ndjson).unwrap();
    let (success, _, err) = remote(&["load", "s", file.to_str().unwrap(), "--batch", "500"]);
    assert!(success, "{err}");
    let (_, out, _) = remote(&["scan", "s", "--from", "r", "--limit", "1200"]);
    assert_eq!(out, ndjson);
    assert!(remote(&["del", "s", "a b/c"]).0);
    let (success, _, err) = remote(&["del", "s", "a b/c"]);
    assert!(!success && err.contains("no key"), "{err}");
    let (_, out, _) = remote(&["stores"]);
    assert_eq!(lines(&out)[0]["count"], 1200);
    let (success, _, err) = remote(&["check"]);
    assert!(!success && err.contains("--data"), "{err}");
    let (success, _, err) = remote(&["compact"]);
    assert!(!success && err.contains("--data"), "{err}");

    // The data directory is locked while the server has it open.
    let (success, _, err) = run_sop(&["--data", data.to_str().unwrap(), "stores"]);
    assert!(!success && err.contains("in use by another process"), "{err}");
    assert!(srv.terminate().await.success());
    let (success, out, _) = run_sop(&["--data", data.to_str().unwrap(), "dump", "s"]);
    assert!(success);
    assert_eq!(out, ndjson);
    let (success, _, err) = run_sop(&["--server", "http://127.0.0.1:1", "stores"]);
    assert!(!success && err.contains("cannot reach"), "{err}");
}

#[tokio::test]
async fn check_exits_nonzero_on_damage() {
    use sop_btree::BlobStore as _;
    let (_d, data) = data_dir();
    let d = data.to_str().unwrap();
    ok(d, &["create-store", "s", "--slot-length", "4"]);
    for i in 0..20 {
        ok(d, &["put", "s", &format!("k{i:02}"), &i.to_string()]);
    }
    {
        let reg =
            sop_backends::RocksRegistry::open(data.join("registry"), &sop_backends::RocksConfig::default())
                .unwrap();
        let blobs = reg.blob_store();
        let ids = blobs.list().await.unwrap();
        assert!(!ids.is_empty());
        blobs.delete(ids[0]).await.unwrap();
    }
    let (success, out, err) = run_sop(&["--data", d, "check"]);
    assert!(!success, "check passed a damaged database: {out}");
    assert!(out.contains("problem:") && err.contains("problem(s) found"), "{out}\n{err}");
}
