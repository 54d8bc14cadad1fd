//! The NWC (NIP-47) backend against real software on 127.0.0.1:
//!
//! - a Nostr relay: `nostr-relay-builder`'s `LocalRelay`, in this process (its own thread and
//!   runtime, so it outlives each test's runtime);
//! - a NIP-47 wallet service: the Alby SDK's `NWCWalletService` (npm `@getalby/sdk` 8.0.3) in
//!   `tests/nwc/bridge.cjs`, spending from LNbits wallets through LNbits' REST API;
//! - LNbits 1.6.2 from `tests/common/lnbits.rs` (FakeWallet): the seller's invoices come from its
//!   seller wallet, the payments from test wallets on the same instance.
//!
//! The bridge runs in its own process group, killed at exit (and by its watcher if this process
//! dies). `L402_SKIP_LNBITS=1` skips these tests, like the LNbits ones; CI runs them.

mod common;

use common::lnbits::{lnbits, Lnbits, TestWallet};
use common::{Harness, Options};
use l402_proxy::core::money::{Msat, PaymentHash};
use l402_proxy::demo::mint::{DevInvoiceMinter, MintedInvoice};
use l402_proxy::demo::seller::{InvoiceSource, SellerConfig};
use l402_proxy::invoice::Network;
use l402_proxy::wallet::nwc::NwcWallet;
use l402_proxy::wallet::{PayError, PayRequest, PaymentStatus, Wallet};
use nostr_relay_builder::builder::RateLimit;
use nostr_relay_builder::{LocalRelay, RelayBuilder};
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The wallets the bridge serves, one NWC connection each (index = position in `KEYS`).
const PAYER: usize = 0; // 1,000 sat: the proxy end to end
const DIRECT: usize = 1; // 100 sat: the backend called directly
const EMPTY: usize = 2; // nothing
const NO_INFO: usize = 3; // 100 sat, published without info event: NIP-04 only

struct Nwc {
    lnbits: &'static Lnbits,
    relay: String,
    wallets: Vec<TestWallet>,
    uris: Vec<String>,
    bridge_pgid: i32,
}

static NWC: OnceLock<Option<Nwc>> = OnceLock::new();

extern "C" fn stop_bridge() {
    if let Some(Some(n)) = NWC.get() {
        common::lnbits::kill_group(n.bridge_pgid);
    }
}

/// Starts the relay on a thread of its own and returns its ws:// URL.
fn start_relay() -> String {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let relay = LocalRelay::new(
                RelayBuilder::default()
                    .addr(std::net::Ipv4Addr::LOCALHOST.into())
                    .rate_limit(RateLimit {
                        max_reqs: 10_000,
                        notes_per_minute: 100_000,
                    }),
            );
            relay.run().await.expect("local relay");
            tx.send(relay.url().await.to_string()).unwrap();
            // Keep the relay (and this runtime) alive for the whole test binary.
            std::future::pending::<()>().await;
        });
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("relay did not start")
}

fn nwc() -> Option<&'static Nwc> {
    NWC.get_or_init(|| {
        let lnbits = lnbits(false)?;
        let started = Instant::now();
        let relay = start_relay();
        // On a thread of its own: this runs inside the first test's runtime.
        let wallets: Vec<TestWallet> = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                vec![
                    TestWallet::new(&lnbits.first, 1_000).await,
                    TestWallet::new(&lnbits.first, 100).await,
                    TestWallet::new(&lnbits.first, 0).await,
                    TestWallet::new(&lnbits.first, 100).await,
                ]
            })
        })
        .join()
        .expect("test wallets");
        let dir = common::temp_dir("nwc-bridge").keep(); // the bridge outlives every test
        let keys = wallets
            .iter()
            .map(|w| w.admin.as_str())
            .collect::<Vec<_>>()
            .join(",");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nwc/bridge.sh");
        let out = Command::new("bash")
            .arg(&script)
            .arg("start")
            .arg(&dir)
            .arg(&relay)
            .arg(lnbits.first.url())
            .arg(&keys)
            .env("BRIDGE_WATCH_PID", std::process::id().to_string())
            .env("BRIDGE_NO_INFO", NO_INFO.to_string())
            .output()
            .expect("bash must be installed");
        assert!(
            out.status.success(),
            "tests/nwc/bridge.sh start failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env: HashMap<String, String> = std::fs::read_to_string(dir.join("bridge.env"))
            .expect("bridge.env")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let uris = (0..wallets.len())
            .map(|i| env[&format!("NWC_URI_{i}")].clone())
            .collect();
        let bridge_pgid = env["BRIDGE_PGID"].parse().expect("pgid");
        eprintln!("relay + NWC bridge up in {:?}", started.elapsed());
        // SAFETY: registering a plain extern "C" fn; it only reads a OnceLock and kills.
        unsafe {
            libc::atexit(stop_bridge);
        }
        Some(Nwc {
            lnbits,
            relay,
            wallets,
            uris,
            bridge_pgid,
        })
    })
    .as_ref()
}

