//! Paid tokens, cached per (agent, origin), several per origin: one origin may host several
//! services, each with its own token. A token is tied to where it worked — directory scopes and
//! exact paths — and to the paths where the server answered it with another service's
//! challenge, so it is never sent there again and a 402 on another service's path does not
//! evict it. (Stored, each entry is a string: `/dir/`, `=/exact/path`, `!/refused/path`.)

use super::dialect::Credential;
use crate::core::PaymentHash;
use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Tokens kept per (agent, origin); the oldest goes first beyond this.
const TOKENS_PER_ORIGIN: usize = 16;
/// Tokens are dropped this long before their caveats say they expire, so a request never
/// leaves with a token that will be stale on arrival.
pub const EXPIRY_SKEW_SECS: u64 = 5;

/// A paid credential, ready to attach.
#[derive(Debug)]
pub struct Token {
    /// The header to attach (`Authorization: L402 <token>:<preimage>`), built once.
    pub credential: Credential,
    /// The payment that bought it.
    pub payment_hash: PaymentHash,
    /// The macaroon's `services=` caveat, when it has one.
    pub services: Option<String>,
    /// Unix seconds after which the token is not used (caveat expiry minus skew).
    pub expires_at: Option<u64>,
    /// Where this token belongs: directory scopes (`/dir/`), exact paths it worked on
    /// (`=/path`), and paths another service owns (`!/path`).
    scopes: RwLock<Vec<String>>,
    /// A use counter stamp: the least recently used token is the one dropped when an origin's
    /// list is full, so a token in constant use is never evicted (and paid for again).
    last_used: AtomicU64,
}

/// Monotonic stamps for `last_used`; only their order matters.
static USE_CLOCK: AtomicU64 = AtomicU64::new(0);

fn stamp() -> u64 {
    USE_CLOCK.fetch_add(1, Ordering::Relaxed)
}

impl Token {
    /// A token good on `scopes` (at least the scope it was bought on), pre-expired
    /// [`EXPIRY_SKEW_SECS`] before its caveats say.
    pub fn new(
        credential: Credential,
        payment_hash: PaymentHash,
        services: Option<String>,
        caveat_expiry: Option<u64>,
        scopes: Vec<String>,
    ) -> Token {
        Token {
            credential,
            payment_hash,
            services,
            expires_at: caveat_expiry.map(|e| e.saturating_sub(EXPIRY_SKEW_SECS)),
            scopes: RwLock::new(scopes),
            last_used: AtomicU64::new(stamp()),
        }
    }

    fn is_live(&self, now: u64) -> bool {
        self.expires_at.is_none_or(|e| now < e)
    }

    /// How well the token is known to fit `path`: an exact path it worked on beats the longest
    /// directory scope; `None` when nothing is known, or when `path` belongs to another
    /// service.
    fn scope_match(&self, path: &str) -> Option<usize> {
        let scopes = self.scopes.read().unwrap_or_else(|p| p.into_inner());
        let mut best = None;
        for s in scopes.iter() {
            let score = if let Some(refused) = s.strip_prefix('!') {
                if refused == path {
                    return None;
                }
                continue;
            } else if let Some(exact) = s.strip_prefix('=') {
                if exact != path {
                    continue;
                }
                EXACT + exact.len()
            } else if path.starts_with(s.as_str()) {
                s.len()
            } else {
                continue;
            };
            best = best.max(Some(score));
        }
        best
    }

    /// Whether the token is known to have worked at exactly `path` (not only in its directory).
    fn worked_at(&self, path: &str) -> bool {
        let scopes = self.scopes.read().unwrap_or_else(|p| p.into_inner());
        scopes
            .iter()
            .any(|s| s.strip_prefix('=').is_some_and(|p| p == path))
    }

    /// What a challenge at `path` answering this token says about it, given the service the
    /// challenge names (`offered`) and whether the token was attached as known to fit `path`.
    /// Only a refusal by the token's own service makes it stale: a challenge naming another
    /// service — or of a dialect that names none, where this token names one and never worked
    /// at this exact path — says the path belongs to someone else.
    pub fn judge(&self, offered: Option<&str>, path: &str, known: bool) -> Verdict {
        let stale = match (self.services.as_deref(), offered) {
            (Some(ours), Some(theirs)) => ours == theirs && known,
            (Some(_), None) => self.worked_at(path),
            (None, _) => known,
        };
        if stale {
            Verdict::Stale
        } else {
            Verdict::NotHere
        }
    }

    /// Whether the server answered this token with another service's challenge at `path`.
    fn refused_at(&self, path: &str) -> bool {
        let scopes = self.scopes.read().unwrap_or_else(|p| p.into_inner());
        scopes
            .iter()
            .any(|s| s.strip_prefix('!').is_some_and(|p| p == path))
    }

