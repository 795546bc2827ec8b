//! The bank the server tests run: accounts, a ledger of transfers, and
//! the checks that no transfer is lost or half visible.

use std::collections::{BTreeMap, HashSet};

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::Server;

/// Each account's opening balance.
pub const INITIAL: i64 = 1_000;

/// The key of account `i`.
pub fn account(i: u64) -> String {
    format!("acct-{i:02}")
}

/// Creates the `accounts` and `ledger` stores (slot length 8: nodes split
/// under load) and `accounts` accounts of [`INITIAL`] each.
pub async fn setup(srv: &Server, accounts: u64) {
    srv.create_store("accounts", json!({ "slot_length": 8 })).await;
    srv.create_store("ledger", json!({ "slot_length": 8 })).await;
    let ops: Vec<Value> = (0..accounts)
        .map(|i| json!({ "op": "put", "store": "accounts", "key": account(i), "value": INITIAL }))
        .collect();
    let (s, b) = srv.post("/v1/batch", json!({ "ops": ops })).await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

/// Checks the items of `accounts` and `ledger` (as `/items` lists them,
/// read in one transaction): the total is exact, every acknowledged
/// transfer is in the ledger, each balance is what the ledger says (no
/// partial transfer). Returns the ledger's size.
pub fn check_books(accounts: &Value, ledger: &Value, n: u64, acked: &[String]) -> usize {
    let balances: BTreeMap<String, i64> = accounts
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["key"].as_str().unwrap().to_owned(), i["value"].as_i64().unwrap()))
        .collect();
    assert_eq!(balances.len() as u64, n);
    assert_eq!(balances.values().sum::<i64>(), INITIAL * n as i64, "total balance changed");
    let entries = ledger.as_array().unwrap();
    let ids: HashSet<&str> = entries.iter().map(|i| i["key"].as_str().unwrap()).collect();
    for a in acked {
        assert!(ids.contains(a.as_str()), "acknowledged transfer {a} is missing");
    }
    let mut expected: BTreeMap<String, i64> = (0..n).map(|i| (account(i), INITIAL)).collect();
    for e in entries {
        let v = &e["value"];
        let amount = v["amount"].as_i64().unwrap();
        *expected.get_mut(v["from"].as_str().unwrap()).unwrap() -= amount;
        *expected.get_mut(v["to"].as_str().unwrap()).unwrap() += amount;
    }
    assert_eq!(balances, expected, "balances disagree with the ledger: a transfer is partly visible");
    entries.len()
}

/// How a transfer ended, as its client can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// The commit answered 200.
    Committed,
    /// The commit answered 409 (or 410: rolled back after the timeout).
    Conflict,
    /// A server error while a backend failed: written whole or not at all.
    Unknown,
    /// No answer: the server is gone.
    Unreachable,
}

/// One bank transfer through the HTTP API: reads both balances, writes
/// both and a ledger entry `tid`, commits. A server error answer is
/// [`Transfer::Unknown`] when `server_errors_allowed` (a backend is being
/// killed), else a test failure, as is any other unexpected answer.
pub async fn transfer(
    http: &reqwest::Client,
    base: &str,
    (tid, from, to, amount): (&str, &str, &str, i64),
    server_errors_allowed: bool,
) -> Transfer {
    let call = |m: Method, path: String, body: Option<Value>| {
        let mut r = http.request(m, format!("{base}{path}"));
        if let Some(b) = body {
            r = r.json(&b);
        }
        async move {
            let resp = r.send().await.ok()?;
            let status = resp.status();
            Some((status, resp.json::<Value>().await.unwrap_or(Value::Null)))
        }
    };
    // With a backend being killed, a transaction may outlive its timeout
    // (410: rolled back, nothing written) or meet a server error.
    let failed = |s: StatusCode, b: &Value, what: &str| {
        assert!(
            server_errors_allowed && (s.is_server_error() || s == StatusCode::GONE),
            "{what} answered {s}: {b}"
        );
        eprintln!("{what} through {base}: {s} {b}");
        if s == StatusCode::GONE { Transfer::Conflict } else { Transfer::Unknown }
    };
    let Some((s, b)) = call(Method::POST, "/v1/tx".into(), Some(json!({ "mode": "write" }))).await else {
        return Transfer::Unreachable;
    };
    if s != StatusCode::CREATED {
        return failed(s, &b, "begin");
    }
    let tx = b["tx"].as_str().expect("tx").to_owned();
    let item = |store: &str, key: &str| format!("/v1/tx/{tx}/stores/{store}/items/{key}");
    let mut balances = Vec::new();
    for k in [from, to] {
        let Some((s, b)) = call(Method::GET, item("accounts", k), None).await else {
            return Transfer::Unreachable;
        };
        if s != StatusCode::OK {
            return failed(s, &b, "a balance read");
        }
        balances.push(b["value"].as_i64().expect("balance"));
    }
    let entry = json!({ "from": from, "to": to, "amount": amount });
    let writes = [
        ("accounts", from, json!(balances[0] - amount)),
        ("accounts", to, json!(balances[1] + amount)),
        ("ledger", tid, entry),
    ];
    for (store, k, v) in writes {
        let Some((s, b)) = call(Method::PUT, item(store, k), Some(v)).await else {
            return Transfer::Unreachable;
        };
        if s != StatusCode::NO_CONTENT {
            return failed(s, &b, "a write");
        }
    }
    let Some((s, b)) = call(Method::POST, format!("/v1/tx/{tx}/commit"), None).await else {
        return Transfer::Unreachable;
    };
    match s {
        StatusCode::OK => Transfer::Committed,
        StatusCode::CONFLICT => Transfer::Conflict,
        s => failed(s, &b, "commit"),
    }
}
