//! Arbitrary HTTP requests (methods, paths, keys, queries, bodies) into
//! the server's router over an in-memory database: never a panic, never a
//! 5xx, and every error answer is JSON `{"error","message"}`.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

#[derive(Debug, Arbitrary)]
struct Req {
    method: u8,
    route: u8,
    a: String,
    b: String,
    query: String,
    body: Vec<u8>,
    real_tx: bool,
}

const METHODS: [Method; 5] = [Method::GET, Method::PUT, Method::POST, Method::DELETE, Method::PATCH];

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime"))
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

async fn send(
    app: &axum::Router,
    method: Method,
    uri: &str,
    body: Vec<u8>,
) -> Option<(u16, serde_json::Value)> {
    let req = Request::builder().method(method).uri(uri).body(Body::from(body)).ok()?;
    let resp = app.clone().oneshot(req).await.expect("the router is infallible");
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20).await.expect("body");
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Some((status, json))
}

fuzz_target!(|reqs: Vec<Req>| {
    rt().block_on(async {
        static APP: tokio::sync::OnceCell<axum::Router> = tokio::sync::OnceCell::const_new();
        let app = APP.get_or_init(sop_server::fuzz_router).await;
        let mut txs = Vec::new();
        for r in reqs.iter().take(16) {
            let tx = if r.real_tx {
                let (_, b) = send(app, Method::POST, "/v1/tx", Vec::new()).await.expect("begin");
                let id = b["tx"].as_str().unwrap_or("none").to_owned();
                txs.push(id.clone());
                id
            } else {
                enc(&r.a)
            };
            let (a, b) = (enc(&r.a), enc(&r.b));
            let path = match r.route % 10 {
                0 => "/v1/stores".to_owned(),
                1 => format!("/v1/stores/{a}"),
                2 => "/v1/tx".to_owned(),
                3 => format!("/v1/tx/{tx}/commit"),
                4 => format!("/v1/tx/{tx}/rollback"),
                5 => format!("/v1/tx/{tx}/stores/s/items"),
                6 => format!("/v1/tx/{tx}/stores/s/items/{b}"),
                7 => format!("/v1/tx/{tx}/stores/{a}/items/{b}"),
                8 => "/v1/batch".to_owned(),
                _ => format!("/{a}/{b}"),
            };
            let uri =
                if r.query.is_empty() { path } else { format!("{path}?{}", r.query.replace(['#', ' '], "")) };
            let method = METHODS[usize::from(r.method) % METHODS.len()].clone();
            let Some((status, json)) = send(app, method, &uri, r.body.clone()).await else { continue };
            assert!(status < 500, "{uri}: {status} {json}");
            if let Some(id) = json["tx"].as_str() {
                txs.push(id.to_owned());
            }
            if status >= 400 {
                assert!(json["error"].is_string() && json["message"].is_string(), "{uri}: {status} {json}");
            }
        }
        // Keep the database bounded: roll back, drop every store but "s",
        // and empty "s".
        for tx in txs {
            let _ = send(app, Method::POST, &format!("/v1/tx/{tx}/rollback"), Vec::new()).await;
        }
        let (_, list) = send(app, Method::GET, "/v1/stores", Vec::new()).await.expect("list");
        for s in list["stores"].as_array().into_iter().flatten() {
            let name = s["name"].as_str().unwrap_or_default();
            if name != "s" {
                let (st, _) = send(app, Method::DELETE, &format!("/v1/stores/{}", enc(name)), Vec::new())
                    .await
                    .expect("drop");
                assert_eq!(st, 204);
            }
        }
        let (_, b) = send(app, Method::POST, "/v1/tx", Vec::new()).await.expect("begin");
        let tx = b["tx"].as_str().expect("tx").to_owned();
        let (_, page) =
            send(app, Method::GET, &format!("/v1/tx/{tx}/stores/s/items?limit=100000"), Vec::new())
                .await
                .expect("page");
        for item in page["items"].as_array().into_iter().flatten() {
            let key = enc(item["key"].as_str().unwrap_or_default());
            let _ = send(app, Method::DELETE, &format!("/v1/tx/{tx}/stores/s/items/{key}"), Vec::new()).await;
        }
        let (st, _) =
            send(app, Method::POST, &format!("/v1/tx/{tx}/commit"), Vec::new()).await.expect("commit");
        assert!(st == 200 || st == 409, "cleanup commit: {st}");
    });
});
