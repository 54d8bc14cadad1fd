//! The operator's commands: what each one asks the admin API and how its answer is printed.
//! Every command returns the text to print; `--json` prints the API's own JSON instead of a
//! table, for scripts.

use super::table::{sats, Table};
use super::{AdminClient, ClientError};
use clap::{Args, Subcommand};
use http::Method;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::{json, Map, Value};

/// Limits given on the command line (sats; each optional).
#[derive(Args, Debug, Default, Clone)]
pub struct LimitArgs {
    /// The most one payment may cost.
    #[arg(long)]
    pub per_request_sats: Option<u64>,
    /// Spend per calendar hour (UTC).
    #[arg(long)]
    pub hourly_sats: Option<u64>,
    /// Spend per day (UTC).
    #[arg(long)]
    pub daily_sats: Option<u64>,
    /// Spend per week (UTC, from Monday).
    #[arg(long)]
    pub weekly_sats: Option<u64>,
    /// Spend per calendar month (UTC).
    #[arg(long)]
    pub monthly_sats: Option<u64>,
    /// Spend in all, ever (top it up with `agents topup`).
    #[arg(long)]
    pub total_sats: Option<u64>,
    /// A cap per seller (repeatable, first match wins): `HOSTS=WINDOW:SATS[,WINDOW:SATS]`, e.g.
    /// `api.example.com=daily:500` then `'*=daily:50'` for anything else; HOSTS is one or more
    /// globs joined by `|`, WINDOW one of hourly, daily, weekly, monthly, total.
    #[arg(long = "seller", value_name = "HOSTS=WINDOW:SATS", value_parser = parse_seller)]
    pub sellers: Vec<Value>,
}

/// One `--seller` value as the API's `limits.sellers[]` object.
fn parse_seller(text: &str) -> Result<Value, String> {
    let (hosts, caps) = text
        .split_once('=')
        .ok_or("expected HOSTS=WINDOW:SATS, e.g. api.example.com=daily:500")?;
    let hosts: Vec<&str> = hosts
        .split('|')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .collect();
    if hosts.is_empty() {
        return Err("no host glob before `=` (use `*` for any other seller)".into());
    }
    let mut rule = Map::new();
    rule.insert("hosts".into(), json!(hosts));
    for cap in caps.split(',') {
        let (window, sats) = cap
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("`{cap}`: expected WINDOW:SATS, e.g. daily:500"))?;
        let window = window.trim();
        if !["hourly", "daily", "weekly", "monthly", "total"].contains(&window) {
            return Err(format!(
                "`{window}` is not a window: hourly, daily, weekly, monthly or total"
            ));
        }
        let sats: u64 = sats
            .trim()
            .parse()
            .map_err(|_| format!("`{sats}` is not a number of sats"))?;
        rule.insert(format!("{window}_sats"), json!(sats));
    }
    Ok(Value::Object(rule))
}

impl LimitArgs {
    fn to_json(&self) -> Option<Value> {
        let fields = [
            ("per_request_sats", self.per_request_sats),
            ("hourly_sats", self.hourly_sats),
            ("daily_sats", self.daily_sats),
            ("weekly_sats", self.weekly_sats),
            ("monthly_sats", self.monthly_sats),
            ("total_sats", self.total_sats),
        ];
        let mut map: Map<String, Value> = fields
            .iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), json!(v))))
            .collect();
        if !self.sellers.is_empty() {
            map.insert("sellers".into(), Value::Array(self.sellers.clone()));
        }
        (!map.is_empty()).then_some(Value::Object(map))
    }
}

/// Host rules given on the command line.
#[derive(Args, Debug, Default, Clone)]
pub struct HostArgs {
    /// A host glob the agent may pay (repeatable; default every host).
    #[arg(long = "allow", value_name = "HOST")]
    pub allow: Vec<String>,
    /// A host glob the agent may never pay (repeatable).
    #[arg(long = "deny", value_name = "HOST")]
    pub deny: Vec<String>,
}

impl HostArgs {
    fn to_json(&self) -> Option<Value> {
        if self.allow.is_empty() && self.deny.is_empty() {
            return None;
        }
        let allow = if self.allow.is_empty() {
            vec!["*".to_string()]
        } else {
            self.allow.clone()
        };
        Some(json!({ "allow": allow, "deny": self.deny }))
    }
}

