//! [`EtcdRegistry`]: the registry of cluster mode, on etcd.
//!
//! Every process that opens the database talks to the same etcd cluster;
//! etcd's linearizable transactions are the only coordination between them
//! (no broadcast, no leader of our own). The key layout is in `keys.rs`;
//! validate-and-publish, one etcd transaction per commit, in `publish.rs`.
//!
//! etcd's own limits are part of the contract: a publish needing more
//! operations than the cluster's `--max-txn-ops` (128 by default), or more
//! bytes than `--max-request-bytes`, is refused with `InvalidInput` before
//! anything is sent ([`sop_core::Registry::publish_limit`]), never split
//! into several transactions.

mod config;
mod error;
mod keys;
mod local;
mod publish;

use std::sync::Arc;

use async_trait::async_trait;
use etcd_client::{
    Client, CompactionOptions, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KeyValue,
    KvClient, Txn, TxnOp, TxnOpResponse,
};
use sop_core::{
    Error, ErrorKind, Handle, Intent, IntentState, LogicalId, PublishRequest, Registry, Result, StoreInfo,
    Subject, TxId,
};

pub use config::EtcdConfig;
use error::from_etcd;
use keys::Keys;
pub use local::LocalEtcd;

/// The registry format under a prefix (`PREFIX/format`).
const FORMAT_VERSION: u8 = 1;
/// Keys per page when listing a range.
const PAGE: i64 = 1000;
/// The largest response this client decodes (a page of handles is ~90 KB).
const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// A [`Registry`] in an etcd cluster, shared by every process that opens
/// the same prefix.
#[derive(Clone)]
pub struct EtcdRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    kv: KvClient,
    keys: Keys,
    config: EtcdConfig,
}

impl std::fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.inner.config;
        write!(f, "EtcdRegistry({}/{})", c.endpoints.join(","), c.prefix)
    }
}

impl EtcdRegistry {
    /// Connects to the cluster and checks (or, under a new prefix, writes)
    /// the registry format.
    ///
    /// # Errors
    /// `InvalidInput` for a bad configuration; `Io` or `Timeout` when no
    /// member answers; `UnsupportedVersion`/`Corruption` when the prefix
    /// holds another format.
    pub async fn connect(config: EtcdConfig) -> Result<Self> {
        config.validate()?;
        let opts = ConnectOptions::new().with_timeout(config.timeout).with_connect_timeout(config.timeout);
        let client = Client::connect(&config.endpoints, Some(opts))
            .await
            .map_err(|e| from_etcd(e, &format!("connecting to {}", config.endpoints.join(","))))?;
        let kv = client.kv_client().max_decoding_message_size(MAX_RESPONSE_BYTES);
        let reg = Self { inner: Arc::new(Inner { kv, keys: Keys::new(&config.prefix), config }) };
        reg.check_format().await?;
        Ok(reg)
    }

    /// Connects to the registry an `etcd://` URL names
    /// ([`EtcdConfig::from_url`]).
    ///
    /// # Errors
    /// As [`EtcdConfig::from_url`] and [`EtcdRegistry::connect`].
    pub async fn from_url(url: &str) -> Result<Self> {
        Self::connect(EtcdConfig::from_url(url)?).await
    }

    /// The configuration it was opened with.
    #[must_use]
    pub fn config(&self) -> &EtcdConfig {
        &self.inner.config
    }

    fn kv(&self) -> KvClient {
        self.inner.kv.clone()
    }

    fn keys(&self) -> &Keys {
        &self.inner.keys
    }

