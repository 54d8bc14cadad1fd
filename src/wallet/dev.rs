//! The built-in simulated wallet, for the demo and tests. A dev invoice carries a random payment
//! secret `s`; its preimage is HMAC-SHA256(dev secret, s). Anyone holding the dev secret (the
//! demo seller, a test seller in another process: `demo::mint::DevInvoiceMinter`) can mint
//! invoices this wallet can pay, and the wallet can prove each payment with a real preimage.
//! No money moves. It simulates a node in another process, so it keeps its own wall clock.

use super::{Paid, PayError, PayRequest, PaymentStatus, Wallet};
use crate::core::time::{Clock, SystemClock};
use crate::core::{Msat, PaymentHash, Preimage};
use crate::invoice;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// How many finished payments the dev wallet remembers for `lookup` (about 3 MiB). An older
/// one looks unknown, as a payment a node never saw; the ledger's claim on each hash, not the
/// wallet's memory, is what keeps a hash from being paid twice.
pub const REMEMBERED: usize = 20_000;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The system clock, for the tests below.
#[cfg(test)]
fn now_unix() -> u64 {
    SystemClock.now_unix()
}

/// The preimage of a dev-network invoice: HMAC-SHA256(dev secret, its payment secret).
pub(crate) fn derive_preimage(secret: &[u8], payment_secret: &[u8; 32]) -> [u8; 32] {
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail here.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(payment_secret);
    mac.finalize().into_bytes().into()
}

/// The simulated wallet: a balance, a fee, an optional delay, and a memory of what it paid.
pub struct DevWallet {
    secret: Vec<u8>,
    balance_msat: AtomicU64,
    fee: Msat,
    delay: Duration,
    /// What it paid, for `lookup`: the [`REMEMBERED`] most recent outcomes (a real node keeps
    /// them on disk; this one keeps its memory bounded however long it runs).
    payments: DashMap<PaymentHash, PaymentStatus>,
    /// `payments`' finished entries, oldest first: the first to be forgotten.
    finished: std::sync::Mutex<std::collections::VecDeque<PaymentHash>>,
    settled: AtomicU64,
    /// How many finished outcomes `payments` keeps ([`REMEMBERED`] unless told).
    remembered: usize,
    attempts: AtomicU64,
    /// With a state file, the wallet behaves like a node in another process: a payment is
    /// journaled when it leaves and settles on schedule even if the proxy dies meanwhile.
    journal: Option<std::sync::Mutex<std::fs::File>>,
    sent: DashMap<PaymentHash, Sent>,
    /// The simulated node's wall clock (invoice expiry); tests share theirs.
    clock: Arc<dyn Clock>,
    /// The state file: the simulated network every process using it shares.
    state_path: Option<std::path::PathBuf>,
}

