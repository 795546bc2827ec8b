//! The OpenAPI document, generated from the code: routes and their
//! parameters and bodies from `#[utoipa::path]` on the handlers (through
//! `utoipa_axum`, so the router and the document are built from the same
//! list), error statuses from the [`ErrorCode`]s each handler declares with
//! `errors!` (`storage` stands for the codes of a storage failure: `io`,
//! `corruption`, `internal`, `unsupported`), and the settings of this server (security, timeout limit)
//! filled in by [`render`].

use std::collections::BTreeMap;

use serde_json::{Value, json};
use utoipa::OpenApi;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};

use super::error::ErrorCode;
use crate::wire::{ErrorBody, Op};

/// The document's fixed parts: info and the shared schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "SOP-rs HTTP API",
        version = "1",
        description = "Transactional, ordered key-value stores over HTTP/JSON. Keys are UTF-8 strings; \
            values are any JSON. Every error is `{\"error\":\"<code>\",\"message\":\"..\"}` (schema `Error`). \
            In request bodies, `null` for an optional field means the same as leaving it out. \
            Transactions are optimistic and serializable: a commit answers 409 `conflict` when \
            something it read changed; retry the whole transaction.",
        license(name = "MIT OR Apache-2.0")
    ),
    components(schemas(ErrorBody, ErrorCode, Op))
)]
pub(crate) struct ApiDoc;

/// Declares a type whose `utoipa::IntoResponses` documents the
/// `ErrorCode`s a handler can answer, one response per status, each with
/// the `Error` body; the handler lists the type in `responses(...)`. A
/// leading `storage` adds the codes of a storage failure (`io`,
/// `corruption`, `internal`, `unsupported`).
macro_rules! errors {
    ($(#[$doc:meta])* $name:ident: storage $(, $code:ident)* $(,)?) => {
        $crate::api::openapi::errors!($(#[$doc])* $name: Io, Corruption, Internal, Unsupported $(, $code)*);
    };
    ($(#[$doc:meta])* $name:ident: $($code:ident),+ $(,)?) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub(crate) struct $name;

        impl utoipa::IntoResponses for $name {
            fn responses() -> std::collections::BTreeMap<
                String,
                utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
            > {
                $crate::api::openapi::error_responses(&[$($crate::api::ErrorCode::$code),+])
            }
        }
    };
}
pub(crate) use errors;

/// One response per status of `codes`, each naming its codes and carrying
/// the `Error` body.
pub(crate) fn error_responses(codes: &[ErrorCode]) -> BTreeMap<String, RefOr<Response>> {
    let mut by_status: BTreeMap<u16, Vec<ErrorCode>> = BTreeMap::new();
    for &code in codes {
        let list = by_status.entry(code.status().as_u16()).or_default();
        if !list.contains(&code) {
            list.push(code);
        }
    }
    by_status.into_iter().map(|(status, codes)| (status.to_string(), error_response(&codes))).collect()
}

fn error_response(codes: &[ErrorCode]) -> RefOr<Response> {
    let names: Vec<String> = codes.iter().map(|c| format!("`{}`", c.as_str())).collect();
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("Error"))).build();
    ResponseBuilder::new()
        .description(format!("Error: {}", names.join(", ")))
        .content("application/json", content)
        .build()
        .into()
}

/// The server settings the document depends on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DocSettings {
    /// A token file is configured: every route but `/health` needs
    /// `Authorization: Bearer <token>`.
    pub(crate) auth: bool,
    /// The largest `timeout_ms` accepted.
    pub(crate) max_timeout_ms: u64,
    /// The timeout when `timeout_ms` is absent.
    pub(crate) default_timeout_ms: u64,
}

/// The routes that never need the token.
const OPEN_PATHS: &[&str] = &["/health"];

/// The document as served: `api` with this server's settings applied.
pub(crate) fn render(api: utoipa::openapi::OpenApi, settings: DocSettings) -> String {
    let mut doc = serde_json::to_value(api).unwrap_or_default();
    let timeout = &mut doc["components"]["schemas"]["BeginTx"]["properties"]["timeout_ms"];
    timeout["maximum"] = json!(settings.max_timeout_ms);
    timeout["default"] = json!(settings.default_timeout_ms);
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, item) in paths.iter_mut() {
            let secured = settings.auth && !OPEN_PATHS.contains(&path.as_str());
            for op in item.as_object_mut().into_iter().flat_map(|m| m.values_mut()) {
                if let Some(op) = op.as_object_mut() {
                    finish_operation(op, path.contains('{'), secured);
                }
            }
        }
    }
    if settings.auth {
        doc["components"]["securitySchemes"] = json!({ "bearer": { "type": "http", "scheme": "bearer" } });
    }
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// What the router and the middleware add to every operation.
fn finish_operation(op: &mut serde_json::Map<String, Value>, has_params: bool, secured: bool) {
    let response = |code| serde_json::to_value(error_response(&[code])).unwrap_or_default();
    // utoipa leaves `required` out of a parameter built with `schema_with`;
    // a path parameter always is.
    for param in op.get_mut("parameters").and_then(Value::as_array_mut).into_iter().flatten() {
        if param["in"] == "path" {
            param["required"] = json!(true);
        }
    }
    let responses = &mut op["responses"];
    // Any request whose Content-Length is over the limit.
    if responses.get("413").is_none() {
        responses["413"] = response(ErrorCode::TooLarge);
    }
    // An empty path parameter matches no route.
    if has_params {
        add_code(responses, "404", &response(ErrorCode::NoRoute));
    }
    if secured {
        responses["401"] = response(ErrorCode::Unauthorized);
        op.insert("security".into(), json!([{ "bearer": [] }]));
    }
}

/// Adds `response` at `status`, or its code to the response already there.
fn add_code(responses: &mut Value, status: &str, response: &Value) {
    match responses.get_mut(status) {
        Some(there) => {
            let code = response["description"].as_str().unwrap_or_default().trim_start_matches("Error: ");
            if let Some(d) = there["description"].as_str() {
                there["description"] = json!(format!("{d}, {code}"));
            }
        }
        None => responses[status] = response.clone(),
    }
}
