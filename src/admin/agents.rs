//! Agents through the admin API: list (file and API agents together), create (the key is shown
//! once; only its sha256 is stored), change limits, hosts or pause, rotate the key, delete.
//! API agents live in the ledger, so they survive restarts and every replica sharing the
//! ledger sees them; agents of the config file stay file-managed (409 naming the file). Every
//! change is in force at once, in open tunnels too, and recorded in the audit log.

// The errors here are the admin responses to send, made once per operator call: their size is
// of no consequence, and returning them keeps each handler a straight line.
#![allow(clippy::result_large_err)]

use super::render::{error, json};
use crate::agents::{check_api_name, hash_key, new_key, Agent, StoredAgent};
use crate::body::Body;
use crate::config::{HostRules, Limits};
use crate::ledger::AuditEntry;
use crate::proxy::Shared;
use http::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};

/// Who made a change (one admin token, one label).
pub const WHO: &str = "admin";

/// `POST /v1/agents` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAgent {
    name: String,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    hosts: HostRules,
}

/// `PATCH /v1/agents/{name}` body, a JSON merge patch (RFC 7396) of the agent: in `limits` and
/// `hosts` a key given replaces that key, `null` removes it (no limit of that kind), a key
/// left out stays as it was.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentChange {
    limits: Option<Value>,
    hosts: Option<Value>,
    paused: Option<bool>,
}

/// `current` with `patch` merged in (RFC 7396), read back as `T`, or the 400 naming the field.
fn merged<T>(current: &T, patch: Value, field: &str) -> Result<T, Response<Body>>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut value = serde_json::to_value(current)
        .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()))?;
    merge_patch(&mut value, patch);
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = match e.path().to_string().as_str() {
            "." => field.to_string(),
            path => format!("{field}.{path}"),
        };
        error(
            StatusCode::BAD_REQUEST,
            &format!("{at}: {}", e.into_inner()),
        )
    })
}

/// RFC 7396: objects merge key by key, `null` deletes, anything else replaces.
fn merge_patch(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(patch) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Some(map) = target.as_object_mut() {
                for (k, v) in patch {
                    if v.is_null() {
                        map.remove(&k);
                    } else {
                        merge_patch(map.entry(k).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other,
    }
}

/// One agent as `GET /v1/agents` shows it: its budget view, and how it is managed.
pub async fn view(shared: &Shared, agent: &Agent) -> Result<Value, String> {
    let budget = shared
        .ledger
        .budget(&agent.name, &agent.limits)
        .await
        .map_err(|e| e.to_string())?
        .with_fee_reserve(shared.fee_reserve());
    let mut v = serde_json::to_value(&budget).map_err(|e| e.to_string())?;
    let last = shared
        .ledger
        .payments(crate::ledger::PaymentFilter {
            agent: Some(agent.name.to_string()),
            limit: 1,
            ..Default::default()
        })
        .await
        .ok()
        .and_then(|rows| rows.first().map(|r| r.created_at));
    if let Some(map) = v.as_object_mut() {
        map.insert("managed_by".into(), json!(agent.managed_by));
        map.insert("paused".into(), json!(agent.paused));
        let stopped = shared
            .ledger
            .stops()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|s| s.scope == *agent.name);
        map.insert(
            "stopped".into(),
            json!(stopped.as_ref().map(super::fleet::stop)),
        );
        map.insert("hosts".into(), json!(agent.hosts));
        if let Some(at) = last {
            map.insert("last_payment_at".into(), json!(at));
            map.insert(
                "last_payment_at_rfc3339".into(),
                json!(super::render::rfc3339(at)),
            );
        }
    }
    Ok(v)
}

/// The body as `T`, or a 400 naming the field that is wrong (`limits.total_sats: …`).
pub(super) fn parse<T: serde::de::DeserializeOwned>(
    body: &[u8],
    shape: &str,
) -> Result<T, Response<Body>> {
    let bad = |message: String| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("{message}; expected {shape}"),
        )
    };
    let value: Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        match path.as_str() {
            "." => bad(e.into_inner().to_string()),
            _ => bad(format!("{path}: {}", e.into_inner())),
        }
    })
}

