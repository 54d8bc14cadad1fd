//! A wallet that does what each test tells it, per payment hash: pay with a given proof, fail,
//! hang, or panic; and answer lookups and the balance as told. Counts every call.

use super::{Paid, PayError, PayRequest, PaymentStatus, Wallet};
use crate::core::{Msat, PaymentHash, Preimage};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// What `pay` does for one hash.
#[derive(Debug, Clone)]
pub enum Script {
    /// Settles with this proof and fee (after the delay).
    Pay(Preimage, Msat, Duration),
    /// Fails with this error.
    Fail(PayError),
    /// Never answers.
    Hang,
    /// Panics, as a buggy backend would.
    Panic,
}

/// See the module docs.
#[derive(Default)]
pub struct ScriptedWallet {
    scripts: Mutex<HashMap<PaymentHash, Script>>,
    lookups: Mutex<HashMap<PaymentHash, PaymentStatus>>,
    /// What `balance` says; unset, zero.
    balance: Mutex<Option<Result<Msat, PayError>>>,
    pays: AtomicUsize,
}

impl ScriptedWallet {
    /// What `pay` of `hash` will do.
    pub fn script(&self, hash: PaymentHash, script: Script) {
        self.scripts.lock().unwrap().insert(hash, script);
    }

    /// What `lookup` of `hash` will say (default: unknown).
    pub fn lookup_says(&self, hash: PaymentHash, status: PaymentStatus) {
        self.lookups.lock().unwrap().insert(hash, status);
    }

    /// What `balance` will report (default: zero).
    pub fn set_balance(&self, balance: Msat) {
        *self.balance.lock().unwrap() = Some(Ok(balance));
    }

    /// Makes `balance` fail with this error, as a node that is down or refuses the call.
    pub fn balance_fails(&self, error: PayError) {
        *self.balance.lock().unwrap() = Some(Err(error));
    }

    /// Calls to `pay` so far.
    pub fn pays(&self) -> usize {
        self.pays.load(Ordering::SeqCst)
    }
}

#[async_trait::async_trait]
impl Wallet for ScriptedWallet {
    fn backend(&self) -> &'static str {
        "scripted"
    }

    async fn pay(&self, request: &PayRequest) -> Result<Paid, PayError> {
        self.pays.fetch_add(1, Ordering::SeqCst);
        let script = self
            .scripts
            .lock()
            .unwrap()
            .get(&request.payment_hash)
            .cloned();
        match script {
            Some(Script::Pay(preimage, fee, delay)) => {
                tokio::time::sleep(delay).await;
                let paid = Paid { preimage, fee };
                self.lookup_says(request.payment_hash, PaymentStatus::Succeeded(paid));
                Ok(paid)
            }
            Some(Script::Fail(e)) => Err(e),
            Some(Script::Hang) => std::future::pending().await,
            Some(Script::Panic) => panic!("scripted wallet panics"),
            None => Err(PayError::NoRoute("unscripted".into())),
        }
    }

    async fn lookup(&self, hash: &PaymentHash) -> Result<PaymentStatus, PayError> {
        Ok(self
            .lookups
            .lock()
            .unwrap()
            .get(hash)
            .cloned()
            .unwrap_or(PaymentStatus::Unknown))
    }

    /// What `set_balance` / `balance_fails` scripted; zero when neither was called.
    async fn balance(&self) -> Result<Msat, PayError> {
        self.balance
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(Ok(Msat::ZERO))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn balance_is_zero_until_scripted() {
        let w = ScriptedWallet::default();
        assert_eq!(w.balance().await, Ok(Msat::ZERO));
        w.set_balance(Msat::new(42_000));
        assert_eq!(w.balance().await, Ok(Msat::new(42_000)));
        w.balance_fails(PayError::Unavailable("down".into()));
        assert_eq!(w.balance().await, Err(PayError::Unavailable("down".into())));
    }
}