/// `l402-proxy agents …`
#[derive(Subcommand, Debug, Clone)]
pub enum AgentsCommand {
    /// Every agent (config-file and API-made): limits, spend, state, last payment.
    List,
    /// Create an agent; prints its key once, and the HTTPS_PROXY line to give the agent.
    Add {
        /// The new agent's name (its proxy user name).
        name: String,
        /// Its limits; those not given are absent (no limit of that kind).
        #[command(flatten)]
        limits: LimitArgs,
        /// Its host rules; none given: every host.
        #[command(flatten)]
        hosts: HostArgs,
    },
    /// Change an API agent's limits and/or host rules (limits not named stay as they are).
    Set {
        /// The API agent to change.
        name: String,
        /// The limits to change; those not given stay as they are.
        #[command(flatten)]
        limits: LimitArgs,
        /// New host rules, replacing the old ones; none given: unchanged.
        #[command(flatten)]
        hosts: HostArgs,
    },
    /// Give an agent a new key; the old one stops working at once (tokens and spend stay).
    Rotate {
        /// The agent whose key is replaced.
        name: String,
    },
    /// Stop an agent spending (its free traffic still passes).
    Pause {
        /// The agent to pause.
        name: String,
    },
    /// Let a paused agent spend again, or one whose spend-spike breaker tripped (any agent).
    Resume {
        /// The paused or stopped agent.
        name: String,
    },
    /// Delete an API agent (its tokens go; its payments stay in the ledger).
    Rm {
        /// The API agent to delete.
        name: String,
    },
    /// Top up (or, negative, recall) an agent's total limit; or --set it, or --clear the override.
    Topup {
        /// The agent whose total limit changes.
        name: String,
        /// Sats to add to the total limit (negative recalls).
        #[arg(allow_negative_numbers = true, conflicts_with_all = ["set", "clear"], required_unless_present_any = ["set", "clear"])]
        sats: Option<i64>,
        /// Set the total limit to this many sats.
        #[arg(long, conflicts_with = "clear")]
        set: Option<u64>,
        /// Drop the operator's override: the config's total applies again.
        #[arg(long)]
        clear: bool,
    },
}

/// `l402-proxy payments` filters.
#[derive(Args, Debug, Default, Clone)]
pub struct PaymentFilterArgs {
    /// Only this agent's payments.
    #[arg(long)]
    pub agent: Option<String>,
    /// pending, settled or failed.
    #[arg(long)]
    pub status: Option<String>,
    /// Only payments to this host (host or host:port).
    #[arg(long)]
    pub host: Option<String>,
    /// From this time (unix seconds or RFC 3339).
    #[arg(long)]
    pub since: Option<String>,
    /// Until this time (unix seconds or RFC 3339).
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many rows (newest first; 1–10000, default 100).
    #[arg(long)]
    pub limit: Option<usize>,
    /// CSV (the admin API's, for spreadsheets) instead of a table.
    #[arg(long)]
    pub csv: bool,
}

fn segment(name: &str) -> String {
    utf8_percent_encode(name, NON_ALPHANUMERIC).to_string()
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.as_ref()
                .map(|v| format!("{k}={}", utf8_percent_encode(v, NON_ALPHANUMERIC)))
        })
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

fn msat_cell(v: &Value) -> String {
    v.as_u64().map(sats).unwrap_or_default()
}

/// `daily 1000, total 5000` — the limits that are set.
fn limits_cell(limits: &Value) -> String {
    const ORDER: [(&str, &str); 6] = [
        ("per_request_sats", "per-request"),
        ("hourly_sats", "hourly"),
        ("daily_sats", "daily"),
        ("weekly_sats", "weekly"),
        ("monthly_sats", "monthly"),
        ("total_sats", "total"),
    ];
    let mut set: Vec<String> = ORDER
        .iter()
        .filter_map(|(k, label)| limits[*k].as_u64().map(|v| format!("{label} {v}")))
        .collect();
    for seller in limits["sellers"].as_array().into_iter().flatten() {
        set.push(format!("at {}: {}", hosts_of(seller), limits_cell(seller)));
    }
    if set.is_empty() {
        "none".into()
    } else {
        set.join(", ")
    }
}