    fn remember(&self, entry: String) -> bool {
        let mut scopes = self.scopes.write().unwrap_or_else(|p| p.into_inner());
        if !scopes.contains(&entry) && scopes.len() < 64 {
            scopes.push(entry);
            return true;
        }
        false
    }

    /// Remembers that the token worked under this directory scope and at this exact path;
    /// returns the entries that are new (to persist).
    pub fn learn(&self, path: &str) -> Vec<String> {
        let mut new = Vec::new();
        let scope = path_scope(path);
        if self.scope_match(path).is_none_or(|m| m < scope.len())
            && self.remember(scope.to_string())
        {
            new.push(scope.to_string());
        }
        let exact = format!("={path}");
        if self.remember(exact.clone()) {
            new.push(exact);
        }
        new
    }

    /// Remembers that `path` belongs to another service: the token is not sent there again.
    /// Returns the entry when it is new (to persist).
    pub fn refuse(&self, path: &str) -> Option<String> {
        let entry = format!("!{path}");
        self.remember(entry.clone()).then_some(entry)
    }
}

/// What a refusal of a cached token means (see [`Token::judge`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Refused by its own service where it is known to work: no longer accepted, dropped.
    Stale,
    /// The path belongs to another service: the token stays for its own paths and is not sent
    /// to this one again.
    NotHere,
}

/// The score of an exact path match: above any directory scope's length.
const EXACT: usize = 1 << 20;

/// How a cached token was chosen for a request.
#[derive(Debug, Clone)]
pub struct Attached {
    /// The token, live (not past its `expires_at`) when it was chosen.
    pub token: Arc<Token>,
    /// True when the token is known to work under this path's scope; false when it is only the
    /// origin's most recent token, tried on a path it has not been seen on.
    pub known: bool,
}

/// One agent's tokens: origin → tokens, newest last.
type OriginTokens = DashMap<Box<str>, Vec<Arc<Token>>>;

/// Every agent's paid tokens, per origin, newest last: at most `TOKENS_PER_ORIGIN` (16) per
/// agent and origin. A token is only ever found for the agent that cached it.
#[derive(Default)]
pub struct TokenCache {
    /// agent → origin → tokens, newest last. Two levels so a lookup borrows `&str` keys and
    /// allocates nothing.
    by_agent: DashMap<Arc<str>, OriginTokens>,
}

impl TokenCache {
    /// An empty cache.
    pub fn new() -> TokenCache {
        TokenCache::default()
    }

    /// The token to attach to a request of `agent` to `origin` + `path`, if any.
    pub fn find(&self, agent: &str, origin: &str, path: &str, now: u64) -> Option<Attached> {
        let origins = self.by_agent.get(agent)?;
        let tokens = origins.get(origin)?;
        let live = || tokens.iter().rev().filter(|t| t.is_live(now));
        let known = live()
            .filter_map(|t| t.scope_match(path).map(|len| (len, t)))
            .max_by_key(|(len, _)| *len);
        if let Some((_, token)) = known {
            token.last_used.store(stamp(), Ordering::Relaxed);
            return Some(Attached {
                token: token.clone(),
                known: true,
            });
        }
        // Nothing known for this path: the newest token is tried, unless the server already
        // answered it here with another service's challenge.
        live().find(|t| !t.refused_at(path)).map(|t| {
            t.last_used.store(stamp(), Ordering::Relaxed);
            Attached {
                token: t.clone(),
                known: false,
            }
        })
    }

    /// A live token that a concurrent request just paid for the same service or scope: used
    /// instead of paying again when a 402 arrives for a request that left before it existed.
    pub fn find_fresh(
        &self,
        agent: &str,
        origin: &str,
        services: Option<&str>,
        path: &str,
        now: u64,
        not: Option<&PaymentHash>,
    ) -> Option<Arc<Token>> {
        let origins = self.by_agent.get(agent)?;
        let tokens = origins.get(origin)?;
        tokens
            .iter()
            .rev()
            .filter(|t| t.is_live(now) && Some(&t.payment_hash) != not)
            .find(|t| match services {
                Some(s) => t.services.as_deref() == Some(s),
                None => t.scope_match(path).is_some(),
            })
            .cloned()
    }

    /// Caches a token for `agent` at `origin`, replacing one for the same payment; beyond
    /// `TOKENS_PER_ORIGIN` (16) the expired, then the least recently used, goes.
    pub fn insert(&self, agent: &Arc<str>, origin: &str, token: Arc<Token>, now: u64) {
        let origins = self.by_agent.entry(agent.clone()).or_default();
        let mut tokens = origins.entry(Box::from(origin)).or_default();
        tokens.retain(|t| t.payment_hash != token.payment_hash);
        if tokens.len() >= TOKENS_PER_ORIGIN {
            // Expired tokens go first, then the least recently used.
            let victim = tokens
                .iter()
                .enumerate()
                .min_by_key(|(_, t)| (t.is_live(now), t.last_used.load(Ordering::Relaxed)))
                .map(|(i, _)| i);
            if let Some(i) = victim {
                tokens.remove(i);
            }
        }
        tokens.push(token);
    }

