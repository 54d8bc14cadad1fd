//! The LNbits backend against REAL LNbits 1.6.2 (PyPI), started by `tests/lnbits/start.sh`:
//!
//! - instance #1 runs on FakeWallet: payments between its wallets are internal, with real
//!   bolt11 invoices and real preimages;
//! - instance #2 is funded by a wallet on #1 (`LNbitsWallet` funding class), so paying an
//!   invoice of #1 from #2 takes LNbits' external path (funding source → preimage back).
//!
//! The seller gets its invoices from LNbits wallets; curl goes through the proxy, which pays
//! with the `lnbits` backend. The instances are `tests/common/lnbits.rs`'s (once per test binary,
//! killed at exit). `L402_SKIP_LNBITS=1` skips these tests (for machines without Python).

mod common;

use common::lnbits::{lnbits, Instance, TestWallet};
use common::{Harness, Options};
use l402_proxy::core::money::{Msat, PaymentHash};
use l402_proxy::demo::mint::{DevInvoiceMinter, MintedInvoice};
use l402_proxy::demo::seller::{InvoiceSource, SellerConfig};
use l402_proxy::invoice::Network;
use l402_proxy::wallet::lnbits::LnbitsWallet;
use l402_proxy::wallet::{PayError, PayRequest, PaymentStatus, Wallet};
use std::time::Duration;

const ALICE: (&str, &str) = ("alice", "alice-key");

/// A proxy paying from `payer` through the lnbits backend (admin key in an env var), and a
/// seller whose invoices come from `seller_at`'s seller wallet.
async fn harness(payer: &TestWallet, seller_at: &Instance) -> Harness {
    harness_paying(payer, seller_at, Options::default().pay_schemes).await
}

