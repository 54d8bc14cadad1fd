//! The composition root: builds every part from a validated config (the ledger, the wallet, the
//! payment layer, the proxy's state), restores and reconciles before the first agent is
//! accepted, applies reloads, and runs the process until SIGTERM.

use crate::admin::Admin;
use crate::agents::directory::Directory;
use crate::config::{Config, StoreBackend};
use crate::core::Clock;
use crate::guard::Guard;
use crate::guardrails::{AlertSettings, Guardrails};
use crate::ledger::sqlite::SqliteLedger;
use crate::ledger::Ledger;
use crate::metrics::Metrics;
use crate::pay::book::{BookParts, PaymentBook};
use crate::pay::dialect::Dialects;
use crate::pay::layer::LayerParts;
use crate::pay::purchase::PurchaseParts;
use crate::pay::reconcile::{self, StartReport};
use crate::pay::tokens::TokenCache;
use crate::pay::{PaymentLayer, Purchases};
use crate::proxy::upstream::Upstreams;
use crate::proxy::{Proxy, Shared};
use crate::tls::{upstream_client_config, CertificateAuthority};
use crate::wallet::Wallet;
use anyhow::Context;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How often payments of unknown outcome are looked up again.
const RECONCILE_EVERY: Duration = Duration::from_secs(2);

/// Every part of a running proxy.
pub struct App {
    /// What every connection shares.
    pub shared: Arc<Shared>,
    /// The purchasing side of the payment layer.
    pub purchases: Arc<Purchases>,
    /// The money authority.
    pub ledger: Arc<dyn Ledger>,
    /// The operator's wallet (the background watch reads its balance).
    wallet: Arc<dyn Wallet>,
    /// How often the background watch looks at the balance, the store and stuck payments
    /// (set before [`App::prepare`]; tests make it quicker).
    pub watch_every: crate::guardrails::watch::Intervals,
    /// Reconciliation and, for a shared ledger, the token feed; stopped with the app.
    reconciler: std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for App {
    fn drop(&mut self) {
        for task in self
            .reconciler
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            task.abort();
        }
    }
}

/// The alert settings of `config`.
fn alert_settings(config: &Config) -> AlertSettings {
    AlertSettings {
        budget_thresholds: config.alerts.budget_thresholds.clone(),
        wallet_low: config
            .alerts
            .wallet_low_sats
            .map(crate::core::Msat::from_sats),
    }
}