    /// Whether the token bought by `hash` is cached for `agent` at `origin`.
    pub fn contains(&self, agent: &str, origin: &str, hash: &PaymentHash) -> bool {
        self.by_agent
            .get(agent)
            .and_then(|o| {
                o.get(origin)
                    .map(|t| t.iter().any(|t| &t.payment_hash == hash))
            })
            .unwrap_or(false)
    }

    /// Drops a token the server no longer accepts; true when it was cached.
    pub fn evict(&self, agent: &str, origin: &str, hash: &PaymentHash) -> bool {
        let Some(origins) = self.by_agent.get(agent) else {
            return false;
        };
        let Some(mut tokens) = origins.get_mut(origin) else {
            return false;
        };
        let before = tokens.len();
        tokens.retain(|t| &t.payment_hash != hash);
        tokens.len() != before
    }

    /// Drops every token of an agent (the agent was removed).
    pub fn forget_agent(&self, agent: &str) {
        self.by_agent.remove(agent);
    }

    /// Keeps only the tokens of agents `keep` says still exist.
    pub fn retain_agents(&self, keep: impl Fn(&str) -> bool) {
        self.by_agent.retain(|agent, _| keep(agent));
    }

    /// Number of cached tokens (all agents).
    pub fn len(&self) -> usize {
        self.by_agent
            .iter()
            .map(|o| o.iter().map(|t| t.len()).sum::<usize>())
            .sum()
    }