/// [`harness`], paying the dialects `pay_schemes` (YAML list).
async fn harness_paying(payer: &TestWallet, seller_at: &Instance, pay_schemes: String) -> Harness {
    let var = format!("L402_TEST_LNBITS_KEY_{}", rand::random::<u32>());
    // SAFETY (edition 2021: safe fn): a unique variable, set before the proxy reads it.
    std::env::set_var(&var, &payer.admin);
    let mut seller = SellerConfig::new(DevInvoiceMinter::new(common::SECRET, Network::Bitcoin));
    seller.invoices = InvoiceSource::Lnbits(Box::new(seller_at.seller_invoices()));
    seller.price = Msat::from_sats(21);
    seller.prices.insert("pricey".into(), Msat::from_sats(5000));
    Harness::with(Options {
        seller,
        wallet_yaml: Some(format!(
            "{{ backend: lnbits, network: bitcoin, lnbits: {{ url: '{}', admin_key_env: {var} }}, payment_timeout_secs: 30 }}",
            payer.url
        )),
        pay_schemes,
        ..Options::default()
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x402_lnbtc_invoices_from_lnbits_carry_the_request_binding_and_are_paid_once() {
    let Some(l) = lnbits(true) else { return };
    let payer = TestWallet::new(&l.first, 1_000).await;
    let h = harness_paying(&payer, &l.first, "[x402]".into()).await;
    let before = payer.balance_msat().await;
    // The seller's invoice is LNbits' own, its description hash LNbits' SHA-256 of the JCS
    // binding the seller sent as `unhashed_description`; the proxy rebuilt the same binding.
    let r = h
        .curl(
            Some(ALICE),
            &h.http_url("/x402/report?q=1"),
            &["-X", "POST", "--data-binary", "payload"],
        )
        .await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.paid());
    assert_eq!(r.header("x-l402-proxy-scheme"), Some("x402"));
    assert!(r.header("payment-response").is_some(), "{r:?}");
    assert_eq!(payer.balance_msat().await, before - 21_000);
    assert_eq!(h.seller.seller.paid_count(), 1);
    // The hostile seller's LNbits invoice commits to another request: nothing is paid.
    let lie = h.curl(Some(ALICE), &h.http_url("/x402lie/x"), &[]).await;
    assert_eq!(lie.status, 402, "{lie:?}");
    assert_eq!(lie.decline(), Some("offer-binding-mismatch"), "{lie:?}");
    assert_eq!(payer.balance_msat().await, before - 21_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_pays_real_lnbits_invoices_once_and_refuses_over_limit() {
    let Some(l) = lnbits(true) else { return };
    let payer = TestWallet::new(&l.first, 1_000).await;
    let h = harness(&payer, &l.first).await;
    let after = common::lnbits::assert_pays_once_then_reuses(&h, &payer).await;

    // 5000 sat is over alice's per_request_sats (1000): the real LNbits invoice is not paid.
    let pricey = h.curl(Some(ALICE), &h.http_url("/pricey/x"), &[]).await;
    assert_eq!(pricey.status, 402, "{pricey:?}");
    assert_eq!(
        pricey.decline(),
        Some("over-per-request-limit"),
        "{pricey:?}"
    );
    assert_eq!(payer.balance_msat().await, after);
    assert_eq!(h.seller.seller.paid_count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_pays_through_a_second_lnbits_funding_source() {
    let Some(l) = lnbits(true) else { return };
    // The payer lives on #2; the seller's invoices are #1's: #2 pays them through its funding
    // source (a wallet on #1), the path a real node backend takes.
    let payer = TestWallet::new(l.second(), 1_000).await;
    let h = harness(&payer, &l.first).await;
    let before = payer.balance_msat().await;
    let r = h.curl(Some(ALICE), &h.http_url("/news/latest"), &[]).await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.paid());
    let fee: u64 = r
        .header("x-l402-proxy-fee-msat")
        .unwrap_or("0")
        .parse()
        .unwrap();
    assert_eq!(payer.balance_msat().await, before - 21_000 - fee);
    let again = h.curl(Some(ALICE), &h.http_url("/news/older"), &[]).await;
    assert_eq!(again.status, 200);
    assert!(!again.paid());
    assert_eq!(payer.balance_msat().await, before - 21_000 - fee);
}

fn pay_request(inv: &MintedInvoice, sats: u64) -> PayRequest {
    PayRequest {
        bolt11: inv.bolt11.clone(),
        payment_hash: inv.payment_hash,
        amount: Msat::from_sats(sats),
        max_fee: Msat::from_sats(10),
        timeout: Duration::from_secs(20),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lnbits_backend_errors_against_the_real_instance() {
    let Some(l) = lnbits(true) else { return };
    let seller = l.first.seller_invoices();
    let invoice = |sats: u64| {
        let seller = seller.clone();
        async move {
            seller
                .create(Msat::from_sats(sats), "errors", 600)
                .await
                .unwrap()
        }
    };

    // A fresh wallet holds nothing.
    let empty = TestWallet::new(&l.first, 0).await.backend();
    let inv = invoice(5).await;
    assert_eq!(
        empty.pay(&pay_request(&inv, 5)).await.unwrap_err(),
        PayError::InsufficientBalance
    );
    assert_eq!(
        empty.lookup(&inv.payment_hash).await.unwrap(),
        PaymentStatus::Unknown
    );

    // Paying twice: the second is AlreadyPaid, and lookup recovers the first's preimage.
    let funded = TestWallet::new(&l.first, 100).await.backend();
    let inv = invoice(7).await;
    let paid = funded.pay(&pay_request(&inv, 7)).await.unwrap();
    assert_eq!(
        funded.pay(&pay_request(&inv, 7)).await.unwrap_err(),
        PayError::AlreadyPaid
    );
    assert_eq!(
        funded.lookup(&inv.payment_hash).await.unwrap(),
        PaymentStatus::Succeeded(paid)
    );
    // The seller's own record of that hash is incoming, not a payment of `empty`'s wallet.
    assert_eq!(
        empty.lookup(&inv.payment_hash).await.unwrap(),
        PaymentStatus::Unknown
    );

    // Garbage is refused by LNbits' decoder.
    let garbage = MintedInvoice {
        bolt11: "lnbc1garbage".into(),
        payment_hash: PaymentHash([1; 32]),
    };
    assert!(matches!(
        funded.pay(&pay_request(&garbage, 1)).await,
        Err(PayError::Rejected(_))
    ));

    // FakeWallet can only pay invoices of its own instance: a validly signed mainnet invoice
    // from elsewhere has no route.
    let elsewhere = DevInvoiceMinter::new("elsewhere", Network::Bitcoin)
        .mint(Msat::from_sats(3), "x", 600)
        .unwrap();
    match funded.pay(&pay_request(&elsewhere, 3)).await {
        Err(PayError::NoRoute(why)) => assert!(why.contains("internal"), "{why}"),
        other => panic!("{other:?}"),
    }

    // On #2 the external path says "Payment already paid." with status success.
    let on_two = TestWallet::new(l.second(), 100).await.backend();
    let inv = invoice(9).await;
    let paid = on_two.pay(&pay_request(&inv, 9)).await.unwrap();
    assert_eq!(
        on_two.pay(&pay_request(&inv, 9)).await.unwrap_err(),
        PayError::AlreadyPaid
    );
    assert_eq!(
        on_two.lookup(&inv.payment_hash).await.unwrap(),
        PaymentStatus::Succeeded(paid)
    );

    // A wrong key and a closed port are reported as such.
    let wrong = LnbitsWallet::new(l.first.url(), "0000000000000000000000000000000f").unwrap();
    match wrong.pay(&pay_request(&invoice(1).await, 1)).await {
        Err(PayError::Rejected(why)) => assert!(why.contains("key"), "{why}"),
        other => panic!("{other:?}"),
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let nowhere = LnbitsWallet::new(&format!("http://127.0.0.1:{port}"), "k").unwrap();
    match nowhere.pay(&pay_request(&invoice(1).await, 1)).await {
        Err(e @ PayError::Unavailable(_)) => assert!(e.to_string().contains("connect"), "{e}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lnbits_balance_is_what_lnbits_reports_and_drops_by_amount_and_fee() {
    let Some(l) = lnbits(true) else { return };
    let seller = l.first.seller_invoices();
    // Internal (#1) and through the funding source (#2).
    for at in [&l.first, l.second()] {
        let wallet = TestWallet::new(at, 100).await;
        let backend = wallet.backend();
        let before = backend.balance().await.unwrap();
        assert_eq!(before, Msat::new(wallet.balance_msat().await));
        assert_eq!(before, Msat::from_sats(100), "the float it was funded with");
        let inv = seller
            .create(Msat::from_sats(7), "balance", 600)
            .await
            .unwrap();
        let paid = backend.pay(&pay_request(&inv, 7)).await.unwrap();
        let after = backend.balance().await.unwrap();
        assert_eq!(
            after,
            Msat::new(before.get() - 7_000 - paid.fee.get()),
            "fee {}",
            paid.fee
        );
        assert_eq!(after, Msat::new(wallet.balance_msat().await));
    }
    // A fresh wallet holds nothing.
    let empty = TestWallet::new(&l.first, 0).await.backend();
    assert_eq!(empty.balance().await.unwrap(), Msat::ZERO);

    // A wrong key and a closed port: Unavailable, saying which.
    let wrong = LnbitsWallet::new(l.first.url(), "0000000000000000000000000000000f").unwrap();
    match wrong.balance().await {
        Err(PayError::Unavailable(why)) => assert!(why.contains("key"), "{why}"),
        other => panic!("{other:?}"),
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let nowhere = LnbitsWallet::new(&format!("http://127.0.0.1:{port}"), "k").unwrap();
    match nowhere.balance().await {
        Err(PayError::Unavailable(why)) => assert!(why.contains("connect"), "{why}"),
        other => panic!("{other:?}"),
    }
}