/// A cap per seller's host globs, `|`-joined as `--seller` takes them.
fn hosts_of(seller: &Value) -> String {
    seller["hosts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect::<Vec<_>>()
        .join("|")
}

/// `daily 900, total 4000` — what remains under each set limit, in sats.
fn remaining_cell(remaining: &Value) -> String {
    let Some(map) = remaining.as_object() else {
        return String::new();
    };
    const ORDER: [&str; 5] = ["hourly", "daily", "weekly", "monthly", "total"];
    let cells: Vec<String> = ORDER
        .iter()
        .filter_map(|k| {
            map.get(*k)
                .and_then(Value::as_u64)
                .map(|v| format!("{k} {}", sats(v)))
        })
        .collect();
    if cells.is_empty() {
        "-".into()
    } else {
        cells.join(", ")
    }
}

/// What remains under the agent's limits, then under each of its caps per seller.
fn remaining_with_sellers(agent: &Value) -> String {
    let mut cells = vec![remaining_cell(&agent["remaining_msat"])];
    for seller in agent["sellers"].as_array().into_iter().flatten() {
        cells.push(format!(
            "at {}: {}",
            hosts_of(seller),
            remaining_cell(&seller["remaining_msat"])
        ));
    }
    cells.join("; ")
}

fn agents_table(v: &Value) -> String {
    let mut t = Table::new(&[
        "AGENT",
        "MANAGED",
        "STATE",
        "SPENT",
        "LIMITS (sats)",
        "REMAINING (sats)",
        "LAST PAYMENT",
    ]);
    for a in v["agents"].as_array().into_iter().flatten() {
        t.row(vec![
            a["agent"].as_str().unwrap_or_default().to_string(),
            a["managed_by"].as_str().unwrap_or("config").to_string(),
            if !a["stopped"].is_null() {
                format!(
                    "stopped ({})",
                    a["stopped"]["reason"].as_str().unwrap_or("?")
                )
            } else if a["paused"].as_bool() == Some(true) {
                "paused".into()
            } else {
                "active".into()
            },
            msat_cell(&a["spent_msat"]["total"]),
            limits_cell(&a["limits"]),
            remaining_with_sellers(a),
            a["last_payment_at_rfc3339"]
                .as_str()
                .unwrap_or("-")
                .to_string(),
        ]);
    }
    if t.is_empty() {
        return "no agents yet: add one with `l402-proxy agents add NAME`\n".into();
    }
    t.render()
}

/// Where agents should point `HTTPS_PROXY`, from the status's `proxy_listen` and the admin
/// URL's host (a proxy listening on every address is reached by the name the operator used).
async fn proxy_address(client: &AdminClient) -> String {
    let listen = client
        .call(Method::GET, "/v1/status", None)
        .await
        .ok()
        .and_then(|s| s["proxy_listen"].as_str().map(str::to_string));
    let Some(listen) = listen.and_then(|l| l.parse::<std::net::SocketAddr>().ok()) else {
        return "<proxy-host>:8402".into();
    };
    if listen.ip().is_unspecified() {
        let host = client
            .url()
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_string))
            .unwrap_or_else(|| "<proxy-host>".into());
        format!("{host}:{}", listen.port())
    } else {
        listen.to_string()
    }
}

async fn key_shown_once(
    client: &AdminClient,
    name: &str,
    answer: &Value,
    json_out: bool,
) -> String {
    if json_out {
        return pretty(answer);
    }
    let key = answer["key"].as_str().unwrap_or_default();
    let proxy = proxy_address(client).await;
    format!(
        "agent {name}\nkey   {key}\n\nThe key is shown only this once. Give the agent:\n  HTTPS_PROXY=http://{name}:{key}@{proxy}\n  HTTP_PROXY=http://{name}:{key}@{proxy}\n"
    )
}