/// The 400 for host rules that cannot be read, naming the first such entry.
fn bad_hosts(hosts: &HostRules) -> Option<Response<Body>> {
    let (field, problem) = hosts.problems().into_iter().next()?;
    Some(error(
        StatusCode::BAD_REQUEST,
        &format!("hosts.{field}: {problem}"),
    ))
}

/// The 400 for limits no operator means, naming the first such field.
fn bad_limits(limits: &Limits) -> Option<Response<Body>> {
    let (field, problem) = limits.problems().into_iter().next()?;
    Some(error(
        StatusCode::BAD_REQUEST,
        &format!("limits.{field}: {problem}"),
    ))
}

fn unavailable(e: impl std::fmt::Display) -> Response<Body> {
    error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())
}

/// Reads the API's agents back into the directory and records what changed.
async fn applied(shared: &Shared, action: &str, agent: &str, detail: String) {
    if let Err(e) = shared.agents.refresh(&*shared.ledger).await {
        tracing::error!(error = %e, "could not reload the agents after a change");
    }
    shared.forget_removed_agents();
    tracing::info!(%agent, action, %detail, "agent changed through the admin API");
    record(shared, action, agent, detail).await;
}

/// Appends an entry to the audit log (a failure to record is logged, never undoes the change).
pub async fn record(shared: &Shared, action: &str, agent: &str, detail: String) {
    let entry = AuditEntry {
        at: shared.clock.now(),
        who: WHO.to_string(),
        action: action.to_string(),
        agent: agent.to_string(),
        detail,
    };
    if let Err(e) = shared.ledger.audit(entry).await {
        tracing::warn!(error = %e, "could not record an audit entry");
    }
}

/// The 409 for an agent of the config file.
fn file_managed(name: &str) -> Response<Body> {
    error(
        StatusCode::CONFLICT,
        &format!(
            "agent {name} is managed by the config file: change it there (and send SIGHUP), not through the API"
        ),
    )
}

/// `POST /v1/agents`.
pub async fn create(shared: &Shared, body: &[u8]) -> Response<Body> {
    let new: NewAgent = match parse(body, "{\"name\", \"limits\"?, \"hosts\"?}") {
        Ok(n) => n,
        Err(r) => return r,
    };
    if let Err(rule) = check_api_name(&new.name) {
        return error(StatusCode::BAD_REQUEST, &format!("name: {rule}"));
    }
    if let Some(r) = bad_limits(&new.limits) {
        return r;
    }
    if let Some(r) = bad_hosts(&new.hosts) {
        return r;
    }
    if shared.agents.in_config(&new.name) {
        return error(
            StatusCode::CONFLICT,
            &format!("agent {} already exists in the config file", new.name),
        );
    }
    if let Some(other) = shared
        .agents
        .load()
        .iter()
        .find(|a| a.name.to_lowercase() == new.name.to_lowercase())
    {
        return error(
            StatusCode::CONFLICT,
            &format!(
                "agent {} already exists (agent names are unique without regard to case): choose another name than {}",
                other.name, new.name
            ),
        );
    }
    let key = new_key();
    let now = shared.clock.now();
    let stored = StoredAgent {
        name: new.name.clone(),
        key_sha256: hash_key(&key),
        limits: new.limits,
        hosts: new.hosts,
        paused: false,
        created_at: now,
        updated_at: now,
    };
    match shared.ledger.create_agent(&stored).await {
        Ok(true) => {}
        Ok(false) => {
            return error(
                StatusCode::CONFLICT,
                &format!("agent {} already exists", new.name),
            )
        }
        Err(e) => return unavailable(e),
    }
    applied(
        shared,
        "agent.create",
        &new.name,
        format!(
            "limits {}, hosts {}",
            serde_json::to_string(&stored.limits).unwrap_or_default(),
            serde_json::to_string(&stored.hosts).unwrap_or_default()
        ),
    )
    .await;
    json(
        StatusCode::CREATED,
        &json!({ "name": new.name, "key": key }),
    )
}

