//! `sop serve` settings from the TOML file and `SOP_*` variables.

mod common;

use common::{Server, data_dir, sop};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn file_then_variables_then_flags() {
    let (d, data) = data_dir();
    let token = d.path().join("token");
    std::fs::write(&token, "tok").unwrap();
    let file = d.path().join("sop.toml");
    std::fs::write(
        &file,
        format!(
            "data = {:?}\ntoken_file = {:?}\nlisten = \"127.0.0.1:0\"\nmax_open_tx = 3\ncache_mb = 16\n",
            data.to_str().unwrap(),
            token.to_str().unwrap()
        ),
    )
    .unwrap();

    // From the file alone: the token and the limit of 3 open transactions.
    let mut cmd = sop();
    cmd.args(["serve", "--config", file.to_str().unwrap()]);
    let mut srv = Server::spawn(cmd);
    assert_eq!(srv.get("/v1/stores").await.0, StatusCode::UNAUTHORIZED);
    srv.token = Some("tok".into());
    for _ in 0..3 {
        srv.begin("read").await;
    }
    let (s, b) = srv.post("/v1/tx", json!({})).await;
    assert_eq!((s, b["error"].as_str()), (StatusCode::TOO_MANY_REQUESTS, Some("too_many_transactions")));
    assert!(srv.terminate().await.success());

    // A variable beats the file; a flag beats both.
    let mut cmd = sop();
    cmd.args(["serve", "--config", file.to_str().unwrap()]).env("SOP_MAX_OPEN_TX", "1");
    let mut srv = Server::spawn(cmd);
    srv.token = Some("tok".into());
    srv.begin("read").await;
    assert_eq!(srv.post("/v1/tx", json!({})).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert!(srv.terminate().await.success());
    let mut cmd = sop();
    cmd.args(["serve", "--config", file.to_str().unwrap(), "--max-open-tx", "2"]).env("SOP_MAX_OPEN_TX", "1");
    let mut srv = Server::spawn(cmd);
    srv.token = Some("tok".into());
    srv.begin("read").await;
    srv.begin("read").await;
    assert_eq!(srv.post("/v1/tx", json!({})).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert!(srv.terminate().await.success());
}

#[test]
fn bad_settings_are_refused_with_one_line() {
    let (d, data) = data_dir();
    let file = d.path().join("bad.toml");
    std::fs::write(&file, "listen = \"127.0.0.1:0\"\nlisten_port = 9\n").unwrap();
    let cases: Vec<Vec<String>> = vec![
        vec!["serve".into(), "--config".into(), file.to_str().unwrap().into()],
        vec!["serve".into(), "--config".into(), "/nonexistent/sop.toml".into()],
        vec!["serve".into(), "--listen".into(), "127.0.0.1:0".into(), "--registry".into(), "etcd://x".into()],
        vec!["serve".into(), "--listen".into(), "127.0.0.1:0".into(), "--cache-mb".into(), "0".into()],
        vec!["serve".into(), "--listen".into(), "not-an-address".into()],
    ];
    for args in cases {
        let out = sop().arg("--data").arg(&data).args(&args).output().unwrap();
        assert!(!out.status.success(), "{args:?} started");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.trim().is_empty() && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn memory_registry_and_blob_urls() {
    let (d, data) = data_dir();
    let blobs = format!("file://{}", d.path().join("blobs").display());
    let srv = Server::start(&data, &["--registry", "memory://", "--blobs", &blobs]);
    srv.create_store("m", json!({})).await;
    let (s, b) = srv
        .post("/v1/batch", json!({ "ops": [{ "op": "put", "store": "m", "key": "k", "value": "v" }] }))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (_, b) = srv.post("/v1/batch", json!({ "ops": [{ "op": "get", "store": "m", "key": "k" }] })).await;
    assert_eq!(b["results"][0]["value"], "v");
    assert!(
        std::fs::read_dir(d.path().join("blobs")).unwrap().next().is_some(),
        "node blobs go to the file:// store"
    );
}