    /// A transaction that writes: retried only when no member received it
    /// (a refused connection); any other failure may hide an applied
    /// write, which the caller must resolve.
    async fn txn(&self, txn: Txn, what: &str) -> Result<etcd_client::TxnResponse> {
        self.retry(what, false, |mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }

    /// A transaction that only reads (or writes idempotently): retried
    /// while members fail, so that the client moves on to a live member.
    async fn read_txn(&self, txn: Txn, what: &str) -> Result<etcd_client::TxnResponse> {
        self.retry(what, true, |mut kv| {
            let txn = txn.clone();
            async move { kv.txn(txn).await }
        })
        .await
    }

    /// A get, retried as [`EtcdRegistry::read_txn`].
    async fn get(
        &self,
        key: Vec<u8>,
        opts: Option<GetOptions>,
        what: &str,
    ) -> Result<etcd_client::GetResponse> {
        self.retry(what, true, |mut kv| {
            let (key, opts) = (key.clone(), opts.clone());
            async move { kv.get(key, opts).await }
        })
        .await
    }

    /// Runs `call` until it succeeds, fails for good, or has failed twice
    /// per member. A failure is retried when no member received the
    /// request, or, for an `idempotent` call, on any I/O error (a dead or
    /// unreachable member): the client then moves on to a live member.
    async fn retry<T, F, Fut>(&self, what: &str, idempotent: bool, mut call: F) -> Result<T>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        let tries = 2 * self.inner.config.endpoints.len() as u64 + 1;
        let mut attempt = 0u64;
        loop {
            let failed = match call(self.kv()).await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let again = error::never_sent(&failed);
            let e = from_etcd(failed, what);
            attempt += 1;
            if attempt >= tries || !(again || (idempotent && e.kind() == sop_core::ErrorKind::Io)) {
                return Err(e);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50 * attempt)).await;
        }
    }

    async fn check_format(&self) -> Result<()> {
        let key = self.keys().format();
        let txn = Txn::new()
            .when([Compare::version(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), [FORMAT_VERSION], None)])
            .or_else([TxnOp::get(key, None)]);
        let resp = self.read_txn(txn, "checking the registry format").await?;
        if resp.succeeded() {
            return Ok(());
        }
        let found = gets(&resp).into_iter().next().flatten();
        match found.as_ref().map(KeyValue::value) {
            Some([v]) if *v == FORMAT_VERSION => Ok(()),
            Some([v]) => Err(Error::UnsupportedVersion { what: "etcd registry", version: *v }),
            _ => Err(Error::corruption("etcd registry", "the format key holds no version byte")),
        }
    }

    /// The values of `keys` (each `None` when absent), all read at one
    /// revision (`revision`, or with 0 the current one), which is returned:
    /// a consistent snapshot however many transactions of at most
    /// `max_txn_ops` gets it takes.
    async fn get_many(&self, keys: Vec<Vec<u8>>, revision: i64) -> Result<(Vec<Option<KeyValue>>, i64)> {
        let mut out = Vec::with_capacity(keys.len());
        let mut revision = revision;
        for chunk in keys.chunks(self.inner.config.max_txn_ops) {
            let opts = (revision != 0).then(|| GetOptions::new().with_revision(revision));
            let ops: Vec<TxnOp> = chunk.iter().map(|k| TxnOp::get(k.clone(), opts.clone())).collect();
            let resp = self.read_txn(Txn::new().and_then(ops), "reading keys").await?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            let got = gets(&resp);
            if got.len() != chunk.len() {
                return Err(Error::corruption("etcd response", "a read lost some of its answers"));
            }
            out.extend(got);
        }
        Ok((out, revision))
    }

    /// Every key-value under `prefix`, page by page, all at one revision.
    async fn list(&self, prefix: Vec<u8>, what: &str) -> Result<Vec<KeyValue>> {
        let end = prefix_end(&prefix);
        let (mut from, mut revision, mut out) = (prefix, 0, Vec::new());
        loop {
            let opts = GetOptions::new().with_range(end.clone()).with_limit(PAGE).with_revision(revision);
            let mut resp = self.get(from.clone(), Some(opts), what).await?;
            if revision == 0 {
                revision = resp.header().map_or(0, |h| h.revision());
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else { return Ok(out) };
            from = [last.key(), &[0]].concat();
            out.extend(kvs);
            if !more {
                return Ok(out);
            }
        }
    }

    async fn get_one(&self, key: Vec<u8>, what: &str) -> Result<Option<KeyValue>> {
        let mut resp = self.get(key, None, what).await?;
        Ok(resp.take_kvs().into_iter().next())
    }

    /// Removes store `name` (only while its root is `root`, if given), in
    /// one transaction that compares the record read; `None` when absent
    /// or refused. A lost reply is resolved by reading the store back: the
    /// removal compares the record's create revision, so sending it again
    /// is safe, and a record gone after a send that may have applied is
    /// reported removed (`Some`: gone, by this removal or a concurrent
    /// one).
    async fn remove_store_where(&self, name: &str, root: Option<LogicalId>) -> Result<Option<StoreInfo>> {
        let mut sent: Option<StoreInfo> = None;
        let mut lost = 0;
        loop {
            let Some((info, created)) = self.store_at(name).await? else { return Ok(sent) };
            if root.is_some_and(|r| r != info.root) || sent.as_ref().is_some_and(|s| s.root != info.root) {
                // Another store under the name: ours, if sent, is gone.
                return Ok(sent);
            }
            let k = self.keys();
            let txn = Txn::new()
                .when([Compare::create_revision(k.store(name), CompareOp::Equal, created)])
                .and_then([
                    TxnOp::delete(k.store(name), None),
                    TxnOp::delete(k.counts(name), Some(DeleteOptions::new().with_prefix())),
                ]);
            match self.txn(txn, "removing a store").await {
                Ok(resp) if resp.succeeded() => return Ok(Some(info)),
                Ok(_) => {} // changed since read: read again
                Err(e) if maybe_applied(&e) && lost < 3 => {
                    lost += 1;
                    sent = Some(info);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The store `name` with its summed count, and its key's create
    /// revision (which a removal compares).
    async fn store_at(&self, name: &str) -> Result<Option<(StoreInfo, i64)>> {
        let k = self.keys();
        let txn = Txn::new().and_then([
            TxnOp::get(k.store(name), None),
            TxnOp::get(k.counts(name), Some(GetOptions::new().with_prefix())),
        ]);
        let resp = self.read_txn(txn, "reading a store").await?;
        let mut ranges = ranges(&resp).into_iter();
        let (Some(info), Some(shards)) = (ranges.next(), ranges.next()) else {
            return Err(Error::corruption("etcd response", "a store read lost its answers"));
        };
        let Some(info) = info.into_iter().next() else { return Ok(None) };
        let mut store = StoreInfo::decode(info.value())?;
        store.count = u64::try_from(sum_counts(&shards)?).unwrap_or(0);
        Ok(Some((store, info.create_revision())))
    }
}

/// Whether a failed request may have been applied: its reply was lost
/// (`Io`) or not awaited to its end (`Timeout`).
fn maybe_applied(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Io | ErrorKind::Timeout)
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

/// The key-values of each get in a transaction's response, in order.
fn ranges(resp: &etcd_client::TxnResponse) -> Vec<Vec<KeyValue>> {
    resp.op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(mut g) => Some(g.take_kvs()),
            _ => None,
        })
        .collect()
}

/// The first key-value of each get in a transaction's response.
fn gets(resp: &etcd_client::TxnResponse) -> Vec<Option<KeyValue>> {
    ranges(resp).into_iter().map(|kvs| kvs.into_iter().next()).collect()
}

/// One counter shard's value.
fn decode_count(kv: &KeyValue) -> Result<i64> {
    let raw: [u8; 8] = kv
        .value()
        .try_into()
        .map_err(|_| Error::corruption("store count", format!("{} bytes", kv.value().len())))?;
    Ok(i64::from_le_bytes(raw))
}

fn sum_counts(shards: &[KeyValue]) -> Result<i64> {
    shards.iter().try_fold(0i64, |sum, kv| Ok(sum.saturating_add(decode_count(kv)?)))
}

/// A handle record, checked against its key's id and etcd's version of
/// the key (which every publish keeps equal to the handle's version).
pub(super) fn decode_handle(id: LogicalId, kv: &KeyValue) -> Result<Handle> {
    let h = Handle::decode(kv.value())?;
    if h.logical_id != id {
        return Err(Error::corruption("handle", format!("stored under {id} but names {}", h.logical_id)));
    }
    if i64::try_from(h.version).ok() != Some(kv.version()) {
        return Err(Error::corruption(
            "handle",
            format!("{id} says version {} but etcd's key is at version {}", h.version, kv.version()),
        ));
    }
    Ok(h)
}

#[async_trait]
impl Registry for EtcdRegistry {
    async fn get_handles(&self, ids: &[LogicalId]) -> Result<Vec<Option<Handle>>> {
        let keys = ids.iter().map(|id| self.keys().handle(*id)).collect();
        let (found, _) = self.get_many(keys, 0).await?;
        ids.iter().zip(found).map(|(id, kv)| kv.map(|kv| decode_handle(*id, &kv)).transpose()).collect()
    }

    async fn publish(&self, request: &PublishRequest) -> Result<()> {
        publish::publish(self, request).await
    }

    fn publish_limit(&self, request: &PublishRequest) -> Result<()> {
        publish::limit(self, request)
    }

    async fn create_store(&self, info: &StoreInfo, root: &Handle) -> Result<()> {
        if root.version != 1 {
            return Err(Error::invalid(
                "root handle",
                format!("a new store's root is at version 1, not {}", root.version),
            ));
        }
        let k = self.keys();
        let (skey, hkey) = (k.store(&info.name), k.handle(root.logical_id));
        let count = i64::try_from(info.count).unwrap_or(i64::MAX);
        let txn = Txn::new()
            .when([
                Compare::version(skey.clone(), CompareOp::Equal, 0),
                Compare::version(hkey.clone(), CompareOp::Equal, 0),
            ])
            .and_then([
                TxnOp::put(skey.clone(), StoreInfo { count: 0, ..info.clone() }.encode(), None),
                TxnOp::put(k.count(&info.name, 0), count.to_le_bytes(), None),
                TxnOp::put(hkey, root.encode(), None),
            ])
            .or_else([TxnOp::get(skey, None)]);
        // A lost reply: sent again, and a store found with this root (a
        // fresh logical id) is the one the first send created.
        // (A store another process removed whole between the two sends
        // would be created again: a window of one retry, left open.)
        let mut lost = 0;
        let resp = loop {
            match self.txn(txn.clone(), "creating a store").await {
                Ok(resp) => break resp,
                Err(e) if maybe_applied(&e) && lost < 3 => lost += 1,
                Err(e) => return Err(e),
            }
        };
        if resp.succeeded() {
            return Ok(());
        }
        match gets(&resp).into_iter().next().flatten() {
            Some(kv) if lost > 0 && StoreInfo::decode(kv.value())?.root == info.root => Ok(()),
            Some(_) => Err(Error::AlreadyExists(Subject::Store(info.name.clone()))),
            None => Err(Error::AlreadyExists(Subject::Node(root.logical_id))),
        }
    }

    async fn get_store(&self, name: &str) -> Result<Option<StoreInfo>> {
        Ok(self.store_at(name).await?.map(|(s, _)| s))
    }

    async fn list_stores(&self) -> Result<Vec<StoreInfo>> {
        let mut out = Vec::new();
        for kv in self.list(self.keys().stores(), "listing stores").await? {
            let name = StoreInfo::decode(kv.value())?.name;
            // Each count read apart: a store removed meanwhile is left out.
            if let Some(store) = self.get_store(&name).await? {
                out.push(store);
            }
        }
        Ok(out)
    }

    async fn remove_store(&self, name: &str) -> Result<StoreInfo> {
        self.remove_store_where(name, None)
            .await?
            .ok_or_else(|| Error::NotFound(Subject::Store(name.to_owned())))
    }

    async fn remove_store_if_root(&self, name: &str, root: LogicalId) -> Result<Option<StoreInfo>> {
        self.remove_store_where(name, Some(root)).await
    }

    async fn put_intent(&self, intent: &Intent) -> Result<()> {
        let (key, value) = (self.keys().intent(intent.tx_id), intent.encode());
        // Idempotent: putting the same record twice is putting it once.
        self.retry("writing an intent", true, |mut kv| {
            let (key, value) = (key.clone(), value.clone());
            async move { kv.put(key, value, None).await }
        })
        .await?;
        Ok(())
    }

    async fn get_intent(&self, tx_id: TxId) -> Result<Option<Intent>> {
        let kv = self.get_one(self.keys().intent(tx_id), "reading an intent").await?;
        kv.map(|kv| Intent::decode(kv.value())).transpose()
    }

    async fn list_intents(&self, created_before_ms: u64) -> Result<Vec<Intent>> {
        let all = self.list(self.keys().intents(), "listing intents").await?;
        Ok(all
            .iter()
            .filter_map(|kv| Intent::decode(kv.value()).ok())
            .filter(|i| i.created_at_ms < created_before_ms)
            .collect())
    }

    async fn damaged_intents(&self) -> Result<Vec<String>> {
        let all = self.list(self.keys().intents(), "listing intents").await?;
        Ok(all
            .iter()
            .filter_map(|kv| {
                let e = Intent::decode(kv.value()).err()?;
                let name = self
                    .keys()
                    .intent_id(kv.key())
                    .map_or_else(|| format!("{:?}", kv.key()), |t| t.to_string());
                Some(format!("intent {name}: {e}"))
            })
            .collect())
    }

    async fn remove_intent(&self, tx_id: TxId) -> Result<()> {
        let key = self.keys().intent(tx_id);
        self.retry("removing an intent", true, |mut kv| {
            let key = key.clone();
            async move { kv.delete(key, None).await }
        })
        .await?;
        Ok(())
    }

    async fn abort_intent(&self, tx_id: TxId) -> Result<Option<IntentState>> {
        let key = self.keys().intent(tx_id);
        loop {
            let Some(kv) = self.get_one(key.clone(), "reading an intent").await? else { return Ok(None) };
            let mut intent = Intent::decode(kv.value())?;
            if intent.state != IntentState::Pending {
                return Ok(Some(intent.state));
            }
            intent.state = IntentState::Aborted;
            let txn = Txn::new()
                .when([Compare::mod_revision(key.clone(), CompareOp::Equal, kv.mod_revision())])
                .and_then([TxnOp::put(key.clone(), intent.encode(), None)]);
            if self.txn(txn, "aborting an intent").await?.succeeded() {
                return Ok(Some(IntentState::Aborted));
            }
        }
    }

    async fn list_handles(&self) -> Result<Vec<Handle>> {
        let all = self.list(self.keys().handles(), "listing handles").await?;
        all.iter()
            .map(|kv| {
                let h = Handle::decode(kv.value())?;
                if kv.key() != self.keys().handle(h.logical_id).as_slice() {
                    return Err(Error::corruption(
                        "handle",
                        format!("{} stored under another id's key", h.logical_id),
                    ));
                }
                decode_handle(h.logical_id, kv)
            })
            .collect()
    }

    /// Compacts etcd's history up to now (on the whole cluster: etcd keeps
    /// one history for every prefix). Defragmenting the members, which
    /// blocks each while it runs, is left to the operator.
    async fn compact(&self) -> Result<()> {
        let resp = self
            .kv()
            .get(self.keys().format(), None)
            .await
            .map_err(|e| from_etcd(e, "reading the revision"))?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let opts = CompactionOptions::new().with_physical();
        match self.kv().compact(revision, Some(opts)).await {
            Ok(_) => Ok(()),
            // Already compacted at or past this revision: nothing to do.
            Err(etcd_client::Error::GRpcStatus(s)) if s.message().contains("compacted") => Ok(()),
            Err(e) => Err(from_etcd(e, "compacting")),
        }
    }
}
