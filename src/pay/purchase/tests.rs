use super::*;
use crate::agents::{hash_key, Agents};
use crate::config::{AgentConfig, HostRules};
use crate::core::time::ManualClock;
use crate::demo::macaroon::{encode_v2, identifier_v0, mint};
use crate::demo::mint::DevInvoiceMinter;
use crate::ledger::sqlite::SqliteLedger;
use crate::metrics::Metrics;
use crate::pay::book::BookParts;
use crate::pay::dialect::ResponseHead;
use crate::wallet::dev::DevWallet;
use crate::wallet::scripted::{Script, ScriptedWallet};
use crate::wallet::Wallet;
use base64::Engine as _;
use http::{HeaderMap, HeaderValue, StatusCode};

const SECRET: &str = "purchase-test";

struct Fixture {
    purchases: Arc<Purchases>,
    agent: Arc<Agent>,
    minter: DevInvoiceMinter,
    clock: Arc<ManualClock>,
    _scratch: crate::scratch::Scratch,
}

/// The request key of the tests' requests.
fn key() -> crate::pay::kept::RequestKey {
    crate::pay::kept::RequestKey::of(
        &http::Method::GET,
        &http::Uri::from_static("https://seller.test/x"),
        b"",
    )
}

async fn fixture(wallet: Arc<dyn Wallet>) -> Fixture {
    let clock = Arc::new(ManualClock::new(crate::core::time::SystemClock.now()));
    let scratch = crate::scratch::Scratch::new("purchase");
    let path = scratch.file("ledger.db");
    let ledger: Arc<dyn Ledger> =
        Arc::new(SqliteLedger::open(&path, clock.clone()).await.unwrap().0);
    let metrics = Arc::new(Metrics::new());
    let book = Arc::new(PaymentBook::new(BookParts {
        ledger: ledger.clone(),
        wallet,
        clock: clock.clone(),
        metrics: metrics.clone(),
        max_fee: Msat::new(0),
        timeout: Duration::from_secs(5),
    }));
    let configs = vec![AgentConfig {
        name: "a".into(),
        key_sha256: hash_key("k"),
        limits: Limits::default(),
        hosts: HostRules::default(),
    }];
    let agents = Agents::from_config(&configs);
    let directory = Arc::new(crate::agents::directory::Directory::new(
        configs,
        Vec::new(),
    ));
    let purchases = Arc::new(Purchases::new(PurchaseParts {
        book,
        ledger: ledger.clone(),
        tokens: Arc::new(TokenCache::new()),
        dialects: Arc::new(Dialects::default()),
        clock: clock.clone(),
        network: Network::Regtest,
        operator_limits: Limits::default(),
        shared_ledger: false,
        guardrails: Arc::new(crate::guardrails::Guardrails::new(
            ledger.clone(),
            clock.clone(),
            crate::alerts::Alerts::disabled(metrics),
            120,
            Default::default(),
        )),
        agents: directory,
    }));
    Fixture {
        purchases,
        agent: agents.get("a").unwrap().clone(),
        minter: DevInvoiceMinter::new(SECRET, Network::Regtest),
        clock,
        _scratch: scratch,
    }
}

const TO: Destination<'static> = Destination {
    origin: "https://seller:443",
    host: "seller",
    port: 443,
};

impl Fixture {
    /// A fresh L402 offer for `service`, its invoice minted on the dev network.
    fn offer(&self, service: &str) -> (Offer, PaymentHash) {
        let invoice = self
            .minter
            .mint_at(
                Msat::new(10_000),
                service,
                self.clock.now_unix(),
                600,
                Network::Regtest,
            )
            .unwrap();
        let id = identifier_v0(&invoice.payment_hash.0, &[7; 32]);
        let mac = mint(b"root", "lsat", &id, &[format!("services={service}:0")]);
        let token = base64::engine::general_purpose::STANDARD.encode(encode_v2(&mac));
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&format!(
                "L402 token=\"{token}\", invoice=\"{}\"",
                invoice.bolt11
            ))
            .unwrap(),
        );
        let offers = Dialects::default().offers(&ResponseHead {
            status: StatusCode::PAYMENT_REQUIRED,
            headers: &headers,
            request: None,
        });
        (
            offers.payable.into_iter().next().unwrap(),
            invoice.payment_hash,
        )
    }

    async fn obtain(&self, service: &str) -> Result<Obtained, Refused> {
        let (offer, _) = self.offer(service);
        self.purchases
            .obtain(
                &self.agent,
                TO,
                &format!("/{service}/x"),
                None,
                b"",
                key(),
                None,
                offer,
            )
            .await
    }
}

