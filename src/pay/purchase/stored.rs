//! Tokens bought by other processes, or before a restart: put back in the cache, found in the
//! ledger while another replica buys (the purchase lease), and delivered by reconciliation.

use super::{Job, Purchases, RETRY_UNRESOLVED_SECS};
use crate::core::Decline;
use crate::ledger::StoredToken;
use crate::pay::book::Resolved;
use crate::pay::tokens::Token;
use std::sync::Arc;
use std::time::Duration;

/// How often a waiting replica looks for the token another replica is buying.
const LEASE_POLL: Duration = Duration::from_millis(50);

impl Purchases {
    /// Caches a stored token (bought by another process, or before a restart).
    pub fn install(&self, stored: &StoredToken) -> Option<Arc<Token>> {
        let credential = self.dialects.restore(&stored.credential, &stored.proof)?;
        let token = Arc::new(Token::new(
            credential,
            stored.proof.hash(),
            stored.service.clone(),
            stored.expires_at,
            stored.scopes.clone(),
        ));
        self.tokens.insert(
            &Arc::from(stored.agent.as_str()),
            &stored.origin,
            token.clone(),
            self.clock.now_unix(),
        );
        Some(token)
    }

    /// Caches a stored token unless this process has it already (its own purchases are
    /// announced back to it too).
    pub fn install_if_new(&self, stored: &StoredToken) {
        if !self
            .tokens
            .contains(&stored.agent, &stored.origin, &stored.proof.hash())
        {
            let _ = self.install(stored);
        }
    }

    /// Fills the token cache from the ledger (at start).
    pub async fn restore_tokens(&self) -> Result<usize, crate::ledger::LedgerError> {
        let mut n = 0;
        for stored in self.ledger.live_tokens(self.clock.now_unix()).await? {
            if self.install(&stored).is_some() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// One reconciliation pass; tokens of payments that turn out settled are cached. Returns how
    /// many payments stay unresolved.
    pub async fn reconcile(&self) -> Result<usize, crate::ledger::LedgerError> {
        let (resolved, open) = self.book.reconcile().await?;
        for r in resolved {
            if let Resolved::Settled(row, paid) = r {
                let Some(credential) = row.credential.clone() else {
                    continue;
                };
                let stored = StoredToken {
                    agent: row.agent.clone(),
                    origin: row.origin.clone(),
                    credential,
                    proof: paid.preimage,
                    service: row.service.clone(),
                    scopes: vec![row.scope.clone()],
                    expires_at: row.token_expires_at,
                };
                if self.install(&stored).is_none() {
                    tracing::warn!(hash = %row.hash.short(), "settled, but its token is unusable");
                }
            }
        }
        Ok(open)
    }

    /// Waits, across processes, for the purchase lease of `key`. Returns a token another process
    /// bought meanwhile, or `None` once this process holds the lease and must buy.
    pub(super) async fn lease_or_token(&self, job: &Job) -> Result<Option<Arc<Token>>, Decline> {
        if !self.shared_ledger {
            return Ok(None);
        }
        let ttl = self.book.timeout() + Duration::from_secs(10);
        // A request waits for another buyer (or an unresolved payment of its purchase) as long
        // as it would wait for its own payment: the same on every store.
        let deadline = tokio::time::Instant::now() + self.book.timeout();
        loop {
            if let Some(token) = self.stored_token(job).await? {
                return Ok(Some(token));
            }
            if self.ledger.lease(&job.flight(), ttl).await? {
                // The holder before us may have stored its token just before letting go: look
                // once more now that nobody else can be buying.
                if let Some(token) = self.stored_token(job).await? {
                    let _ = self.ledger.release_lease(&job.flight()).await;
                    return Ok(Some(token));
                }
                return Ok(None);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Decline::PurchaseUnresolved {
                    retry_after_secs: RETRY_UNRESOLVED_SECS,
                });
            }
            tokio::time::sleep(LEASE_POLL).await;
        }
    }

    /// A token for the job's flight that any process stored, cached here.
    pub(super) async fn stored_token(&self, job: &Job) -> Result<Option<Arc<Token>>, Decline> {
        let stored = self
            .ledger
            .find_token(
                &job.agent.name,
                &job.origin,
                job.service.as_deref(),
                &job.scope,
                self.clock.now_unix(),
            )
            .await?;
        // Never the token this request carried: the server just answered it with a challenge
        // (its retirement in the ledger may not have landed yet).
        Ok(stored
            .filter(|s| Some(s.proof.hash()) != job.sent)
            .and_then(|s| self.install(&s)))
    }
}
