//! The atomic step before money moves: one transaction that reads an API agent as stored,
//! claims the payment hash, keeps one payment per purchase pending, and reserves amount + fee
//! reserve on the usage rows of every window, decided by the one money rule.

use super::super::{Begun, LedgerError, LimitSet, NewPayment};
use super::rows::{get, i, non_negative, u};
use super::{schema, unavailable, PostgresLedger, OPERATOR};
use crate::budget::rules::{self, Used};
use crate::config::Limits;
use crate::core::decline::Whose;
use crate::core::window::Window;
use crate::core::{Decline, Msat, PaymentHash, Preimage};

/// One cap per seller a reservation counts against: whose, its owner key, the rule.
pub(super) type SellerCapOf<'a> = (Whose, String, &'a crate::config::SellerCap);

/// The usage rows a payment made at `created_at` counts in: its hour, day, week and month
/// (`windows`), then its minute (the breakers' count).
pub(super) fn usage_starts(windows: [i64; 4], created_at: i64) -> [i64; 5] {
    let [h, d, w, m] = windows;
    [h, d, w, m, created_at - created_at.rem_euclid(60)]
}

impl PostgresLedger {
    /// Runs the reservation inside `txn`: increments the usage rows of every window (agent
    /// first, then the operator: one lock order for everyone, so no deadlock) and checks the
    /// results against the limits. Returns the decline when a limit would pass.
    pub(super) async fn reserve(
        &self,
        txn: &deadpool_postgres::Transaction<'_>,
        agent: &str,
        starts: &[i64; 5],
        amount: Msat,
        limits: LimitSet<'_>,
        caps: &[SellerCapOf<'_>],
    ) -> Result<Option<Decline>, LedgerError> {
        let stmt = txn
            .prepare_cached(
                "INSERT INTO l402_usage (owner, period, start, msat) VALUES
                 ($1, 'hour', $3, $7), ($1, 'day', $4, $7), ($1, 'week', $5, $7), ($1, 'month', $6, $7), ($1, 'total', 0, $7),
                 ($1, 'minute', $8, $7),
                 ($2, 'hour', $3, $7), ($2, 'day', $4, $7), ($2, 'week', $5, $7), ($2, 'month', $6, $7), ($2, 'total', 0, $7),
                 ($2, 'minute', $8, $7)
                 ON CONFLICT (owner, period, start) DO UPDATE SET msat = l402_usage.msat + EXCLUDED.msat
                 RETURNING owner, period, msat",
            )
            .await
            .map_err(unavailable)?;
        let totals = txn
            .prepare_cached("SELECT total_msat FROM l402_totals WHERE agent = $1")
            .await
            .map_err(unavailable)?;
        // Share-locked: lifting a stop waits for the reservations that read it.
        let stops = txn
            .prepare_cached(
                "SELECT scope, by_whom, reason, at FROM l402_stops WHERE scope IN ('*', $1)
                 ORDER BY scope = '*' DESC FOR SHARE",
            )
            .await
            .map_err(unavailable)?;
        // Pipelined, one round trip.
        let msat = i(amount.get());
        let usage: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &agent, &OPERATOR, &starts[0], &starts[1], &starts[2], &starts[3], &msat, &starts[4],
        ];
        let owner: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&agent];
        let (stopped, rows, total_override) = tokio::try_join!(
            txn.query_opt(&stops, &owner),
            txn.query(&stmt, &usage),
            txn.query_opt(&totals, &owner)
        )
        .map_err(unavailable)?;
        if let Some(row) = stopped {
            let stop = crate::ledger::Stop {
                scope: get(&row, 0)?,
                by: get(&row, 1)?,
                reason: get(&row, 2)?,
                at: get(&row, 3)?,
            };
            return Ok(Some(stop.decline(agent)));
        }
        let total_override = match total_override {
            Some(r) => Some(Msat::new(non_negative(get(&r, 0)?)?)),
            None => None,
        };
        // The rows hold the usage after this reservation; the rule reads what was used before.
        let (mut agent_used, mut operator_used) = (Used::default(), Used::default());
        for row in rows {
            let owner: String = get(&row, 0)?;
            let period: String = get(&row, 1)?;
            let before = Msat::new(non_negative(get(&row, 2)?)?).saturating_sub(amount);
            let used = if owner == OPERATOR {
                &mut operator_used
            } else {
                &mut agent_used
            };
            match period.as_str() {
                "total" => used.total = before,
                name => {
                    if let Some(w) = Window::ALL.into_iter().find(|w| w.name_short() == name) {
                        used.windows[w as usize] = before;
                    }
                }
            }
        }
        if let Err(decline) = rules::decide(
            &rules::Owner::agent(limits.agent, total_override, agent_used),
            &rules::Owner::operator(limits.operator, operator_used),
            amount,
        ) {
            return Ok(Some(decline));
        }
        if let Some(decline) = self.sellers(txn, starts, amount, caps).await? {
            return Ok(Some(decline));
        }
        self.breakers(txn, agent, starts[4], amount, limits).await
    }

    /// The caps per seller, once the limits allowed the reservation: increments their usage
    /// rows (the agent's cap, then the operator's: the order every settlement locks them in)
    /// and checks what was used before against each rule.
    async fn sellers(
        &self,
        txn: &deadpool_postgres::Transaction<'_>,
        starts: &[i64; 5],
        amount: Msat,
        caps: &[SellerCapOf<'_>],
    ) -> Result<Option<Decline>, LedgerError> {
        if caps.is_empty() {
            return Ok(None);
        }
        let stmt = txn
            .prepare_cached(
                "INSERT INTO l402_usage (owner, period, start, msat) VALUES
                 ($1, 'hour', $2, $6), ($1, 'day', $3, $6), ($1, 'week', $4, $6), ($1, 'month', $5, $6), ($1, 'total', 0, $6)
                 ON CONFLICT (owner, period, start) DO UPDATE SET msat = l402_usage.msat + EXCLUDED.msat
                 RETURNING period, msat",
            )
            .await
            .map_err(unavailable)?;
        let msat = i(amount.get());
        let mut sides = Vec::with_capacity(caps.len());
        for (whose, owner, cap) in caps {
            let rows = txn
                .query(
                    &stmt,
                    &[owner, &starts[0], &starts[1], &starts[2], &starts[3], &msat],
                )
                .await
                .map_err(unavailable)?;
            let mut used = Used::default();
            for row in rows {
                let period: String = get(&row, 0)?;
                let before = Msat::new(non_negative(get(&row, 1)?)?).saturating_sub(amount);
                match period.as_str() {
                    "total" => used.total = before,
                    name => {
                        if let Some(w) = Window::ALL.into_iter().find(|w| w.name_short() == name) {
                            used.windows[w as usize] = before;
                        }
                    }
                }
            }
            sides.push(rules::SellerSide {
                whose: *whose,
                cap,
                used,
            });
        }
        Ok(rules::decide_sellers(&sides, amount).err())
    }

    /// The spend-spike breakers, once the limits allowed the reservation: the minute rows this
    /// transaction just incremented are locked, so every reservation of the agent (and, for
    /// the fleet's, of anyone) counts after the one before it committed.
    async fn breakers(
        &self,
        txn: &deadpool_postgres::Transaction<'_>,
        agent: &str,
        minute: i64,
        amount: Msat,
        limits: LimitSet<'_>,
    ) -> Result<Option<Decline>, LedgerError> {
        let (agent_spike, fleet_spike) = (limits.agent.spike(), limits.operator.spike());
        if agent_spike.is_none() && fleet_spike.is_none() {
            return Ok(None);
        }
        // A window no breaker has counts from after this minute: nothing.
        let since = |spike: Option<crate::config::limits::Spike>| {
            spike.map_or(minute + 60, |s| rules::spike_since(minute, s.window_secs))
        };
        let (agent_since, fleet_since) = (since(agent_spike), since(fleet_spike));
        // The usual rate only where a multiple is set (no hours: an empty range).
        let (from, until) = rules::usual_hours(minute);
        let usual_range = |spike: Option<crate::config::limits::Spike>| match spike {
            Some(s) if s.multiple.is_some() => (from, until),
            _ => (until, until),
        };
        let (agent_usual, fleet_usual) = (usual_range(agent_spike), usual_range(fleet_spike));
        let sums = txn
            .prepare_cached(
                "SELECT owner = $2, period, COALESCE(SUM(msat), 0)::BIGINT FROM l402_usage
                 WHERE (period = 'minute' AND ((owner = $1 AND start >= $3) OR (owner = $2 AND start >= $4)))
                    OR (period = 'hour' AND ((owner = $1 AND start >= $5 AND start < $6)
                                          OR (owner = $2 AND start >= $7 AND start < $8)))
                 GROUP BY owner, period",
            )
            .await
            .map_err(unavailable)?;
        let rows = txn
            .query(
                &sums,
                &[
                    &agent,
                    &OPERATOR,
                    &agent_since,
                    &fleet_since,
                    &agent_usual.0,
                    &agent_usual.1,
                    &fleet_usual.0,
                    &fleet_usual.1,
                ],
            )
            .await
            .map_err(unavailable)?;
        let (mut agent_recent, mut fleet_recent) = (Msat::ZERO, Msat::ZERO);
        let (mut agent_rate, mut fleet_rate) = (Msat::ZERO, Msat::ZERO);
        for row in rows {
            let fleet: bool = get(&row, 0)?;
            let period: String = get(&row, 1)?;
            let sum = Msat::new(non_negative(get(&row, 2)?)?);
            match (period.as_str(), fleet) {
                // The minute sums include this reservation; the rule reads what came before.
                ("minute", true) => fleet_recent = sum.saturating_sub(amount),
                ("minute", false) => agent_recent = sum.saturating_sub(amount),
                (_, true) => fleet_rate = sum,
                (_, false) => agent_rate = sum,
            }
        }
        let check = rules::spike(Whose::Agent, limits.agent, agent_recent, agent_rate, amount)
            .and_then(|()| {
                rules::spike(
                    Whose::Operator,
                    limits.operator,
                    fleet_recent,
                    fleet_rate,
                    amount,
                )
            });
        Ok(check.err())
    }

    /// Adds `delta` msat (negative to give back) to the usage rows of a payment's windows.
    pub(super) async fn adjust(
        &self,
        txn: &deadpool_postgres::Transaction<'_>,
        agent: &str,
        starts: &[i64; 5],
        delta: i64,
        sellers: &[String],
    ) -> Result<(), LedgerError> {
        if delta == 0 {
            return Ok(());
        }
        // Lock the rows in the order `reserve` does (the agent's, then the operator's; hour to
        // total), or a settle and a concurrent begin each hold what the other waits for.
        let lock = txn
            .prepare_cached(
                "SELECT 1 FROM l402_usage
                 WHERE owner IN ($1, $2) AND ((period = 'hour' AND start = $3) OR (period = 'day' AND start = $4)
                 OR (period = 'week' AND start = $5) OR (period = 'month' AND start = $6) OR period = 'total'
                 OR (period = 'minute' AND start = $7))
                 ORDER BY owner = $2, CASE period WHEN 'hour' THEN 0 WHEN 'day' THEN 1 WHEN 'week' THEN 2
                 WHEN 'month' THEN 3 WHEN 'total' THEN 4 ELSE 5 END
                 FOR UPDATE",
            )
            .await
            .map_err(unavailable)?;
        let update = txn
            .prepare_cached(
                "UPDATE l402_usage SET msat = GREATEST(msat + $8, 0)
                 WHERE owner IN ($1, $2) AND ((period = 'hour' AND start = $3) OR (period = 'day' AND start = $4)
                 OR (period = 'week' AND start = $5) OR (period = 'month' AND start = $6) OR period = 'total'
                 OR (period = 'minute' AND start = $7))",
            )
            .await
            .map_err(unavailable)?;
        // Pipelined, one round trip: the server runs them in the order sent, the lock first.
        let rows: [&(dyn tokio_postgres::types::ToSql + Sync); 8] = [
            &agent, &OPERATOR, &starts[0], &starts[1], &starts[2], &starts[3], &starts[4], &delta,
        ];
        tokio::try_join!(txn.query(&lock, &rows[..7]), txn.execute(&update, &rows))
            .map_err(unavailable)?;
        if sellers.is_empty() {
            return Ok(());
        }
        // Then the caps per seller, in the order the reservation took them.
        let seller = txn
            .prepare_cached(
                "UPDATE l402_usage SET msat = GREATEST(msat + $6, 0)
                 WHERE owner = $1 AND ((period = 'hour' AND start = $2) OR (period = 'day' AND start = $3)
                 OR (period = 'week' AND start = $4) OR (period = 'month' AND start = $5) OR period = 'total')",
            )
            .await
            .map_err(unavailable)?;
        for owner in sellers {
            txn.execute(
                &seller,
                &[
                    owner, &starts[0], &starts[1], &starts[2], &starts[3], &delta,
                ],
            )
            .await
            .map_err(unavailable)?;
        }
        Ok(())
    }

    pub(super) async fn begin_inner(
        &self,
        p: &NewPayment,
        limits: LimitSet<'_>,
    ) -> Result<Result<Begun, Decline>, LedgerError> {
        let mut client = self.client().await?;
        let txn = client.transaction().await.map_err(unavailable)?;
        // An API agent's stored record is the truth for its pause and limits: read (and held
        // against a concurrent change) in the transaction that reserves.
        let stored_limits = if limits.api_agent {
            match self.api_agent_state(&txn, &p.agent).await? {
                Err(decline) => {
                    txn.rollback().await.map_err(unavailable)?;
                    return Ok(Err(decline));
                }
                Ok(l) => Some(l),
            }
        } else {
            None
        };
        let limits = LimitSet {
            agent: stored_limits.as_ref().unwrap_or(limits.agent),
            ..limits
        };
        let caps = crate::budget::seller_caps(&p.agent, &p.host, limits.agent, limits.operator);
        let sellers: Vec<String> = caps.iter().map(|(_, owner, _)| owner.clone()).collect();
        let sellers = crate::ledger::sellers_text(&sellers);
        let window_starts = Window::ALL.map(|w| w.start(p.created_at));
        let starts = usage_starts(window_starts, p.created_at);
        let hash = p.hash.to_hex();
        let (token, scheme) = match &p.credential {
            Some(c) => (c.token.as_str(), Some(c.scheme.as_str())),
            None => ("", None),
        };
        let flight = p.service.as_deref().unwrap_or(&p.scope);
        let fields: [&(dyn tokio_postgres::types::ToSql + Sync); 23] = [
            &hash,
            &&*p.agent,
            &p.host,
            &p.origin,
            &p.dialect,
            &flight,
            &i(p.amount.get()),
            &i(p.fee_reserve.get()),
            &p.bolt11,
            &token,
            &scheme,
            &p.service,
            &p.scope,
            &p.token_expires_at.map(i),
            &self.replica,
            &window_starts[0],
            &window_starts[1],
            &window_starts[2],
            &window_starts[3],
            &p.created_at,
            &p.created_at,
            &p.purchase,
            &sellers,
        ];
        let insert = txn
            .prepare_cached(
                "INSERT INTO l402_payments (payment_hash, agent, host, origin, dialect, flight, amount_msat, fee_reserve_msat,
                 status, bolt11, token, scheme, services, scope, token_expires_at, owner, w_hour, w_day, w_week, w_month,
                 created_at, updated_at, purchase, sellers)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'pending', $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23)
                 ON CONFLICT (payment_hash) DO NOTHING RETURNING 1",
            )
            .await
            .map_err(unavailable)?;
        let claimed = match txn.query_opt(&insert, &fields).await {
            Ok(row) => row.is_some(),
            Err(e) if opens_purchase_twice(&e) => {
                drop(txn);
                return self.open_purchase(p).await.map(Ok);
            }
            Err(e) => return Err(unavailable(e)),
        };
        if !claimed {
            let known = txn
                .query_one(
                    "SELECT status, agent, origin, preimage, fee_msat FROM l402_payments WHERE payment_hash = $1 FOR UPDATE",
                    &[&hash],
                )
                .await
                .map_err(unavailable)?;
            let status: String = get(&known, 0)?;
            match status.as_str() {
                "settled" => {
                    let preimage: Option<String> = get(&known, 3)?;
                    let proof = match preimage {
                        Some(hex) => Some(Preimage::verify_hex(&hex, &p.hash).map_err(|_| {
                            LedgerError::Inconsistent(
                                "a stored preimage does not match its hash".into(),
                            )
                        })?),
                        None => None,
                    };
                    return Ok(Ok(Begun::Settled {
                        agent: get(&known, 1)?,
                        origin: get(&known, 2)?,
                        proof,
                        fee: Msat::new(u(get::<Option<i64>>(&known, 4)?.unwrap_or(0))),
                    }));
                }
                "pending" => return Ok(Ok(Begun::InFlight)),
                _ => {
                    // A failed attempt: this hash may be tried again, as a fresh payment.
                    let retry = txn
                        .prepare_cached(
                            "UPDATE l402_payments SET agent = $2, host = $3, origin = $4, dialect = $5, flight = $6,
                             amount_msat = $7, fee_reserve_msat = $8, status = 'pending', bolt11 = $9, token = $10,
                             scheme = $11, services = $12, scope = $13, token_expires_at = $14, owner = $15,
                             w_hour = $16, w_day = $17, w_week = $18, w_month = $19, created_at = $20, updated_at = $21,
                             fee_msat = NULL, failure = NULL, preimage = NULL, scopes = '', token_retired = FALSE,
                             purchase = $22, sellers = $23
                             WHERE payment_hash = $1 AND status = 'failed'",
                        )
                        .await
                        .map_err(unavailable)?;
                    match txn.execute(&retry, &fields).await {
                        Ok(_) => {}
                        Err(e) if opens_purchase_twice(&e) => {
                            drop(txn);
                            return self.open_purchase(p).await.map(Ok);
                        }
                        Err(e) => return Err(unavailable(e)),
                    }
                }
            }
        }
        let reserve = p.amount.saturating_add(p.fee_reserve);
        if let Some(decline) = self
            .reserve(&txn, &p.agent, &starts, reserve, limits, &caps)
            .await?
        {
            txn.rollback().await.map_err(unavailable)?;
            return Ok(Err(decline));
        }
        txn.commit().await.map_err(unavailable)?;
        Ok(Ok(Begun::Fresh))
    }

    /// An API agent's pause and limits as stored, share-locked until the transaction ends (a
    /// concurrent change waits for the reservation, or the reservation for the change).
    pub(super) async fn api_agent_state(
        &self,
        txn: &deadpool_postgres::Transaction<'_>,
        agent: &str,
    ) -> Result<Result<Limits, Decline>, LedgerError> {
        let stmt = txn
            .prepare_cached("SELECT paused, limits FROM l402_agents WHERE name = $1 FOR SHARE")
            .await
            .map_err(unavailable)?;
        let Some(row) = txn.query_opt(&stmt, &[&agent]).await.map_err(unavailable)? else {
            return Ok(Err(Decline::AgentDeleted {
                agent: agent.to_string(),
            }));
        };
        if get::<bool>(&row, 0)? {
            return Ok(Err(Decline::AgentPaused {
                agent: agent.to_string(),
            }));
        }
        let limits: String = get(&row, 1)?;
        serde_json::from_str(&limits)
            .map(Ok)
            .map_err(|e| LedgerError::Inconsistent(format!("a stored agent's limits: {e}")))
    }

    /// The pending payment that holds `p`'s purchase open (after the unique index refused a
    /// second one). Should it have resolved in between, the purchase is reported open all the
    /// same: the caller waits for that payment's state, which is then final.
    pub(super) async fn open_purchase(&self, p: &NewPayment) -> Result<Begun, LedgerError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT payment_hash FROM l402_payments
                 WHERE agent = $1 AND origin = $2 AND purchase = $3
                 ORDER BY (status = 'pending') DESC, updated_at DESC LIMIT 1",
                &[&&*p.agent, &p.origin, &p.purchase],
            )
            .await
            .map_err(unavailable)?;
        let hex: String = match row {
            Some(r) => get(&r, 0)?,
            None => {
                return Err(LedgerError::Inconsistent(
                    "a purchase was refused as open, but no payment of it exists".into(),
                ))
            }
        };
        let hash = PaymentHash::from_hex(&hex)
            .ok_or_else(|| LedgerError::Inconsistent(format!("payment hash {hex:?}")))?;
        Ok(Begun::PurchaseOpen { hash })
    }
}

/// True when the statement was refused because the purchase already has a pending payment.
pub(super) fn opens_purchase_twice(e: &tokio_postgres::Error) -> bool {
    e.as_db_error().is_some_and(|db| {
        *db.code() == tokio_postgres::error::SqlState::UNIQUE_VIOLATION
            && db.constraint() == Some(schema::OPEN_PURCHASE_INDEX)
    })
}
