//! Bearer-token authentication and TLS, against the real binary.

mod common;

use common::{Server, data_dir, sop};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn token_guards_every_route_but_health() {
    let (d, data) = data_dir();
    let token_file = d.path().join("token");
    std::fs::write(&token_file, "s3cret-token\n").unwrap();
    let mut srv = Server::start(&data, &["--token-file", token_file.to_str().unwrap()]);

    assert_eq!(srv.get("/health").await.0, StatusCode::OK);
    for path in ["/metrics", "/v1/stores", "/v1/openapi.json", "/v1/tx/x/stores/s/items"] {
        let (s, b) = srv.get(path).await;
        assert_eq!((s, b["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")), "{path}");
    }
    let r = srv.http.get(format!("{}/v1/stores", srv.base)).send().await.unwrap();
    assert_eq!(r.headers().get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));
    // Writes are refused too, and leave nothing behind.
    assert_eq!(srv.put("/v1/stores/s", json!({})).await.0, StatusCode::UNAUTHORIZED);
    srv.token = Some("wrong".into());
    assert_eq!(srv.get("/v1/stores").await.0, StatusCode::UNAUTHORIZED);
    srv.token = Some("s3cret-token-and-more".into());
    assert_eq!(srv.get("/v1/stores").await.0, StatusCode::UNAUTHORIZED);
    let r = srv
        .http
        .get(format!("{}/v1/stores", srv.base))
        .header("authorization", "Basic czNjcmV0LXRva2Vu")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    srv.token = Some("s3cret-token".into());
    assert_eq!(srv.get("/v1/stores").await, (StatusCode::OK, json!({ "stores": [] })));
    srv.create_store("s", json!({})).await;
    let (s, b) = srv.get("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    assert!(b.as_str().is_some_and(|t| t.contains("sop_commits_total")));

    // The CLI sends the token from --token-file.
    let (ok, out, err) =
        common::run_sop(&["--server", &srv.base, "--token-file", token_file.to_str().unwrap(), "stores"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"name\":\"s\""), "{out}");
    let (ok, _, err) = common::run_sop(&["--server", &srv.base, "stores"]);
    assert!(!ok);
    assert!(err.contains("401") && err.lines().count() == 1, "{err}");
}

#[test]
fn empty_or_missing_token_file_is_refused_at_start() {
    let (d, data) = data_dir();
    let empty = d.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    for file in [empty, d.path().join("missing")] {
        let out = sop()
            .arg("--data")
            .arg(&data)
            .args(["serve", "--listen", "127.0.0.1:0", "--token-file"])
            .arg(&file)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("token file"), "{err}");
    }
}

#[tokio::test]
async fn serves_tls_with_rustls() {
    let (d, data) = data_dir();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let (cert_file, key_file) = (d.path().join("cert.pem"), d.path().join("key.pem"));
    std::fs::write(&cert_file, &cert_pem).unwrap();
    std::fs::write(&key_file, &key_pem).unwrap();
    let mut srv = Server::start(
        &data,
        &["--tls-cert", cert_file.to_str().unwrap(), "--tls-key", key_file.to_str().unwrap()],
    );
    assert!(srv.base.starts_with("https://127.0.0.1:"), "{}", srv.base);
    srv.http = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap()])
        .build()
        .unwrap();
    assert_eq!(srv.get("/health").await, (StatusCode::OK, json!({ "status": "ok" })));
    srv.create_store("t", json!({})).await;
    let (s, b) = srv
        .post("/v1/batch", json!({ "ops": [{ "op": "put", "store": "t", "key": "k", "value": "v" }] }))
        .await;
    assert_eq!((s, b["results"][0].clone()), (StatusCode::OK, json!({ "ok": true })));
    // Plain HTTP to the TLS port fails.
    let plain = srv.base.replace("https://", "http://");
    assert!(
        reqwest::get(format!("{plain}/health")).await.map(|r| r.status() != StatusCode::OK).unwrap_or(true)
    );
    let status = srv.terminate().await;
    assert!(status.success(), "{status:?}");
}

#[test]
fn tls_needs_both_files() {
    let (_d, data) = data_dir();
    let out =
        sop().arg("--data").arg(&data).args(["serve", "--tls-cert", "/nonexistent.pem"]).output().unwrap();
    assert!(!out.status.success());
    let out = sop()
        .arg("--data")
        .arg(&data)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.key",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TLS certificate"), "{err}");
}