fn backend(uri: &str) -> NwcWallet {
    NwcWallet::new(uri, "wallet.nwc.uri_env", Duration::from_secs(60)).unwrap()
}

fn pay_request(inv: &MintedInvoice, sats: u64, timeout: Duration) -> PayRequest {
    PayRequest {
        bolt11: inv.bolt11.clone(),
        payment_hash: inv.payment_hash,
        amount: Msat::from_sats(sats),
        max_fee: Msat::from_sats(10),
        timeout,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_pays_through_nwc_once_and_reuses_the_token() {
    let Some(n) = nwc() else { return };
    let payer = &n.wallets[PAYER];
    let var = format!("L402_TEST_NWC_URI_{}", rand::random::<u32>());
    // SAFETY (edition 2021: safe fn): a unique variable, set before the proxy reads it.
    std::env::set_var(&var, &n.uris[PAYER]);
    let mut seller = SellerConfig::new(DevInvoiceMinter::new(common::SECRET, Network::Bitcoin));
    seller.invoices = InvoiceSource::Lnbits(Box::new(n.lnbits.first.seller_invoices()));
    seller.price = Msat::from_sats(21);
    let h = Harness::with(Options {
        seller,
        wallet_yaml: Some(format!(
            "{{ backend: nwc, network: bitcoin, nwc: {{ uri_env: {var} }}, payment_timeout_secs: 30 }}"
        )),
        ..Options::default()
    })
    .await;
    common::lnbits::assert_pays_once_then_reuses(&h, payer).await;
    assert_eq!(h.seller.seller.paid_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nwc_backend_pays_looks_up_and_maps_errors() {
    let Some(n) = nwc() else { return };
    let seller = n.lnbits.first.seller_invoices();
    let timeout = Duration::from_secs(20);

    // Paid: the preimage is verified; lookup by hash finds the same payment.
    let direct = backend(&n.uris[DIRECT]);
    let before = n.wallets[DIRECT].balance_msat().await;
    // get_balance: what LNbits reports for the wallet behind the connection, in msat.
    assert_eq!(direct.balance().await.unwrap(), Msat::new(before));
    assert_eq!(before, 100_000, "the float it was funded with");
    let inv = seller.create(Msat::from_sats(7), "nwc", 600).await.unwrap();
    let paid = direct.pay(&pay_request(&inv, 7, timeout)).await.unwrap();
    assert_eq!(
        n.wallets[DIRECT].balance_msat().await,
        before - 7_000 - paid.fee.get()
    );
    assert_eq!(
        direct.balance().await.unwrap(),
        Msat::new(before - 7_000 - paid.fee.get())
    );
    assert_eq!(
        direct.lookup(&inv.payment_hash).await.unwrap(),
        PaymentStatus::Succeeded(paid)
    );
    // The Alby service's info event lists "nip04 nip44_v2": the requests went NIP-44.
    assert_eq!(direct.negotiated_encryption(), Some("nip44_v2"));
    // Paying the same invoice again is refused by the wallet; no money moves.
    assert_eq!(
        direct
            .pay(&pay_request(&inv, 7, timeout))
            .await
            .unwrap_err(),
        PayError::AlreadyPaid
    );
    assert_eq!(
        n.wallets[DIRECT].balance_msat().await,
        before - 7_000 - paid.fee.get()
    );
    // A hash the wallet never paid.
    assert_eq!(
        direct.lookup(&PaymentHash([9; 32])).await.unwrap(),
        PaymentStatus::Unknown
    );

    // An empty wallet: a zero balance, and INSUFFICIENT_BALANCE.
    let empty = backend(&n.uris[EMPTY]);
    assert_eq!(empty.balance().await.unwrap(), Msat::ZERO);
    let inv = seller.create(Msat::from_sats(5), "nwc", 600).await.unwrap();
    let err = empty.pay(&pay_request(&inv, 5, timeout)).await.unwrap_err();
    assert_eq!(err, PayError::InsufficientBalance);
    assert_eq!(err.code(), "insufficient-balance");
    assert!(!err.may_be_in_flight());
    // The seller's own record of that hash is not a payment of the empty wallet.
    assert_eq!(
        empty.lookup(&inv.payment_hash).await.unwrap(),
        PaymentStatus::Unknown
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_without_info_event_is_spoken_to_in_nip04() {
    let Some(n) = nwc() else { return };
    let old = backend(&n.uris[NO_INFO]);
    let before = n.wallets[NO_INFO].balance_msat().await;
    let inv = n
        .lnbits
        .first
        .seller_invoices()
        .create(Msat::from_sats(4), "nwc", 600)
        .await
        .unwrap();
    let paid = old
        .pay(&pay_request(&inv, 4, Duration::from_secs(20)))
        .await
        .unwrap();
    assert_eq!(old.negotiated_encryption(), None, "no info event was read");
    assert_eq!(
        n.wallets[NO_INFO].balance_msat().await,
        before - 4_000 - paid.fee.get()
    );
    // get_balance over NIP-04 too.
    assert_eq!(
        old.balance().await.unwrap(),
        Msat::new(before - 4_000 - paid.fee.get())
    );
    assert_eq!(
        old.lookup(&inv.payment_hash).await.unwrap(),
        PaymentStatus::Succeeded(paid)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wallet_service_that_never_answers_is_a_timeout() {
    let Some(n) = nwc() else { return };
    // A connection to a pubkey nobody serves, on the live relay: the request is published and
    // no answer ever comes.
    let nobody = nwc::nostr::Keys::generate().public_key().to_hex();
    let secret = nwc::nostr::Keys::generate().secret_key().to_secret_hex();
    let uri = format!(
        "nostr+walletconnect://{nobody}?relay={}&secret={secret}",
        urlencode(&n.relay)
    );
    let silent = backend(&uri);
    let inv = n
        .lnbits
        .first
        .seller_invoices()
        .create(Msat::from_sats(3), "nwc", 600)
        .await
        .unwrap();
    let limit = Duration::from_secs(2);
    let started = Instant::now();
    let err = silent.pay(&pay_request(&inv, 3, limit)).await.unwrap_err();
    let took = started.elapsed();
    assert_eq!(err, PayError::Timeout(limit));
    assert!(err.may_be_in_flight());
    assert!(
        took >= limit && took < limit + Duration::from_secs(2),
        "{took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_balance_nobody_answers_is_unavailable_after_the_lookup_deadline() {
    let Some(n) = nwc() else { return };
    let nobody = nwc::nostr::Keys::generate().public_key().to_hex();
    let secret = nwc::nostr::Keys::generate().secret_key().to_secret_hex();
    let uri = format!(
        "nostr+walletconnect://{nobody}?relay={}&secret={secret}",
        urlencode(&n.relay)
    );
    let started = Instant::now();
    match backend(&uri).balance().await {
        Err(PayError::Unavailable(why)) => assert!(why.contains("get_balance"), "{why}"),
        other => panic!("{other:?}"),
    }
    let took = started.elapsed();
    // LOOKUP_TIMEOUT (15 s), the deadline lookups use.
    assert!(
        took >= Duration::from_secs(15) && took < Duration::from_secs(20),
        "{took:?}"
    );
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
