//! The served OpenAPI document matches the server: every route the router
//! serves is documented with the methods it takes, every documented
//! operation is served, error statuses carry the `Error` schema, and the
//! security requirement follows the server's mode (token file or none).

mod common;

use common::{Server, data_dir};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Every route of the router, with its methods.
const ROUTES: &[(&str, &[&str])] = &[
    ("/health", &["get"]),
    ("/metrics", &["get"]),
    ("/v1/openapi.json", &["get"]),
    ("/v1/stores", &["get"]),
    ("/v1/stores/{store}", &["put", "delete"]),
    ("/v1/tx", &["post"]),
    ("/v1/tx/{tx}/commit", &["post"]),
    ("/v1/tx/{tx}/rollback", &["post"]),
    ("/v1/tx/{tx}/stores/{store}/items", &["get"]),
    ("/v1/tx/{tx}/stores/{store}/items/{key}", &["get", "put", "delete"]),
    ("/v1/batch", &["post"]),
];

const METHODS: &[&str] = &["get", "put", "post", "delete", "patch"];

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            out.push((path.clone(), method.clone(), op.clone()));
        }
    }
    out
}

/// `path` with sample parameters.
fn concrete(path: &str) -> String {
    path.replace("{store}", "s").replace("{tx}", "no-such-tx").replace("{key}", "k")
}

async fn fetch_document(srv: &Server) -> Value {
    let (status, doc) = srv.get("/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK, "{doc}");
    assert_eq!(doc["openapi"], "3.1.0");
    doc
}

/// The document and the router agree, both ways.
async fn check_routes(srv: &Server, doc: &Value) {
    let mut documented: Vec<(String, String)> = operations(doc).into_iter().map(|(p, m, _)| (p, m)).collect();
    documented.sort();
    let mut expected: Vec<(String, String)> =
        ROUTES.iter().flat_map(|(p, ms)| ms.iter().map(|m| ((*p).to_owned(), (*m).to_owned()))).collect();
    expected.sort();
    assert_eq!(documented, expected, "the document and the route list differ");
    for (path, methods) in ROUTES {
        for method in METHODS {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
            let (status, body) = srv.req(m, &concrete(path), None).await;
            let served = !matches!(body["error"].as_str(), Some("no_route" | "method_not_allowed"));
            assert_eq!(served, methods.contains(method), "{method} {path}: {status} {body}");
        }
    }
}

/// Every error status names the `Error` schema; every status documented is
/// a real one.
fn check_error_schemas(doc: &Value) {
    let error = &doc["components"]["schemas"]["Error"];
    assert_eq!(error["required"], serde_json::json!(["error", "message"]), "{error}");
    for (path, method, op) in operations(doc) {
        let responses = op["responses"].as_object().expect("responses");
        assert!(responses.contains_key("413"), "{method} {path}: any route refuses an oversize body");
        for (status, response) in responses {
            let code: u16 = status.parse().expect("a numeric status");
            if code >= 400 {
                let schema = &response["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/Error", "{method} {path} {status}");
            }
        }
    }
}

#[tokio::test]
async fn document_lists_every_route_without_security_when_open() {
    let (_d, data) = data_dir();
    let srv = Server::start(&data, &["--max-tx-timeout-secs", "90"]);
    let doc = fetch_document(&srv).await;
    check_routes(&srv, &doc).await;
    check_error_schemas(&doc);
    assert!(doc["components"].get("securitySchemes").is_none(), "no token, no security scheme");
    assert!(doc.get("security").is_none());
    for (path, method, op) in operations(&doc) {
        assert!(op.get("security").is_none(), "{method} {path} requires security without a token");
        assert!(op["responses"].get("401").is_none(), "{method} {path} documents 401 without a token");
    }
    // The server's own limits are in the schema.
    let timeout = &doc["components"]["schemas"]["BeginTx"]["properties"]["timeout_ms"];
    assert_eq!(timeout["maximum"], 90_000, "{timeout}");
    assert_eq!(timeout["minimum"], 1, "{timeout}");
    let store = &doc["components"]["schemas"]["Store"]["properties"]["name"];
    assert_eq!(store["maxLength"], 128, "{store}");
    // Statuses the handlers give are documented where they give them.
    let op = |path: &str, method: &str| doc["paths"][path][method]["responses"].clone();
    let item = "/v1/tx/{tx}/stores/{store}/items/{key}";
    assert!(op(item, "put")["409"]["description"].as_str().is_some_and(|d| d.contains("wrong_mode")));
    assert!(op(item, "get")["410"]["description"].as_str().is_some_and(|d| d.contains("expired")));
    assert!(op("/v1/tx", "post")["429"].is_object());
    assert!(
        op("/v1/stores/{store}", "put")["400"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("invalid_input"))
    );
}

#[tokio::test]
async fn document_requires_the_bearer_token_when_one_is_set() {
    let (d, data) = data_dir();
    let token_file = d.path().join("token");
    std::fs::write(&token_file, "t0ken\n").expect("token file");
    let mut srv = Server::start(&data, &["--token-file", token_file.to_str().expect("utf-8 path")]);
    assert_eq!(srv.get("/v1/openapi.json").await.0, StatusCode::UNAUTHORIZED);
    srv.token = Some("t0ken".into());
    let doc = fetch_document(&srv).await;
    check_routes(&srv, &doc).await;
    check_error_schemas(&doc);
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    for (path, method, op) in operations(&doc) {
        if path == "/health" {
            assert!(op.get("security").is_none(), "/health never needs the token");
            assert!(op["responses"].get("401").is_none());
        } else {
            assert_eq!(op["security"], serde_json::json!([{ "bearer": [] }]), "{method} {path}");
            assert!(op["responses"]["401"].is_object(), "{method} {path} lacks 401");
        }
    }
}