/// The API agent `name`, or the error to answer.
fn api_agent(shared: &Shared, name: &str) -> Result<StoredAgent, Response<Body>> {
    if shared.agents.in_config(name) {
        return Err(file_managed(name));
    }
    shared
        .agents
        .api_agent(name)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "no such agent"))
}

/// `PATCH /v1/agents/{name}`.
pub async fn update(shared: &Shared, name: &str, body: &[u8]) -> Response<Body> {
    let mut stored = match api_agent(shared, name) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let change: AgentChange = match parse(body, "{\"limits\"?, \"hosts\"?, \"paused\"?}") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let mut what = Vec::new();
    if let Some(patch) = change.limits {
        let limits: Limits = match merged(&stored.limits, patch, "limits") {
            Ok(l) => l,
            Err(r) => return r,
        };
        if let Some(r) = bad_limits(&limits) {
            return r;
        }
        what.push(format!(
            "limits {}",
            serde_json::to_string(&limits).unwrap_or_default()
        ));
        stored.limits = limits;
    }
    if let Some(patch) = change.hosts {
        let hosts: HostRules = match merged(&stored.hosts, patch, "hosts") {
            Ok(h) => h,
            Err(r) => return r,
        };
        if let Some(r) = bad_hosts(&hosts) {
            return r;
        }
        what.push(format!(
            "hosts {}",
            serde_json::to_string(&hosts).unwrap_or_default()
        ));
        stored.hosts = hosts;
    }
    if let Some(paused) = change.paused {
        what.push(if paused { "paused" } else { "resumed" }.to_string());
        stored.paused = paused;
    }
    stored.updated_at = shared.clock.now();
    match shared.ledger.update_agent(&stored).await {
        Ok(true) => {}
        Ok(false) => return error(StatusCode::NOT_FOUND, "no such agent"),
        Err(e) => return unavailable(e),
    }
    applied(shared, "agent.update", name, what.join(", ")).await;
    if change.paused == Some(true) {
        deny_held(shared, name, "agent-paused").await;
    }
    let agents = shared.agents.load_full();
    match agents.get(name) {
        Some(agent) => match view(shared, agent).await {
            Ok(v) => json(StatusCode::OK, &v),
            Err(e) => unavailable(e),
        },
        None => error(StatusCode::NOT_FOUND, "no such agent"),
    }
}

/// `POST /v1/agents/{name}/key`.
pub async fn rotate(shared: &Shared, name: &str) -> Response<Body> {
    let mut stored = match api_agent(shared, name) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let key = new_key();
    stored.key_sha256 = hash_key(&key);
    stored.updated_at = shared.clock.now();
    match shared.ledger.update_agent(&stored).await {
        Ok(true) => {}
        Ok(false) => return error(StatusCode::NOT_FOUND, "no such agent"),
        Err(e) => return unavailable(e),
    }
    applied(shared, "agent.key", name, "key rotated".into()).await;
    json(StatusCode::OK, &json!({ "name": name, "key": key }))
}

/// Denies the payments of `name` held for approval: a paused or deleted agent's request must
/// not be paid by a later approval (the reservation refuses it too, on every replica).
async fn deny_held(shared: &Shared, name: &str, by: &str) {
    match shared.guardrails.approvals.deny_agent(name, by).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(agent = %name, denied = n, %by, "held payments denied"),
        Err(e) => {
            tracing::warn!(agent = %name, error = %e, "could not deny the agent's held payments; their reservation will refuse them")
        }
    }
}

/// `DELETE /v1/agents/{name}`.
pub async fn delete(shared: &Shared, name: &str) -> Response<Body> {
    if let Err(r) = api_agent(shared, name) {
        return r;
    }
    match shared.ledger.delete_agent(name).await {
        Ok(true) => {}
        Ok(false) => return error(StatusCode::NOT_FOUND, "no such agent"),
        Err(e) => return unavailable(e),
    }
    shared.layer.tokens().forget_agent(name);
    deny_held(shared, name, "agent-deleted").await;
    applied(
        shared,
        "agent.delete",
        name,
        "deleted; its payments stay in the ledger".into(),
    )
    .await;
    let mut r = Response::new(crate::body::empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}
