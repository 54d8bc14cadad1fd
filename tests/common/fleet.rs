//! Proxies for the money tests that need one or several replicas: one proxy, or (on
//! PostgreSQL) several sharing the ledger, the seller and the wallet, with the admin API.

use super::store::{backing, Backing, Store};
use super::{Harness, Options, Reply};
use l402_proxy::ledger::{PaymentFilter, PaymentState};
use serde_json::Value;

/// The admin token of every replica.
pub const TOKEN: &str = "fleet-admin-token";

/// One proxy, or two replicas on one PostgreSQL ledger, with one seller and one wallet.
pub struct Fleet {
    /// The replicas (one on SQLite).
    pub replicas: Vec<Harness>,
    _store: Backing,
}

impl std::ops::Deref for Fleet {
    type Target = Harness;
    fn deref(&self) -> &Harness {
        &self.replicas[0]
    }
}

/// Starts `replicas` proxies (more than one only on PostgreSQL) sharing the store, the seller
/// and the wallet; `opts` is each one's configuration.
pub async fn fleet(store: Store, replicas: usize, opts: impl Fn() -> Options) -> Fleet {
    let backing = backing(store);
    let first = Harness::with(Options {
        store_yaml: backing.yaml.clone(),
        admin_token: Some(TOKEN.into()),
        ..opts()
    })
    .await;
    let mut all = vec![first];
    for _ in 1..replicas {
        let next = Harness::with(Options {
            store_yaml: backing.yaml.clone(),
            admin_token: Some(TOKEN.into()),
            reuse_seller: Some(all[0].seller.clone()),
            wallet: Some(all[0].wallet.clone()),
            ..opts()
        })
        .await;
        all.push(next);
    }
    Fleet {
        replicas: all,
        _store: backing,
    }
}

impl Fleet {
    /// Calls the first replica's admin API: the status and the body as JSON.
    pub async fn api(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut extra = vec!["-H", "content-type: application/json"];
        let body = body.map(|b| b.to_string());
        if let Some(b) = &body {
            extra.push("-d");
            extra.push(b);
        }
        let r = self.admin(Some(TOKEN), method, path, &extra).await;
        let v = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        (r.status, v)
    }

    /// Sends `n` paid requests at once, the `i`th as `who(i)` to `url(replica, i)` through
    /// replica `i` modulo their number; the outcomes in order (`paid`, or the decline code).
    pub async fn at_once(
        &self,
        n: usize,
        who: impl Fn(usize) -> (&'static str, &'static str),
        url: impl Fn(&Harness, usize) -> String,
    ) -> Vec<String> {
        let tasks: Vec<_> = (0..n)
            .map(|i| {
                let r = &self.replicas[i % self.replicas.len()];
                let (proxy, who, url) = (r.proxy, who(i), url(r, i));
                tokio::spawn(async move {
                    super::proxied(proxy, who, http::Method::GET, &url, bytes::Bytes::new()).await
                })
            })
            .collect();
        let mut out = Vec::with_capacity(n);
        for t in tasks {
            let reply = t.await.expect("a request task");
            out.push(match reply.status {
                200 if reply.paid() => "paid".to_string(),
                _ => reply.decline().unwrap_or("?").to_string(),
            });
        }
        out
    }

    /// The ledger's payments of `agent` in `state`.
    pub async fn rows(&self, agent: &str, state: PaymentState) -> usize {
        self.shared
            .ledger
            .payments(PaymentFilter {
                agent: Some(agent.into()),
                state: Some(state),
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap()
            .len()
    }
}

/// `reply` was refused with `code`, nothing paid for it.
#[track_caller]
pub fn declined(reply: &Reply, code: &str) {
    assert_eq!(reply.status, 402, "{reply:?}");
    assert_eq!(reply.decline(), Some(code), "{reply:?}");
}

/// How many replicas a store runs: two sharing PostgreSQL, one on SQLite (it is one process's).
pub fn replicas_for(store: Store) -> usize {
    match store {
        Store::Postgres => 2,
        Store::Sqlite => 1,
    }
}