/// A payment the simulated network has accepted, as journaled.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Sent {
    hash: String,
    preimage: String,
    amount_msat: u64,
    fee_msat: u64,
    settle_at_ms: u64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl DevWallet {
    /// A wallet on the dev network of `secret`, holding `balance`, charging `fee` per payment
    /// and taking `delay` to settle each one; in memory only until
    /// [`DevWallet::with_state_file`].
    pub fn new(secret: &str, balance: Msat, fee: Msat, delay: Duration) -> DevWallet {
        DevWallet {
            secret: secret.as_bytes().to_vec(),
            balance_msat: AtomicU64::new(balance.get()),
            fee,
            delay,
            payments: DashMap::new(),
            finished: Default::default(),
            settled: AtomicU64::new(0),
            remembered: REMEMBERED,
            attempts: AtomicU64::new(0),
            journal: None,
            sent: DashMap::new(),
            clock: Arc::new(SystemClock),
            state_path: None,
        }
    }

    /// The same wallet judging invoice expiry by `clock`.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> DevWallet {
        self.clock = clock;
        self
    }

    /// Remembers the `n` most recent finished payments for `lookup` instead of [`REMEMBERED`].
    pub fn remembering(mut self, n: usize) -> DevWallet {
        self.remembered = n;
        self
    }

    /// Keeps the simulated network's record of payments in `path` (JSON lines, fsynced), so
    /// payments outlive the proxy process and `lookup` answers after a restart.
    pub fn with_state_file(mut self, path: &std::path::Path) -> std::io::Result<DevWallet> {
        use std::io::BufRead;
        if let Ok(file) = std::fs::File::open(path) {
            for line in std::io::BufReader::new(file).lines() {
                let Ok(sent) = serde_json::from_str::<Sent>(&line?) else {
                    continue;
                };
                let Some(hash) = PaymentHash::from_hex(&sent.hash) else {
                    continue;
                };
                let _ = self.debit(Msat::new(sent.amount_msat.saturating_add(sent.fee_msat)));
                self.sent.insert(hash, sent);
            }
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        self.journal = Some(std::sync::Mutex::new(file));
        self.state_path = Some(path.to_path_buf());
        Ok(self)
    }

    fn journal(&self, hash: &PaymentHash, paid: &Paid, amount: Msat) -> Result<(), PayError> {
        use std::io::Write;
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let sent = Sent {
            hash: hash.to_hex(),
            preimage: paid.preimage.to_hex(),
            amount_msat: amount.get(),
            fee_msat: paid.fee.get(),
            settle_at_ms: now_ms().saturating_add(self.delay.as_millis() as u64),
        };
        let line =
            serde_json::to_string(&sent).map_err(|e| PayError::Unavailable(e.to_string()))? + "\n";
        let mut file = journal.lock().unwrap_or_else(|p| p.into_inner());
        file.write_all(line.as_bytes())
            .and_then(|_| file.sync_data())
            .map_err(|e| PayError::Unavailable(format!("dev wallet journal: {e}")))?;
        self.sent.insert(*hash, sent);
        Ok(())
    }

    /// A payment the simulated network accepted: known here, or journaled in the state file by
    /// another process sharing it.
    fn journaled(&self, hash: &PaymentHash) -> Option<Sent> {
        if let Some(sent) = self.sent.get(hash) {
            return Some(sent.clone());
        }
        let text = std::fs::read_to_string(self.state_path.as_ref()?).ok()?;
        let wanted = hash.to_hex();
        let sent = text
            .lines()
            .filter_map(|l| serde_json::from_str::<Sent>(l).ok())
            .find(|s| s.hash == wanted)?;
        self.sent.insert(*hash, sent.clone());
        Some(sent)
    }

    /// Payments that settled, for tests and the demo.
    pub fn settled_count(&self) -> usize {
        usize::try_from(self.settled.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    }

    /// Records a finished payment's outcome, forgetting the oldest beyond [`REMEMBERED`].
    fn remember(&self, hash: PaymentHash, status: PaymentStatus) {
        if matches!(status, PaymentStatus::Succeeded(_)) {
            self.settled.fetch_add(1, Ordering::Relaxed);
        }
        self.payments.insert(hash, status);
        let forget = {
            let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
            finished.push_back(hash);
            if finished.len() > self.remembered {
                finished.pop_front()
            } else {
                None
            }
        };
        if let Some(old) = forget {
            self.payments.remove(&old);
        }
    }

    /// Every call to `pay`, settled or not.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// What it can still spend: the starting balance less every payment's amount and fee.
    pub fn balance(&self) -> Msat {
        Msat::new(self.balance_msat.load(Ordering::Relaxed))
    }

    fn debit(&self, amount: Msat) -> Result<(), PayError> {
        self.balance_msat
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |b| {
                b.checked_sub(amount.get())
            })
            .map(|_| ())
            .map_err(|_| PayError::InsufficientBalance)
    }

    fn settle(&self, request: &PayRequest) -> Result<Paid, PayError> {
        let decoded =
            invoice::decode(&request.bolt11).map_err(|e| PayError::Rejected(e.to_string()))?;
        if decoded.payment_hash != request.payment_hash {
            return Err(PayError::Rejected(
                "payment hash does not match the invoice".into(),
            ));
        }
        if decoded.is_expired_at(self.clock.now_unix()) {
            return Err(PayError::InvoiceExpired);
        }
        let amount = decoded
            .amount
            .ok_or_else(|| PayError::Rejected("amountless invoice".into()))?;
        let secret = decoded
            .payment_secret
            .ok_or_else(|| PayError::NoRoute("not a dev-network invoice".into()))?;
        let preimage = Preimage::verify(
            derive_preimage(&self.secret, &secret),
            &request.payment_hash,
        )
        .map_err(|_| PayError::NoRoute("unknown payee: not minted on this dev network".into()))?;
        if self.fee > request.max_fee {
            return Err(PayError::FeeTooHigh);
        }
        self.debit(amount.saturating_add(self.fee))?;
        Ok(Paid {
            preimage,
            fee: self.fee,
        })
    }
}

