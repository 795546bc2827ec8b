//! The bank the server tests run: accounts, a ledger of transfers, and
//! the checks that no transfer is lost or half visible.

use std::collections::{BTreeMap, HashSet};

use reqwest::StatusCode;
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
