//! The demo L402 seller on its own, for bench/run.sh: the benchmark runs the proxy with
//! `l402-proxy run --config` against this process, so the proxy's CPU figures for the paid path
//! (cached token) and the pass-through path (`/free/…`) contain no seller work.
//!
//! Usage: `bench_seller CA_PEM_OUT` — writes the seller's CA (PEM) to CA_PEM_OUT, prints
//! `seller http=PORT https=PORT`, and serves on 127.0.0.1 until SIGTERM or Ctrl-C, then prints
//! its counters (`challenges`, `accepted`, `paid`).
//!
//! Its invoices are minted with the dev wallet's default secret on regtest, so a proxy with
//! `wallet: { backend: dev, network: regtest }` pays them.

use l402_proxy::config::default_dev_secret;
use l402_proxy::demo::mint::DevInvoiceMinter;
use l402_proxy::demo::seller::{self, Seller, SellerConfig};
use l402_proxy::invoice::Network;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let ca_out = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: bench_seller CA_PEM_OUT"))?;
    let minter = DevInvoiceMinter::new(&default_dev_secret(), Network::Regtest);
    let seller = Seller::new(SellerConfig::new(minter));
    let running = seller::start(seller.clone(), IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
    std::fs::write(&ca_out, &running.ca_pem)?;
    println!(
        "seller http={} https={}",
        running.http.port(),
        running.https.port()
    );
    std::io::stdout().flush()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    println!(
        "seller challenges={} accepted={} paid={}",
        seller.challenges(),
        seller.accepted(),
        seller.paid_count()
    );
    Ok(())
}