    /// No token cached for anyone.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The scope of a path: its directory (`/v1/weather/today?x` → `/v1/weather/`). Services are
/// routed by path prefix, and siblings in one directory almost always share a service.
pub fn path_scope(path: &str) -> &str {
    let path = path.split(['?', '#']).next().unwrap_or(path);
    match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(value: &str) -> Credential {
        Credential::new(http::header::AUTHORIZATION, value).unwrap()
    }

    fn token(n: u8, services: Option<&str>, scope: &str, exp: Option<u64>) -> Arc<Token> {
        Arc::new(Token::new(
            credential("L402 x:y"),
            PaymentHash([n; 32]),
            services.map(str::to_string),
            exp,
            vec![scope.to_string()],
        ))
    }

    #[test]
    fn a_sensitive_authorization_is_not_printed() {
        let t = Token::new(
            credential("L402 AgEEbHNhdA:0123abcd"),
            PaymentHash([1; 32]),
            None,
            None,
            vec!["/".into()],
        );
        let shown = format!("{t:?}");
        assert!(
            !shown.contains("0123abcd") && !shown.contains("AgEEbHNhdA"),
            "{shown}"
        );
    }

    #[test]
    fn scopes() {
        assert_eq!(path_scope("/v1/weather/today?x=/y"), "/v1/weather/");
        assert_eq!(path_scope("/"), "/");
        assert_eq!(path_scope("/a"), "/");
        assert_eq!(path_scope(""), "/");
    }

    #[test]
    fn several_tokens_per_origin_matched_by_scope() {
        let cache = TokenCache::new();
        let agent: Arc<str> = Arc::from("a");
        cache.insert(
            &agent,
            "https://x:443",
            token(1, Some("weather:0"), "/weather/", None),
            0,
        );
        cache.insert(
            &agent,
            "https://x:443",
            token(2, Some("stocks:0"), "/stocks/", None),
            0,
        );
        let w = cache
            .find("a", "https://x:443", "/weather/today", 0)
            .unwrap();
        assert!(w.known);
        assert_eq!(w.token.payment_hash, PaymentHash([1; 32]));
        let s = cache.find("a", "https://x:443", "/stocks/q", 0).unwrap();
        assert_eq!(s.token.payment_hash, PaymentHash([2; 32]));
        let other = cache.find("a", "https://x:443", "/news/", 0).unwrap();
        assert!(
            !other.known,
            "unknown path gets the newest token, speculatively"
        );
        assert!(
            cache
                .find("b", "https://x:443", "/weather/today", 0)
                .is_none(),
            "agents never share"
        );
        assert!(cache
            .find("a", "http://x:80", "/weather/today", 0)
            .is_none());
        cache.evict("a", "https://x:443", &PaymentHash([1; 32]));
        assert!(
            !cache
                .find("a", "https://x:443", "/weather/today", 0)
                .unwrap()
                .known
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn expired_tokens_are_not_used() {
        let cache = TokenCache::new();
        let agent: Arc<str> = Arc::from("a");
        cache.insert(&agent, "o", token(1, None, "/", Some(100)), 0);
        assert!(cache.find("a", "o", "/x", 90).is_some());
        assert!(cache.find("a", "o", "/x", 95).is_none(), "skew pre-expires");
    }

    #[test]
    fn fresh_lookup_by_service_or_scope() {
        let cache = TokenCache::new();
        let agent: Arc<str> = Arc::from("a");
        cache.insert(&agent, "o", token(1, Some("svc:0"), "/a/", None), 0);
        assert!(cache
            .find_fresh("a", "o", Some("svc:0"), "/zzz/", 0, None)
            .is_some());
        assert!(cache
            .find_fresh(
                "a",
                "o",
                Some("svc:0"),
                "/a/",
                0,
                Some(&PaymentHash([1; 32]))
            )
            .is_none());
        assert!(cache.find_fresh("a", "o", None, "/a/b", 0, None).is_some());
        assert!(cache.find_fresh("a", "o", None, "/b/", 0, None).is_none());
    }

    #[test]
    fn a_token_in_use_is_never_the_one_evicted() {
        let cache = TokenCache::new();
        let agent: Arc<str> = Arc::from("a");
        cache.insert(&agent, "o", token(0, None, "/hot/", None), 0);
        for n in 1..40u8 {
            assert_eq!(
                cache
                    .find("a", "o", "/hot/x", 0)
                    .unwrap()
                    .token
                    .payment_hash,
                PaymentHash([0; 32])
            );
            cache.insert(&agent, "o", token(n, None, &format!("/s{n}/"), None), 0);
        }
        assert!(cache.find("a", "o", "/hot/x", 0).unwrap().known);
        assert_eq!(cache.len(), TOKENS_PER_ORIGIN);
    }

    #[test]
    fn only_its_own_service_makes_a_token_stale() {
        let t = token(1, Some("a:0"), "/svc/", None);
        t.learn("/svc/a");
        // Another service's challenge, even where the directory scope fits: not stale.
        assert_eq!(t.judge(Some("b:0"), "/svc/b", true), Verdict::NotHere);
        // A dialect naming no service (MPP, x402) at a path it never worked on: not stale.
        assert_eq!(t.judge(None, "/svc/z", true), Verdict::NotHere);
        // ... but at the exact path it worked on, the refusal is about this token.
        assert_eq!(t.judge(None, "/svc/a", true), Verdict::Stale);
        // Its own service refusing it where it is known: stale; only tried there: kept.
        assert_eq!(t.judge(Some("a:0"), "/svc/a", true), Verdict::Stale);
        assert_eq!(t.judge(Some("a:0"), "/other/", false), Verdict::NotHere);
        // A token naming no service is the origin's: refused where known, it is stale.
        let any = token(2, None, "/", None);
        assert_eq!(any.judge(Some("a:0"), "/x", true), Verdict::Stale);
        assert_eq!(any.judge(None, "/x", false), Verdict::NotHere);
    }

    #[test]
    fn a_refused_path_sends_the_request_to_the_right_token() {
        let cache = TokenCache::new();
        let agent: Arc<str> = Arc::from("a");
        let a = token(1, Some("a:0"), "/svc/", None);
        a.learn("/svc/a");
        cache.insert(&agent, "o", a.clone(), 0);
        // b's path, in a's directory: a is tried, refused with b's challenge, and kept.
        assert_eq!(
            cache
                .find("a", "o", "/svc/b", 0)
                .unwrap()
                .token
                .payment_hash,
            PaymentHash([1; 32])
        );
        assert_eq!(a.judge(Some("b:0"), "/svc/b", true), Verdict::NotHere);
        assert!(a.refuse("/svc/b").is_some());
        assert!(cache.find("a", "o", "/svc/b", 0).is_none());
        let b = token(2, Some("b:0"), "/svc/", None);
        b.learn("/svc/b");
        cache.insert(&agent, "o", b, 0);
        for (path, want) in [("/svc/a", 1), ("/svc/b", 2), ("/svc/a", 1)] {
            let found = cache.find("a", "o", path, 0).unwrap();
            assert!(found.known, "{path}");
            assert_eq!(found.token.payment_hash, PaymentHash([want; 32]), "{path}");
        }
        // A challenge naming b finds b's token, whatever the path.
        assert_eq!(
            cache
                .find_fresh("a", "o", Some("b:0"), "/elsewhere", 0, None)
                .unwrap()
                .payment_hash,
            PaymentHash([2; 32])
        );
    }

    #[test]
    fn bounded_per_origin() {
        let cache = TokenCache::new();
        let agent: Arc<str> = Arc::from("a");
        for n in 0..40u8 {
            cache.insert(&agent, "o", token(n, None, "/", None), 0);
        }
        assert_eq!(cache.len(), TOKENS_PER_ORIGIN);
    }
}