/// Runs an `agents` command.
pub async fn agents(
    client: &AdminClient,
    command: &AgentsCommand,
    json_out: bool,
) -> Result<String, ClientError> {
    match command {
        AgentsCommand::List => {
            let v = client.call(Method::GET, "/v1/agents", None).await?;
            Ok(if json_out {
                pretty(&v)
            } else {
                agents_table(&v)
            })
        }
        AgentsCommand::Add {
            name,
            limits,
            hosts,
        } => {
            let mut body = json!({ "name": name });
            if let Some(l) = limits.to_json() {
                body["limits"] = l;
            }
            if let Some(h) = hosts.to_json() {
                body["hosts"] = h;
            }
            let v = client.call(Method::POST, "/v1/agents", Some(&body)).await?;
            Ok(key_shown_once(client, name, &v, json_out).await)
        }
        AgentsCommand::Set {
            name,
            limits,
            hosts,
        } => {
            let mut body = json!({});
            if let Some(l) = limits.to_json() {
                body["limits"] = l;
            }
            if let Some(h) = hosts.to_json() {
                body["hosts"] = h;
            }
            if body.as_object().is_some_and(Map::is_empty) {
                return Err(ClientError::Usage(
                    "nothing to change: give limits (--daily-sats …) or host rules (--allow/--deny)".into(),
                ));
            }
            let v = client
                .call(
                    Method::PATCH,
                    &format!("/v1/agents/{}", segment(name)),
                    Some(&body),
                )
                .await?;
            Ok(if json_out {
                pretty(&v)
            } else {
                format!("agent {name}: limits {}\n", limits_cell(&v["limits"]))
            })
        }
        AgentsCommand::Rotate { name } => {
            let v = client
                .call(
                    Method::POST,
                    &format!("/v1/agents/{}/key", segment(name)),
                    None,
                )
                .await?;
            Ok(key_shown_once(client, name, &v, json_out).await)
        }
        AgentsCommand::Resume { name } => {
            // A tripped breaker stops any agent (config or API); a pause is an API agent's.
            let lifted = client
                .call(
                    Method::POST,
                    &format!("/v1/agents/{}/resume", segment(name)),
                    None,
                )
                .await?;
            let unpaused = client
                .call(
                    Method::PATCH,
                    &format!("/v1/agents/{}", segment(name)),
                    Some(&json!({ "paused": false })),
                )
                .await;
            let unpaused = match unpaused {
                Ok(v) => Some(v),
                // A config-file agent is never paused through the API: nothing to undo.
                Err(ClientError::Api { status: 409, .. }) => None,
                Err(e) => return Err(e),
            };
            Ok(if json_out {
                pretty(&json!({ "stop": lifted, "agent": unpaused }))
            } else if lifted["changed"].as_bool() == Some(true) {
                format!(
                    "agent {name} resumed: its breaker's stop ({}) is lifted\n",
                    lifted["lifted"]["reason"].as_str().unwrap_or("stopped")
                )
            } else {
                format!("agent {name} resumed\n")
            })
        }
        AgentsCommand::Pause { name } => {
            let paused = true;
            let v = client
                .call(
                    Method::PATCH,
                    &format!("/v1/agents/{}", segment(name)),
                    Some(&json!({ "paused": paused })),
                )
                .await?;
            Ok(if json_out {
                pretty(&v)
            } else if paused {
                format!("agent {name} paused: its paid requests are declined (agent-paused); free traffic passes\n")
            } else {
                format!("agent {name} resumed\n")
            })
        }
        AgentsCommand::Rm { name } => {
            client
                .call(
                    Method::DELETE,
                    &format!("/v1/agents/{}", segment(name)),
                    None,
                )
                .await?;
            Ok(if json_out {
                pretty(&json!({ "deleted": name }))
            } else {
                format!("agent {name} deleted; its payments stay in the ledger\n")
            })
        }
        AgentsCommand::Topup {
            name,
            sats: add,
            set,
            clear,
        } => {
            let body = match (add, set, clear) {
                (_, _, true) => json!({ "total_sats": null }),
                (_, Some(total), _) => json!({ "total_sats": total }),
                (Some(add), _, _) => json!({ "add_sats": add }),
                _ => return Err(ClientError::Usage("give SATS, --set N or --clear".into())),
            };
            let v = client
                .call(
                    Method::POST,
                    &format!("/v1/agents/{}/budget", segment(name)),
                    Some(&body),
                )
                .await?;
            Ok(if json_out {
                pretty(&v)
            } else {
                let total = v["limits"]["total_sats"]
                    .as_u64()
                    .map_or_else(|| "none".to_string(), |t| format!("{t} sats"));
                let remaining = v["remaining_msat"]["total"].as_u64().map_or_else(
                    || "no total limit".to_string(),
                    |r| format!("{} sats remaining", sats(r)),
                );
                format!("agent {name}: total limit {total}, {remaining}\n")
            })
        }
    }
}