/// Opens the ledger the config names.
pub async fn open_ledger(
    config: &Config,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<Arc<dyn Ledger>> {
    match config.store.backend {
        StoreBackend::Sqlite => {
            let (ledger, restored) = SqliteLedger::open(&config.store.path, clock)
                .await
                .with_context(|| format!("store.path {}", config.store.path.display()))?;
            if restored.pending > 0 {
                tracing::info!(
                    pending = restored.pending,
                    "ledger restored with payments left pending"
                );
            }
            Ok(Arc::new(ledger))
        }
        StoreBackend::Postgres => {
            let pg = config
                .store
                .postgres
                .as_ref()
                .context("config field `store.postgres`: missing")?;
            let url = crate::ledger::postgres::database_url(pg)?;
            let ledger = crate::ledger::postgres::PostgresLedger::open(&url, pg, clock)
                .await
                .context("store.postgres")?;
            tracing::info!(replica = ledger.replica(), "shared PostgreSQL ledger ready");
            Ok(Arc::new(ledger))
        }
    }
}

impl App {
    /// Assembles the proxy from a validated config, a wallet and the clock.
    pub async fn build(
        config: &Config,
        wallet: Arc<dyn Wallet>,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<App> {
        let ca = CertificateAuthority::load_or_create(&config.tls.ca_cert, &config.tls.ca_key)?;
        let guard = Arc::new(Guard::new(
            &config.guard,
            Duration::from_secs(config.http.connect_timeout_secs),
        ));
        let tls = upstream_client_config(&config.tls.upstream_roots)?;
        let metrics = Arc::new(Metrics::new());
        let upstream = Upstreams::new(
            guard.clone(),
            tls,
            Duration::from_secs(config.http.pool_idle_secs),
            Duration::from_secs(config.http.upstream_response_timeout_secs),
            metrics.clone(),
        );
        let ledger = open_ledger(config, clock.clone()).await?;
        let webhooks = config
            .alerts
            .read_secrets()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let alerts = if webhooks.is_empty() {
            crate::alerts::Alerts::disabled(metrics.clone())
        } else {
            crate::alerts::Alerts::start(webhooks, metrics.clone(), clock.clone())
        };
        // Deliveries are rows of the ledger's outbox: a restart or another replica sends them.
        alerts.use_ledger(ledger.clone());
        let retention = &config.store.retention;
        if retention.enabled() {
            crate::ledger::retention::spawn(
                Arc::downgrade(&ledger),
                crate::ledger::retention::Policy {
                    payments_days: retention.payments_days,
                    declines_days: retention.declines_days,
                    archive: retention
                        .archive_dir
                        .as_ref()
                        .map(crate::ledger::Archive::new),
                    batch: retention.batch(),
                },
                clock.clone(),
                retention.every(),
            );
        }
        let guardrails = Arc::new(Guardrails::new(
            ledger.clone(),
            clock.clone(),
            alerts,
            config.approval.timeout_secs,
            alert_settings(config),
        ));
        if let Some(hook) = &config.policy_hook {
            let hook = crate::guardrails::PolicyHook::from_config(hook, metrics.clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            tracing::info!(
                host = hook.host(),
                on_failure = hook.on_failure().name(),
                timeout_ms = hook.timeout().as_millis() as u64,
                "payments are asked about at the policy service"
            );
            guardrails.set_policy_hook(Some(hook));
        }
        let wallet_for_watch = wallet.clone();
        let tokens = Arc::new(TokenCache::new());
        let dialects = Arc::new(Dialects::from_names(&config.pay.schemes));
        let book = Arc::new(PaymentBook::new(BookParts {
            ledger: ledger.clone(),
            wallet,
            clock: clock.clone(),
            metrics: metrics.clone(),
            max_fee: config.wallet.max_fee_sats.msat(),
            timeout: Duration::from_secs(config.wallet.payment_timeout_secs),
        }));
        let agents = Arc::new(Directory::new(
            config.agents.clone(),
            ledger.api_agents().await?,
        ));
        let purchases = Arc::new(Purchases::new(PurchaseParts {
            book,
            ledger: ledger.clone(),
            tokens: tokens.clone(),
            dialects: dialects.clone(),
            clock: clock.clone(),
            network: config.network(),
            operator_limits: config.operator_limits.clone(),
            shared_ledger: ledger.shared(),
            guardrails: guardrails.clone(),
            agents: agents.clone(),
        }));
        let layer = PaymentLayer::new(LayerParts {
            purchases: purchases.clone(),
            tokens,
            dialects,
            ledger: ledger.clone(),
            clock: clock.clone(),
            metrics: metrics.clone(),
            max_body: config.http.max_replay_body_bytes,
            accept_payment: (config.pay.accept_payment
                && config
                    .pay
                    .schemes
                    .contains(&crate::config::PayScheme::Payment))
            .then(|| http::HeaderValue::from_static(crate::pay::layer::ACCEPT_PAYMENT_VALUE)),
        });
        let shared = Arc::new(Shared {
            agents,
            layer,
            ledger: ledger.clone(),
            ca: Arc::new(ca),
            guard,
            upstream,
            intercept: config.tls.intercept.clone(),
            max_body: config.http.max_replay_body_bytes,
            metrics,
            clock,
            guardrails,
            timeouts: crate::proxy::timeouts::Timeouts::from_config(&config.http),
            admission: crate::proxy::admission::Admission::new(
                config.http.max_connections,
                config.http.max_unauthenticated_per_source,
            ),
        });
        Ok(App {
            shared,
            purchases,
            ledger,
            wallet: wallet_for_watch,
            watch_every: Default::default(),
            reconciler: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// Puts stored tokens back in the cache, resolves payments an earlier run left pending, and
    /// keeps resolving in the background. Call before accepting agents.
    pub async fn prepare(&self) -> anyhow::Result<StartReport> {
        let report = reconcile::start(&self.purchases).await?;
        let mut tasks = vec![reconcile::spawn(self.purchases.clone(), RECONCILE_EVERY)];
        if let Some(feed) = self.ledger.token_feed() {
            tasks.push(reconcile::spawn_token_feed(self.purchases.clone(), feed));
        }
        if let Some(mut changes) = self.ledger.agent_changes() {
            // Another replica changed the API's agents: read them again, at once.
            let shared = self.shared.clone();
            tasks.push(tokio::spawn(async move {
                while changes.recv().await.is_some() {
                    if let Err(e) = shared.agents.refresh(&*shared.ledger).await {
                        tracing::warn!(error = %e, "could not read the agents another replica changed");
                    }
                    shared.forget_removed_agents();
                }
            }));
        }
        tasks.push(crate::proxy::memory::spawn(
            self.shared.admission.clone(),
            Duration::from_secs(2),
        ));
        tasks.push(crate::guardrails::watch::spawn(
            crate::guardrails::watch::Watched {
                guardrails: self.shared.guardrails.clone(),
                wallet: self.wallet.clone(),
                ledger: self.ledger.clone(),
                metrics: self.shared.metrics.clone(),
                clock: self.shared.clock.clone(),
            },
            self.watch_every,
        ));
        *self.reconciler.lock().unwrap_or_else(|p| p.into_inner()) = tasks;
        if report.tokens > 0 || report.still_in_flight > 0 {
            tracing::info!(
                tokens = report.tokens,
                still_in_flight = report.still_in_flight,
                "ledger restored"
            );
        }
        Ok(report)
    }

    /// Applies a reloaded config: agents, their limits and the operator's limits change; spend,
    /// tokens and open connections stay. Settings that need a restart are reported. A new
    /// `total_sats` in the file that an operator's override hides is logged, with the way back.
    pub async fn reload(&self, old: &Config, new: &Config) -> Vec<&'static str> {
        self.shared.agents.set_config(new.agents.clone());
        self.purchases
            .set_operator_limits(new.operator_limits.clone());
        self.shared
            .guardrails
            .approvals
            .set_timeout(new.approval.timeout_secs);
        self.shared.guardrails.set_settings(alert_settings(new));
        match new.alerts.read_secrets() {
            Ok(hooks) => self.shared.guardrails.alerts.set_webhooks(hooks),
            Err(e) => {
                tracing::error!(error = %e, "alerts.webhooks not reloaded; keeping the running ones")
            }
        }
        match &new.policy_hook {
            None => self.shared.guardrails.set_policy_hook(None),
            Some(hook) => {
                match crate::guardrails::PolicyHook::from_config(hook, self.shared.metrics.clone())
                {
                    Ok(hook) => self.shared.guardrails.set_policy_hook(Some(hook)),
                    Err(e) => {
                        tracing::error!(error = %e, "policy_hook not reloaded; keeping the running one")
                    }
                }
            }
        }
        for agent in &new.agents {
            let before = old.agents.iter().find(|a| a.name == agent.name);
            let changed = before.is_none_or(|b| b.limits.total_sats != agent.limits.total_sats);
            if !changed {
                continue;
            }
            if let Ok(Some(over)) = self.ledger.total_override(&agent.name).await {
                tracing::warn!(
                    agent = %agent.name,
                    file_total_sats = ?agent.limits.total_sats,
                    override_total_sats = over.get() / 1000,
                    "the file's new total_sats is hidden by an operator override; POST {{\"total_sats\": null}} to /v1/agents/{}/budget to go back to the file's value",
                    agent.name
                );
            }
        }
        let mut needs_restart = Vec::new();
        if old.listen != new.listen {
            needs_restart.push("listen");
        }
        if old.admin.listen != new.admin.listen {
            needs_restart.push("admin.listen");
        }
        if old.mcp.listen != new.mcp.listen {
            needs_restart.push("mcp.listen");
        }
        if old.tls.intercept != new.tls.intercept
            || old.tls.upstream_roots != new.tls.upstream_roots
        {
            needs_restart.push("tls");
        }
        if old.wallet.backend != new.wallet.backend
            || old.wallet.max_fee_sats != new.wallet.max_fee_sats
        {
            needs_restart.push("wallet");
        }
        if old.store.path != new.store.path
            || old.store.backend != new.store.backend
            || old.store.postgres != new.store.postgres
        {
            needs_restart.push("store");
        }
        if old.wallet != new.wallet && !needs_restart.contains(&"wallet") {
            needs_restart.push("wallet");
        }
        if old.pay != new.pay {
            needs_restart.push("pay");
        }
        if old.guard != new.guard {
            needs_restart.push("guard");
        }
        if old.http != new.http {
            needs_restart.push("http");
        }
        if old.admin != new.admin && !needs_restart.contains(&"admin.listen") {
            needs_restart.push("admin");
        }
        needs_restart
    }

    /// Payments handed to the wallet and not finished yet.
    pub fn payments_in_progress(&self) -> usize {
        self.purchases.book().in_progress()
    }
}

/// Runs the proxy of the config at `config_path` in the foreground until SIGTERM or Ctrl-C;
/// SIGHUP reloads. `init_logs` is called once the config's log format is known.
pub async fn run(
    config_path: &Path,
    init_logs: impl FnOnce(Option<&Config>),
) -> anyhow::Result<()> {
    // Everything run would refuse is found first: nothing (CA, ledger) is created before.
    let checked = crate::config::check(config_path);
    init_logs(checked.as_ref().ok());
    let mut config = checked.map_err(|problems| {
        let list: Vec<String> = problems.iter().map(|p| format!("  - {p}")).collect();
        anyhow::anyhow!(
            "{}: {} problem{}, not starting:\n{}",
            config_path.display(),
            problems.len(),
            if problems.len() == 1 { "" } else { "s" },
            list.join("\n")
        )
    })?;
    let wallet = crate::wallet::from_config(&config)?;
    let app = App::build(&config, wallet, Arc::new(crate::core::time::SystemClock)).await?;
    let admin = match config.admin.listen {
        Some(addr) => {
            let token = crate::config::read_secret(
                config.admin.token_env.as_deref(),
                config.admin.token_file.as_deref(),
                "admin.token_env",
            )?;
            let admin = Admin::new(app.shared.clone(), &token);
            admin.configure(&config.admin);
            if config.admin.metrics_token_env.is_some() || config.admin.metrics_token_file.is_some()
            {
                let metrics_token = crate::config::read_secret(
                    config.admin.metrics_token_env.as_deref(),
                    config.admin.metrics_token_file.as_deref(),
                    "admin.metrics_token_env",
                )?;
                admin.protect_metrics(&metrics_token);
            }
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (admin.listen)"))?;
            tracing::info!(listen = %listener.local_addr()?, "admin API ready");
            tokio::spawn(admin.clone().serve(listener));
            Some(admin)
        }
        None => None,
    };
    // Pending payments from an earlier run are resolved before any new payment can start.
    app.prepare().await?;
    if let Some(addr) = config.mcp.listen {
        let listener = crate::mcp::listener::McpListener::bind(addr, app.shared.clone())
            .await
            .with_context(|| format!("cannot listen on {addr} (mcp.listen)"))?;
        tracing::info!(listen = %listener.local_addr()?, "MCP listener ready");
        tokio::spawn(listener.run());
    }
    let proxy = Proxy::bind(config.listen, app.shared.clone())
        .await
        .with_context(|| format!("cannot listen on {} (listen)", config.listen))?;
    tracing::info!(listen = %proxy.local_addr()?, agents = config.agents.len(), wallet = config.wallet.backend.name(), store = app.ledger.backend(), "l402-proxy ready");
    if let Some(admin) = &admin {
        admin.proxy_bound(proxy.local_addr()?);
        admin
            .ready
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let proxy_task = tokio::spawn(proxy.run_until(
        async {
            let _ = stopped.await;
        },
        grace,
    ));
    while let Signal::Reload = signal().await {
        match Config::load(config_path) {
            Ok(new) => {
                let restart = app.reload(&config, &new).await;
                tracing::info!(agents = new.agents.len(), "config reloaded");
                if !restart.is_empty() {
                    tracing::warn!(settings = ?restart, "these changes take effect only after a restart");
                }
                config = new;
            }
            Err(e) => {
                tracing::error!(error = %e, "config reload refused; keeping the running config")
            }
        }
    }
    // Stop accepting, let open requests and payments finish within the grace period, make the
    // ledger durable, exit 0.
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining connections and payments"
    );
    if let Some(admin) = &admin {
        admin
            .ready
            .store(false, std::sync::atomic::Ordering::Relaxed);
    }
    let deadline = tokio::time::Instant::now() + grace;
    let _ = stop.send(());
    let _ = tokio::time::timeout_at(deadline, proxy_task).await;
    while app.payments_in_progress() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let unfinished = app.payments_in_progress();
    if unfinished > 0 {
        tracing::warn!(unfinished, "payments still running at exit; their ledger rows stay pending and are reconciled on the next start");
    }
    if let Err(e) = app.ledger.flush().await {
        tracing::warn!(error = %e, "ledger flush failed");
    }
    tracing::info!("stopped");
    Ok(())
}

enum Signal {
    Reload,
    Stop,
}

/// Waits for SIGHUP (reload) or SIGTERM / Ctrl-C (stop).
async fn signal() -> Signal {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut term), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::hangup()),
        ) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::Stop,
                _ = term.recv() => Signal::Stop,
                _ = hup.recv() => Signal::Reload,
            };
        }
    }
    let _ = tokio::signal::ctrl_c().await;
    Signal::Stop
}

/// Waits for SIGTERM or Ctrl-C, ignoring SIGHUP (for the seller and the demo).
pub async fn until_stopped() {
    while let Signal::Reload = signal().await {}
}