#[async_trait::async_trait]
impl Wallet for DevWallet {
    fn backend(&self) -> &'static str {
        "dev"
    }

    async fn balance(&self) -> Result<Msat, PayError> {
        Ok(DevWallet::balance(self))
    }

    async fn pay(&self, request: &PayRequest) -> Result<Paid, PayError> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        if self.journaled(&request.payment_hash).is_some() {
            return Err(PayError::AlreadyPaid);
        }
        // Claim the hash first: two concurrent pays of one invoice must not both settle.
        match self.payments.entry(request.payment_hash) {
            Entry::Occupied(_) => return Err(PayError::AlreadyPaid),
            Entry::Vacant(v) => {
                v.insert(PaymentStatus::InFlight);
            }
        }
        // Validated and debited, then journaled: from here the payment completes on its own.
        let outcome = self.settle(request).and_then(|paid| {
            self.journal(&request.payment_hash, &paid, request.amount)?;
            Ok(paid)
        });
        if outcome.is_ok() && !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let status = match &outcome {
            Ok(paid) => PaymentStatus::Succeeded(*paid),
            Err(e) => PaymentStatus::Failed(e.to_string()),
        };
        self.remember(request.payment_hash, status);
        outcome
    }

    async fn lookup(&self, hash: &PaymentHash) -> Result<PaymentStatus, PayError> {
        let known = self.payments.get(hash).map(|s| s.value().clone());
        if let Some(status) = known
            .as_ref()
            .filter(|s| !matches!(s, PaymentStatus::InFlight))
        {
            return Ok(status.clone());
        }
        // A journaled payment (perhaps sent by another process) settles on schedule.
        if let Some(sent) = self.journaled(hash) {
            if now_ms() < sent.settle_at_ms {
                return Ok(PaymentStatus::InFlight);
            }
            let preimage =
                Preimage::verify_hex(&sent.preimage, hash).map_err(|_| PayError::BadPreimage)?;
            return Ok(PaymentStatus::Succeeded(Paid {
                preimage,
                fee: Msat::new(sent.fee_msat),
            }));
        }
        Ok(known.unwrap_or(PaymentStatus::Unknown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::mint::{DevInvoiceMinter, MintedInvoice};
    use crate::invoice::Network;

    fn request(m: &MintedInvoice) -> PayRequest {
        PayRequest {
            bolt11: m.bolt11.clone(),
            payment_hash: m.payment_hash,
            amount: Msat::new(10_000),
            max_fee: Msat::new(1000),
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn pays_dev_invoices_once_with_a_real_preimage() {
        let minter = DevInvoiceMinter::new("s", Network::Regtest);
        let wallet = DevWallet::new("s", Msat::from_sats(100), Msat::new(5), Duration::ZERO);
        let inv = minter.mint(Msat::new(10_000), "test", 600).unwrap();
        let paid = wallet.pay(&request(&inv)).await.unwrap();
        assert!(Preimage::verify(*paid.preimage.as_bytes(), &inv.payment_hash).is_ok());
        assert_eq!(wallet.balance(), Msat::new(100_000 - 10_005));
        assert_eq!(
            wallet.pay(&request(&inv)).await.unwrap_err(),
            PayError::AlreadyPaid
        );
        assert_eq!(wallet.settled_count(), 1);
        assert!(matches!(
            wallet.lookup(&inv.payment_hash).await.unwrap(),
            PaymentStatus::Succeeded(_)
        ));
    }

    #[tokio::test]
    async fn remembers_only_the_most_recent_payments() {
        let minter = DevInvoiceMinter::new("s", Network::Regtest);
        let wallet =
            DevWallet::new("s", Msat::from_sats(1000), Msat::new(0), Duration::ZERO).remembering(3);
        let invoices: Vec<_> = (0..5)
            .map(|n| {
                minter
                    .mint(Msat::new(10_000), &format!("svc{n}"), 600)
                    .unwrap()
            })
            .collect();
        for inv in &invoices {
            wallet.pay(&request(inv)).await.unwrap();
        }
        assert_eq!(wallet.settled_count(), 5, "every payment counted");
        assert_eq!(wallet.payments.len(), 3, "memory bounded");
        for (n, inv) in invoices.iter().enumerate() {
            let status = wallet.lookup(&inv.payment_hash).await.unwrap();
            if n < 2 {
                assert_eq!(status, PaymentStatus::Unknown, "payment {n} forgotten");
            } else {
                assert!(matches!(status, PaymentStatus::Succeeded(_)), "payment {n}");
            }
        }
    }

    #[tokio::test]
    async fn refuses_foreign_expired_and_unaffordable_invoices() {
        let wallet = DevWallet::new("s", Msat::from_sats(5), Msat::new(0), Duration::ZERO);
        let foreign = DevInvoiceMinter::new("other", Network::Regtest)
            .mint(Msat::new(1000), "x", 600)
            .unwrap();
        assert!(matches!(
            wallet.pay(&request(&foreign)).await,
            Err(PayError::NoRoute(_))
        ));
        let minter = DevInvoiceMinter::new("s", Network::Regtest);
        let old = minter
            .mint_at(
                Msat::new(1000),
                "x",
                now_unix() - 1000,
                10,
                Network::Regtest,
            )
            .unwrap();
        assert_eq!(
            wallet.pay(&request(&old)).await.unwrap_err(),
            PayError::InvoiceExpired
        );
        let big = minter.mint(Msat::from_sats(6), "x", 600).unwrap();
        assert_eq!(
            wallet.pay(&request(&big)).await.unwrap_err(),
            PayError::InsufficientBalance
        );
        assert_eq!(wallet.balance(), Msat::from_sats(5));
        assert_eq!(
            wallet.lookup(&PaymentHash([9; 32])).await.unwrap(),
            PaymentStatus::Unknown
        );
    }

    #[tokio::test]
    async fn a_journaled_payment_settles_on_schedule_after_a_restart() {
        let path = std::env::temp_dir().join(format!("dev-wallet-{}.jsonl", rand::random::<u64>()));
        let minter = DevInvoiceMinter::new("s", Network::Regtest);
        let inv = minter.mint(Msat::new(10_000), "x", 600).unwrap();
        let open = || {
            DevWallet::new(
                "s",
                Msat::from_sats(100),
                Msat::new(3),
                Duration::from_millis(300),
            )
            .with_state_file(&path)
            .unwrap()
        };
        {
            let wallet = open();
            // Abandoned mid-payment, as a proxy killed while waiting would be.
            let _ =
                tokio::time::timeout(Duration::from_millis(50), wallet.pay(&request(&inv))).await;
        }
        let wallet = open();
        assert_eq!(wallet.balance(), Msat::new(100_000 - 10_003));
        assert_eq!(
            wallet.lookup(&inv.payment_hash).await.unwrap(),
            PaymentStatus::InFlight
        );
        assert_eq!(
            wallet.pay(&request(&inv)).await.unwrap_err(),
            PayError::AlreadyPaid
        );
        tokio::time::sleep(Duration::from_millis(350)).await;
        match wallet.lookup(&inv.payment_hash).await.unwrap() {
            PaymentStatus::Succeeded(paid) => assert_eq!(paid.fee, Msat::new(3)),
            other => panic!("expected settled, got {other:?}"),
        }
        let _ = std::fs::remove_file(path);
    }
}