/// `l402-proxy payments`.
pub async fn payments(
    client: &AdminClient,
    f: &PaymentFilterArgs,
    json_out: bool,
) -> Result<String, ClientError> {
    let q = query(&[
        ("agent", f.agent.clone()),
        ("status", f.status.clone()),
        ("host", f.host.clone()),
        ("since", f.since.clone()),
        ("until", f.until.clone()),
        ("limit", f.limit.map(|l| l.to_string())),
        ("format", f.csv.then(|| "csv".to_string())),
    ]);
    if f.csv {
        return client.text(&format!("/v1/payments{q}")).await;
    }
    let v = client
        .call(Method::GET, &format!("/v1/payments{q}"), None)
        .await?;
    if json_out {
        return Ok(pretty(&v));
    }
    let mut t = Table::new(&[
        "TIME", "AGENT", "HOST", "SATS", "FEE", "STATUS", "DIALECT", "HASH",
    ]);
    for p in v["payments"].as_array().into_iter().flatten() {
        t.row(vec![
            p["created_at_rfc3339"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            p["agent"].as_str().unwrap_or_default().to_string(),
            p["host"].as_str().unwrap_or_default().to_string(),
            msat_cell(&p["amount_msat"]),
            msat_cell(&p["fee_msat"]),
            p["status"].as_str().unwrap_or_default().to_string(),
            p["dialect"].as_str().unwrap_or_default().to_string(),
            p["payment_hash"]
                .as_str()
                .map(|h| h.chars().take(16).collect())
                .unwrap_or_default(),
        ]);
    }
    Ok(if t.is_empty() {
        "no payments match\n".into()
    } else {
        t.render()
    })
}

/// `l402-proxy declines`.
pub async fn declines(
    client: &AdminClient,
    agent: Option<&str>,
    limit: Option<usize>,
    csv: bool,
    json_out: bool,
) -> Result<String, ClientError> {
    let q = query(&[
        ("agent", agent.map(str::to_string)),
        ("limit", limit.map(|l| l.to_string())),
        ("format", csv.then(|| "csv".to_string())),
    ]);
    if csv {
        return client.text(&format!("/v1/declines{q}")).await;
    }
    let v = client
        .call(Method::GET, &format!("/v1/declines{q}"), None)
        .await?;
    if json_out {
        return Ok(pretty(&v));
    }
    let mut t = Table::new(&["TIME", "AGENT", "HOST", "CODE", "COUNT", "REASON"]);
    for d in v["declines"].as_array().into_iter().flatten() {
        t.row(vec![
            d["created_at_rfc3339"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            d["agent"].as_str().unwrap_or_default().to_string(),
            d["host"].as_str().unwrap_or_default().to_string(),
            d["code"].as_str().unwrap_or_default().to_string(),
            d["count"]
                .as_u64()
                .map(|c| c.to_string())
                .unwrap_or_default(),
            d["reason"].as_str().unwrap_or_default().to_string(),
        ]);
    }
    Ok(if t.is_empty() {
        "no declines\n".into()
    } else {
        t.render()
    })
}

/// `l402-proxy status`.
pub async fn status(client: &AdminClient, json_out: bool) -> Result<String, ClientError> {
    let s = client.call(Method::GET, "/v1/status", None).await?;
    if json_out {
        return Ok(pretty(&s));
    }
    let wallet = &s["wallet"];
    let balance = match wallet["balance_msat"].as_u64() {
        Some(b) => format!("{} sats", sats(b)),
        None => format!(
            "unknown ({})",
            wallet["error"].as_str().unwrap_or("not reported")
        ),
    };
    let store = &s["store"];
    let fleet = match s["fleet"]["paused"].as_bool() {
        Some(true) => format!(
            "PAUSED by {} ({}): no new payment leaves",
            s["fleet"]["by"].as_str().unwrap_or("?"),
            s["fleet"]["reason"].as_str().unwrap_or("?")
        ),
        Some(false) => "paying".into(),
        None => "unknown".into(),
    };
    let stopped: Vec<&str> = s["agents"]["stopped"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    let stopped = if stopped.is_empty() {
        String::new()
    } else {
        format!(", stopped by a breaker: {}", stopped.join(", "))
    };
    Ok(format!(
        "version           {}\nproxy             {}\nwallet            {} — balance {}\nstore             {} — {}\nfleet             {fleet}\nagents            {} ({} paused{stopped})\npending payments  {}\npolicy hook       {}\nuptime            {} s\n",
        s["version"].as_str().unwrap_or_default(),
        s["proxy_listen"].as_str().unwrap_or("-"),
        wallet["backend"].as_str().unwrap_or_default(),
        balance,
        store["backend"].as_str().unwrap_or_default(),
        if store["up"].as_bool() == Some(true) { "up" } else { "UNAVAILABLE: new payments are refused" },
        s["agents"]["total"],
        s["agents"]["paused"],
        s["pending_payments"].as_u64().map_or_else(|| "unknown".to_string(), |n| n.to_string()),
        policy_hook_line(&s["policy_hook"]),
        s["uptime_seconds"],
    ))
}

/// `l402-proxy pause-all`: stops every new payment on every replica.
pub async fn pause_all(
    client: &AdminClient,
    reason: Option<&str>,
    json_out: bool,
) -> Result<String, ClientError> {
    let body = match reason {
        Some(r) => json!({ "reason": r }),
        None => json!({}),
    };
    let v = client
        .call(Method::POST, "/v1/pause-all", Some(&body))
        .await?;
    if json_out {
        return Ok(pretty(&v));
    }
    Ok(if v["changed"].as_bool() == Some(true) {
        format!(
            "payments paused for the whole fleet ({} held payment(s) denied): agents' paid requests are declined fleet-paused; free traffic and cached tokens still pass\n",
            v["approvals_denied"].as_u64().unwrap_or(0)
        )
    } else {
        format!(
            "payments were already paused (by {}: {})\n",
            v["stop"]["by"].as_str().unwrap_or("?"),
            v["stop"]["reason"].as_str().unwrap_or("?")
        )
    })
}

/// `l402-proxy resume-all`: lifts the fleet's stop.
pub async fn resume_all(client: &AdminClient, json_out: bool) -> Result<String, ClientError> {
    let v = client.call(Method::POST, "/v1/resume-all", None).await?;
    if json_out {
        return Ok(pretty(&v));
    }
    Ok(if v["changed"].as_bool() == Some(true) {
        "payments resumed for the fleet\n".into()
    } else {
        "payments were not paused\n".into()
    })
}

/// The status's `policy_hook` in one line: where, how it fails, and what it decided here.
fn policy_hook_line(hook: &Value) -> String {
    let Some(host) = hook["host"].as_str() else {
        return "off".into();
    };
    let d = &hook["decisions"];
    let n = |k: &str| d[k].as_u64().unwrap_or(0);
    format!(
        "{host} — fail-{}, {} ms; {} allowed, {} denied, {} held, {} failed",
        if hook["on_failure"] == "allow" {
            "open"
        } else {
            "closed"
        },
        hook["timeout_ms"].as_u64().unwrap_or(0),
        n("allow"),
        n("deny"),
        n("hold"),
        n("error"),
    )
}

/// `l402-proxy audit`.
pub async fn audit(
    client: &AdminClient,
    limit: Option<usize>,
    json_out: bool,
) -> Result<String, ClientError> {
    let q = query(&[("limit", limit.map(|l| l.to_string()))]);
    let v = client
        .call(Method::GET, &format!("/v1/audit{q}"), None)
        .await?;
    if json_out {
        return Ok(pretty(&v));
    }
    let mut t = Table::new(&["TIME", "WHO", "ACTION", "AGENT", "DETAIL"]);
    for e in v["audit"].as_array().into_iter().flatten() {
        t.row(vec![
            e["at_rfc3339"].as_str().unwrap_or_default().to_string(),
            e["who"].as_str().unwrap_or_default().to_string(),
            e["action"].as_str().unwrap_or_default().to_string(),
            e["agent"].as_str().unwrap_or_default().to_string(),
            e["detail"].as_str().unwrap_or_default().to_string(),
        ]);
    }
    Ok(if t.is_empty() {
        "no changes recorded\n".into()
    } else {
        t.render()
    })
}
