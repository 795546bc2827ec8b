//! Every route of the HTTP API and its error paths, against the real
//! binary on a random loopback port.

mod common;

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use common::{Server, data_dir};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

fn kind(body: &Value) -> &str {
    body["error"].as_str().unwrap_or("<no error field>")
}

#[tokio::test]
async fn health_openapi_and_unknown_routes() {
    let (_d, data) = data_dir();
    let srv = Server::start(&data, &[]);
    let (s, b) = srv.get("/health").await;
    assert_eq!((s, b), (StatusCode::OK, json!({ "status": "ok" })));

    let (s, doc) = srv.get("/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&str> = doc["paths"].as_object().unwrap().keys().map(String::as_str).collect();
    for p in [
        "/health",
        "/metrics",
        "/v1/openapi.json",
        "/v1/stores",
        "/v1/stores/{store}",
        "/v1/tx",
        "/v1/tx/{tx}/stores/{store}/items/{key}",
        "/v1/tx/{tx}/stores/{store}/items",
        "/v1/tx/{tx}/commit",
        "/v1/tx/{tx}/rollback",
        "/v1/batch",
    ] {
        assert!(paths.contains(&p), "openapi.json lacks {p}");
    }
    assert_eq!(paths.len(), 11, "openapi.json documents a route the server lacks: {paths:?}");

    let (s, b) = srv.get("/v2/nothing").await;
    assert_eq!((s, kind(&b)), (StatusCode::NOT_FOUND, "no_route"));
    let (s, b) = srv.req(Method::PATCH, "/v1/stores", None).await;
    assert_eq!((s, kind(&b)), (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"));
}

#[tokio::test]
async fn stores_create_list_remove_and_errors() {
    let (_d, data) = data_dir();
    let srv = Server::start(&data, &[]);
    assert_eq!(srv.get("/v1/stores").await, (StatusCode::OK, json!({ "stores": [] })));

    let (s, b) = srv.put("/v1/stores/users", json!({ "slot_length": 500, "unique": true })).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(b["options"]["slot_length"], 500);
    // No body at all: defaults.
    let (s, b) = srv.req(Method::PUT, "/v1/stores/plain", None).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["options"]["slot_length"], sop_btree::StoreOptions::default().slot_length);

    let (s, b) = srv.put("/v1/stores/users", json!({})).await;
    assert_eq!((s, kind(&b)), (StatusCode::CONFLICT, "already_exists"));
    let (s, b) = srv.put("/v1/stores/bad", json!({ "slot_length": 2 })).await;
    assert_eq!((s, kind(&b)), (StatusCode::BAD_REQUEST, "invalid_input"), "{b}");
    let (s, b) = srv.put("/v1/stores/bad", json!({ "slot_lenght": 10 })).await;
    assert_eq!((s, kind(&b)), (StatusCode::BAD_REQUEST, "bad_json"), "{b}");
    let r = srv.http.put(format!("{}/v1/stores/bad", srv.base)).body("{not json").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(kind(&r.json::<Value>().await.unwrap()), "bad_json");
    let long = "n".repeat(200);
    let (s, b) = srv.put(&format!("/v1/stores/{long}"), json!({})).await;
    assert_eq!((s, kind(&b)), (StatusCode::BAD_REQUEST, "invalid_input"), "{b}");

    let tx = srv.begin("write").await;
    for k in ["a", "b", "c"] {
        let (s, _) = srv.put(&format!("/v1/tx/{tx}/stores/users/items/{k}"), json!(1)).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
    }
    assert_eq!(srv.post(&format!("/v1/tx/{tx}/commit"), json!(null)).await.0, StatusCode::OK);
    let (_, list) = srv.get("/v1/stores").await;
    let names: Vec<(&str, u64)> = list["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(names, vec![("plain", 0), ("users", 3)]);

    assert_eq!(srv.delete("/v1/stores/users").await.0, StatusCode::NO_CONTENT);
    let (s, b) = srv.delete("/v1/stores/users").await;
    assert_eq!((s, kind(&b)), (StatusCode::NOT_FOUND, "store_not_found"));
}

#[tokio::test]
async fn items_in_transactions() {
    let (_d, data) = data_dir();
    let srv = Server::start(&data, &[]);
    srv.create_store("s", json!({})).await;
    let tx = srv.begin("write").await;
    let item = |k: &str| format!("/v1/tx/{tx}/stores/s/items/{k}");
    assert_eq!(srv.put(&item("k1"), json!({ "n": 1, "tags": ["a"] })).await.0, StatusCode::NO_CONTENT);
    assert_eq!(srv.put(&item("k2"), json!("two")).await.0, StatusCode::NO_CONTENT);
    // Upsert replaces.
    assert_eq!(srv.put(&item("k2"), json!(2)).await.0, StatusCode::NO_CONTENT);
    assert_eq!(
        srv.get(&item("k1")).await,
        (StatusCode::OK, json!({ "key": "k1", "value": { "n": 1, "tags": ["a"] } }))
    );
    assert_eq!(srv.get(&item("k2")).await.1["value"], 2);
    let (s, b) = srv.get(&item("nope")).await;
    assert_eq!((s, kind(&b)), (StatusCode::NOT_FOUND, "not_found"));
    assert_eq!(srv.delete(&item("k2")).await.0, StatusCode::NO_CONTENT);
    let (s, b) = srv.delete(&item("k2")).await;
    assert_eq!((s, kind(&b)), (StatusCode::NOT_FOUND, "not_found"));
    // Keys are any UTF-8, percent-encoded in the path.
    let odd = "a/b c%é?#";
    let enc: String =
        url::form_urlencoded::byte_serialize(odd.as_bytes()).collect::<String>().replace('+', "%20");
    assert_eq!(srv.put(&item(&enc), json!(null)).await.0, StatusCode::NO_CONTENT);
    assert_eq!(srv.get(&item(&enc)).await.1["key"], odd);
    assert_eq!(
        srv.post(&format!("/v1/tx/{tx}/commit"), json!(null)).await,
        (StatusCode::OK, json!({ "committed": true }))
    );
    // The transaction is over.
    let (s, b) = srv.get(&item("k1")).await;
    assert_eq!((s, kind(&b)), (StatusCode::NOT_FOUND, "tx_not_found"));

    // A rolled-back transaction leaves nothing.
    let tx2 = srv.begin("write").await;
    srv.put(&format!("/v1/tx/{tx2}/stores/s/items/ghost"), json!(1)).await;
    assert_eq!(srv.post(&format!("/v1/tx/{tx2}/rollback"), json!(null)).await.0, StatusCode::OK);
    let (s, b) = srv.post(&format!("/v1/tx/{tx2}/rollback"), json!(null)).await;
    assert_eq!((s, kind(&b)), (StatusCode::NOT_FOUND, "tx_not_found"));

    let r = srv.begin("read").await;
    let (s, b) = srv.get(&format!("/v1/tx/{r}/stores/s/items/ghost")).await;
    assert_eq!((s, kind(&b)), (StatusCode::NOT_FOUND, "not_found"));
    assert_eq!(srv.get(&format!("/v1/tx/{r}/stores/s/items/k1")).await.1["value"]["n"], 1);
    assert_eq!(srv.get(&format!("/v1/tx/{r}/stores/s/items/{enc}")).await.1["value"], Value::Null);
    // Writes in a read transaction.
    let (s, b) = srv.put(&format!("/v1/tx/{r}/stores/s/items/x"), json!(1)).await;
    assert_eq!((s, kind(&b)), (StatusCode::CONFLICT, "wrong_mode"));
    let (s, b) = srv.delete(&format!("/v1/tx/{r}/stores/s/items/k1")).await;
    assert_eq!((s, kind(&b)), (StatusCode::CONFLICT, "wrong_mode"));
    assert_eq!(srv.post(&format!("/v1/tx/{r}/commit"), json!(null)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn request_errors() {
    let (_d, data) = data_dir();
    let srv = Server::start(&data, &[]);
    srv.create_store("s", json!({})).await;
    let tx = srv.begin("write").await;
    let (s, b) = srv.get("/v1/tx/no-such-tx/stores/s/items/k").await;
    assert_eq!((s, kind(&b)), (StatusCode::NOT_FOUND, "tx_not_found"));
    let (s, b) = srv.get(&format!("/v1/tx/{tx}/stores/missing/items/k")).await;
    assert_eq!((s, kind(&b)), (StatusCode::NOT_FOUND, "store_not_found"));
    let r = srv
        .http
        .put(format!("{}/v1/tx/{tx}/stores/s/items/k", srv.base))
        .body("{\"a\":")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(kind(&r.json::<Value>().await.unwrap()), "bad_json");
    let (s, b) = srv.post("/v1/tx", json!({ "mode": "sideways" })).await;
    assert_eq!((s, kind(&b)), (StatusCode::BAD_REQUEST, "bad_json"));
    let (s, b) = srv.post("/v1/tx", json!({ "timeout_ms": 0 })).await;
    assert_eq!((s, kind(&b)), (StatusCode::BAD_REQUEST, "invalid_input"));
    let (s, b) = srv.post("/v1/tx", json!({ "timeout_ms": 3_600_000 })).await;
    assert_eq!((s, kind(&b)), (StatusCode::BAD_REQUEST, "invalid_input"));

    // Oversize key, oversize value, oversize body.
    let long_key = "k".repeat(sop_btree::MAX_KEY_LEN + 1);
    let (s, b) = srv.put(&format!("/v1/tx/{tx}/stores/s/items/{long_key}"), json!(1)).await;
    assert_eq!((s, kind(&b)), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"));
    let big = Value::String("v".repeat(sop_btree::MAX_VALUE_LEN));
    let (s, b) = srv.put(&format!("/v1/tx/{tx}/stores/s/items/big"), big).await;
    assert_eq!((s, kind(&b)), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"), "{b}");
    // A body over the limit is refused from its Content-Length alone,
    // before it is sent (raw HTTP/1.1, so that nothing is streamed).
    let host = srv.base.trim_start_matches("http://").to_owned();
    let mut sock = tokio::net::TcpStream::connect(&host).await.unwrap();
    let head = format!(
        "PUT /v1/tx/{tx}/stores/s/items/huge HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        sop_btree::MAX_VALUE_LEN + (2 << 20)
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut answer)).await.unwrap().unwrap();
    let answer = String::from_utf8_lossy(&answer[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"error\":\"too_large\""), "{answer}");
    // The transaction survived its failed requests and commits what it has.
    assert_eq!(
        srv.put(&format!("/v1/tx/{tx}/stores/s/items/ok"), json!(true)).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(srv.post(&format!("/v1/tx/{tx}/commit"), json!(null)).await.0, StatusCode::OK);
    let (_, list) = srv.get("/v1/stores").await;
    assert_eq!(list["stores"][0]["count"], 1);
}

#[tokio::test]
async fn idle_transactions_expire() {
    let (_d, data) = data_dir();
    let srv = Server::start(&data, &[]);
    srv.create_store("s", json!({})).await;
    let (_, b) = srv.post("/v1/tx", json!({ "mode": "write", "timeout_ms": 200 })).await;
    let tx = b["tx"].as_str().unwrap().to_owned();
    assert_eq!(srv.put(&format!("/v1/tx/{tx}/stores/s/items/k"), json!(1)).await.0, StatusCode::NO_CONTENT);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (s, b) = srv.get(&format!("/v1/tx/{tx}/stores/s/items/k")).await;
    assert_eq!((s, kind(&b)), (StatusCode::GONE, "expired"));
    let (s, b) = srv.post(&format!("/v1/tx/{tx}/commit"), json!(null)).await;
    assert_eq!((s, kind(&b)), (StatusCode::GONE, "expired"));
    let (_, list) = srv.get("/v1/stores").await;
    assert_eq!(list["stores"][0]["count"], 0, "an expired transaction must not publish");
}

#[tokio::test]
async fn conflicting_commit_gets_409() {
    let (_d, data) = data_dir();
    let srv = Server::start(&data, &[]);
    srv.create_store("s", json!({})).await;
    let (_, b) = srv
        .post("/v1/batch", json!({ "ops": [{ "op": "put", "store": "s", "key": "n", "value": 0 }] }))
        .await;
    assert_eq!(b, json!({ "results": [{ "ok": true }] }));
    let t1 = srv.begin("write").await;
    let t2 = srv.begin("write").await;
    for t in [&t1, &t2] {
        assert_eq!(srv.get(&format!("/v1/tx/{t}/stores/s/items/n")).await.1["value"], 0);
        assert_eq!(
            srv.put(&format!("/v1/tx/{t}/stores/s/items/n"), json!(1)).await.0,
            StatusCode::NO_CONTENT
        );
    }
    assert_eq!(srv.post(&format!("/v1/tx/{t1}/commit"), json!(null)).await.0, StatusCode::OK);
    let (s, b) = srv.post(&format!("/v1/tx/{t2}/commit"), json!(null)).await;
    assert_eq!((s, kind(&b)), (StatusCode::CONFLICT, "conflict"), "{b}");
    assert!(b["message"].as_str().is_some_and(|m| !m.is_empty()));
    let (s, b) = srv.post(&format!("/v1/tx/{t2}/commit"), json!(null)).await;
    assert_eq!((s, kind(&b)), (StatusCode::NOT_FOUND, "tx_not_found"), "the transaction is over");

    let (_, metrics) = srv.get("/metrics").await;
    let text = metrics.as_str().expect("metrics text");
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert!(value("sop_commits_total") >= 2.0);
    assert!(value("sop_conflicts_total") >= 1.0);
    assert_eq!(value("sop_commit_seconds_count"), 2.0);
    assert!(value("sop_cache_hits_total") + value("sop_cache_misses_total") >= 0.0);
    assert_eq!(value("sop_open_transactions"), 0.0);
    assert!(value("sop_rollbacks_total") >= 0.0);
    assert!(text.contains("sop_commit_seconds_bucket{le=\"0.001\"}"));
}

#[tokio::test]
async fn range_pages_forward_and_reverse() {
    let (_d, data) = data_dir();
    let srv = Server::start(&data, &[]);
    srv.create_store("r", json!({ "slot_length": 4 })).await;
    let ops: Vec<Value> = (0..25)
        .map(|i| json!({ "op": "put", "store": "r", "key": format!("k{i:02}"), "value": i }))
        .collect();
    assert_eq!(srv.post("/v1/batch", json!({ "ops": ops })).await.0, StatusCode::OK);
    let tx = srv.begin("read").await;
    let list = |q: &str| format!("/v1/tx/{tx}/stores/r/items?{q}");
    let keys = |b: &Value| -> Vec<String> {
        b["items"].as_array().unwrap().iter().map(|i| i["key"].as_str().unwrap().to_owned()).collect()
    };

    let (s, b) = srv.get(&list("")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(keys(&b).len(), 25);
    assert_eq!(b["next"], Value::Null);
    assert_eq!(b["items"][3], json!({ "key": "k03", "value": 3 }));

    // Forward pages: next is the first key not returned, used as `from`.
    let (mut seen, mut from) = (Vec::new(), String::new());
    loop {
        let (_, b) = srv.get(&list(&format!("limit=10&from={from}"))).await;
        seen.extend(keys(&b));
        match b["next"].as_str() {
            Some(n) => from = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, (0..25).map(|i| format!("k{i:02}")).collect::<Vec<_>>());

    // Reverse pages inside [k05, k20): next is the last key returned, used as `to`.
    let (mut seen, mut to) = (Vec::new(), "k20".to_owned());
    loop {
        let (_, b) = srv.get(&list(&format!("limit=4&reverse=true&from=k05&to={to}"))).await;
        seen.extend(keys(&b));
        match b["next"].as_str() {
            Some(n) => to = n.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, (5..20).rev().map(|i| format!("k{i:02}")).collect::<Vec<_>>());

    let (_, b) = srv.get(&list("from=k10&to=k13")).await;
    assert_eq!(keys(&b), ["k10", "k11", "k12"]);
    for bad in ["limit=0", "limit=abc", "limit=1000000", "reverse=maybe", "colour=red"] {
        let (s, b) = srv.get(&list(bad)).await;
        assert_eq!((s, kind(&b)), (StatusCode::BAD_REQUEST, "invalid_input"), "{bad}: {b}");
    }
}

#[tokio::test]
async fn batch_runs_ops_in_order() {
    let (_d, data) = data_dir();
    let srv = Server::start(&data, &[]);
    srv.create_store("a", json!({})).await;
    srv.create_store("b", json!({})).await;
    let ops = json!({ "ops": [
        { "op": "put", "store": "a", "key": "x", "value": { "v": 1 } },
        { "op": "get", "store": "a", "key": "x" },
        { "op": "get", "store": "b", "key": "x" },
        { "op": "put", "store": "b", "key": "y", "value": [1, 2] },
        { "op": "delete", "store": "a", "key": "x" },
        { "op": "get", "store": "a", "key": "x" },
        { "op": "delete", "store": "a", "key": "never" }
    ]});
    let (s, b) = srv.post("/v1/batch", ops).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        b["results"],
        json!([{ "ok": true }, { "key": "x", "value": { "v": 1 } }, null, { "ok": true }, { "ok": true }, null, { "ok": true }])
    );
    let (_, b) = srv.post("/v1/batch", json!({ "ops": [{ "op": "get", "store": "b", "key": "y" }] })).await;
    assert_eq!(b["results"][0]["value"], json!([1, 2]));

    let cases = [
        (
            json!({ "ops": [{ "op": "put", "store": "a", "key": "k" }] }),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (
            json!({ "ops": [{ "op": "get", "store": "a", "key": "k", "value": 1 }] }),
            StatusCode::BAD_REQUEST,
            "invalid_input",
        ),
        (json!({ "ops": [{ "op": "frob", "store": "a", "key": "k" }] }), StatusCode::BAD_REQUEST, "bad_json"),
        (json!({ "operations": [] }), StatusCode::BAD_REQUEST, "bad_json"),
        (
            json!({ "ops": [{ "op": "put", "store": "zzz", "key": "k", "value": 1 }] }),
            StatusCode::NOT_FOUND,
            "store_not_found",
        ),
    ];
    for (body, status, k) in cases {
        let (s, b) = srv.post("/v1/batch", body.clone()).await;
        assert_eq!((s, kind(&b)), (status, k), "{body}: {b}");
    }
    // A failed batch wrote nothing: store "a" is still empty after the
    // batch whose last op named an unknown store.
    let (s, b) = srv
        .post(
            "/v1/batch",
            json!({ "ops": [
                { "op": "put", "store": "a", "key": "half", "value": 1 },
                { "op": "put", "store": "zzz", "key": "k", "value": 1 }
            ]}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    let (_, b) =
        srv.post("/v1/batch", json!({ "ops": [{ "op": "get", "store": "a", "key": "half" }] })).await;
    assert_eq!(b["results"][0], Value::Null);
}