fn dev_wallet(delay: Duration) -> Arc<DevWallet> {
    Arc::new(DevWallet::new(
        SECRET,
        Msat::from_sats(1000),
        Msat::new(0),
        delay,
    ))
}

#[tokio::test]
async fn concurrent_requests_for_one_service_make_one_payment() {
    let wallet = dev_wallet(Duration::from_millis(100));
    let f = Arc::new(fixture(wallet.clone()).await);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let f = f.clone();
            tokio::spawn(async move { f.obtain("weather").await })
        })
        .collect();
    let mut paid = 0;
    for t in tasks {
        let o = t.await.unwrap().expect("every request gets the token");
        paid += usize::from(o.paid.is_some());
        assert!(o.credential.value.to_str().unwrap().starts_with("L402 "));
    }
    assert_eq!(paid, 1, "one leader paid, the others shared");
    assert_eq!(wallet.settled_count(), 1);
    // Another service on the same origin is its own purchase.
    assert!(f.obtain("stocks").await.unwrap().paid.is_some());
    assert_eq!(wallet.settled_count(), 2);
}

#[tokio::test]
async fn an_agent_hanging_up_does_not_cancel_its_payment() {
    let wallet = dev_wallet(Duration::from_millis(200));
    let f = Arc::new(fixture(wallet.clone()).await);
    let asking = {
        let f = f.clone();
        tokio::spawn(async move { f.obtain("weather").await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    asking.abort();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(wallet.settled_count(), 1, "the payment completed");
    let again = f.obtain("weather").await.unwrap();
    assert!(
        again.paid.is_none(),
        "its token was kept: nothing paid twice"
    );
    assert_eq!(wallet.settled_count(), 1);
}

#[tokio::test]
async fn a_panicking_payment_answers_its_followers_and_frees_the_slot() {
    let wallet = Arc::new(ScriptedWallet::default());
    let f = Arc::new(fixture(wallet.clone()).await);
    let (offer, hash) = f.offer("weather");
    wallet.script(hash, Script::Panic);
    let leader = {
        let f = f.clone();
        tokio::spawn(async move {
            f.purchases
                .obtain(&f.agent, TO, "/weather/x", None, b"", key(), None, offer)
                .await
        })
    };
    let followers: Vec<_> = (0..5)
        .map(|_| {
            let f = f.clone();
            let (offer, _) = f.offer("weather");
            tokio::spawn(async move {
                f.purchases
                    .obtain(&f.agent, TO, "/weather/x", None, b"", key(), None, offer)
                    .await
            })
        })
        .collect();
    let led = tokio::time::timeout(Duration::from_secs(5), leader)
        .await
        .expect("no hang")
        .unwrap();
    // The wallet's panic is caught with its call: the payment is unresolved, not lost.
    assert_eq!(led.unwrap_err().decline.code(), "wallet-unavailable");
    for t in followers {
        let r = tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("followers never hang")
            .unwrap();
        // A follower either rode on the aborted flight or led its own (unscripted) one.
        assert!(r.is_err());
    }
    assert!(f.purchases.flights.is_empty(), "no flight slot left behind");
}

#[tokio::test]
async fn a_refused_invoice_reports_its_amount_and_pays_nothing() {
    let wallet = dev_wallet(Duration::ZERO);
    let mut f = fixture(wallet.clone()).await;
    let agents = Agents::from_config(&[AgentConfig {
        name: "a".into(),
        key_sha256: hash_key("k"),
        limits: Limits {
            per_request_sats: Some(5.into()),
            ..Limits::default()
        },
        hosts: HostRules::default(),
    }]);
    f.agent = agents.get("a").unwrap().clone();
    let refused = f.obtain("weather").await.unwrap_err();
    assert_eq!(refused.decline.code(), "over-per-request-limit");
    assert_eq!(refused.amount, Some(Msat::new(10_000)));
    assert_eq!(wallet.settled_count(), 0);
}
