//! The live agent directory: the config file's agents plus the API's (from the ledger), rebuilt
//! whole on every change — a reload, an admin API call, another replica's change announced by a
//! shared ledger — and swapped in at once. A generation counter tells open tunnels that the
//! directory changed, so a tunnel of a removed agent (or a rotated key) is closed.

use super::{Agent, Agents, StoredAgent};
use crate::config::AgentConfig;
use crate::ledger::{Ledger, LedgerError};
use arc_swap::ArcSwap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// See the module docs.
pub struct Directory {
    current: ArcSwap<Agents>,
    config: Mutex<Vec<AgentConfig>>,
    api: Mutex<Vec<StoredAgent>>,
    changed: watch::Sender<u64>,
}

impl Directory {
    /// A directory of the config's agents and `api` (the ledger's).
    pub fn new(config: Vec<AgentConfig>, api: Vec<StoredAgent>) -> Directory {
        let current = ArcSwap::from_pointee(Agents::build(&config, &api));
        Directory {
            current,
            config: Mutex::new(config),
            api: Mutex::new(api),
            changed: watch::channel(0).0,
        }
    }

    /// The agents now.
    pub fn load(&self) -> arc_swap::Guard<Arc<Agents>> {
        self.current.load()
    }

    /// The agents now, owned.
    pub fn load_full(&self) -> Arc<Agents> {
        self.current.load_full()
    }

    /// Wakes on every change (tunnels re-check their agent).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn rebuild(&self) {
        let config = self.config.lock().unwrap_or_else(|p| p.into_inner());
        let api = self.api.lock().unwrap_or_else(|p| p.into_inner());
        self.current.store(Arc::new(Agents::build(&config, &api)));
        drop((config, api));
        self.changed.send_modify(|g| *g += 1);
    }

    /// The config file changed (SIGHUP).
    pub fn set_config(&self, config: Vec<AgentConfig>) {
        *self.config.lock().unwrap_or_else(|p| p.into_inner()) = config;
        self.rebuild();
    }

    /// Reads the API's agents from the ledger again (after a change here or elsewhere).
    pub async fn refresh(&self, ledger: &dyn Ledger) -> Result<(), LedgerError> {
        let api = ledger.api_agents().await?;
        *self.api.lock().unwrap_or_else(|p| p.into_inner()) = api;
        self.rebuild();
        Ok(())
    }

    /// Whether `name` is an agent of the config file.
    pub fn in_config(&self, name: &str) -> bool {
        self.config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|a| a.name == name)
    }

    /// The API-made agent called `name`, as stored.
    pub fn api_agent(&self, name: &str) -> Option<StoredAgent> {
        self.api
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|a| a.name == name)
            .cloned()
    }

    /// Whether a tunnel opened by `agent` may go on: the agent still exists, with that key.
    pub fn still_valid(&self, agent: &Agent) -> bool {
        agent.current_in(&self.load()).is_some()
    }
}
