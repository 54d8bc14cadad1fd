//! Who may hold a connection: at most `http.max_connections` at once in all, and at most
//! `http.max_unauthenticated_per_source` per source address that have not yet sent a request
//! with valid proxy credentials. Agents that authenticated are capped by their own
//! `max_connections`.
//!
//! Fairness invariant: an unauthenticated peer can never keep an agent out, even one sharing
//! its source address (sidecars on 127.0.0.1, a NAT, an L4 balancer). So a cap reached by
//! unauthenticated connections **evicts the oldest of them** (of that source for the per-source
//! cap, of any source for the global one) instead of refusing the newcomer, and every
//! connection must authenticate within `http.auth_timeout_secs` of opening or is closed. A new
//! connection is refused at accept only when `max_connections` are open and every one of them
//! has authenticated.
//!
//! Which one is evicted: the oldest that has had its chance — whose socket the proxy has read
//! dry at least once ([`Watched`]) without finding valid credentials. A connection not read yet
//! (an agent whose request is still in the socket while the proxy is busy) is passed over, so a
//! flood that reconnects as fast as it is closed cannot push the agent's connection out before
//! its request is read. Only when every candidate is unread is the oldest taken regardless.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// The counters behind the caps.
#[derive(Debug)]
pub struct Admission {
    max_connections: usize,
    max_unauthenticated_per_source: usize,
    open: AtomicUsize,
    next_id: AtomicU64,
    waiting: Mutex<Unauthenticated>,
}

/// One connection that has not authenticated: its source, how to close it, and whether the
/// proxy has read its socket dry (it had its chance).
#[derive(Debug)]
struct Waiting {
    source: IpAddr,
    evict: Arc<Notify>,
    read_dry: Arc<AtomicBool>,
}

/// The connections that have not authenticated yet, oldest first (ids grow with age).
#[derive(Debug, Default)]
struct Unauthenticated {
    all: BTreeMap<u64, Waiting>,
    by_source: HashMap<IpAddr, BTreeSet<u64>>,
}

impl Unauthenticated {
    /// The oldest of `ids` that had its chance, else the oldest of them.
    fn victim(&self, mut ids: impl Iterator<Item = u64> + Clone) -> Option<u64> {
        let dry = ids.clone().find(|id| {
            self.all
                .get(id)
                .is_some_and(|w| w.read_dry.load(Ordering::Acquire))
        });
        dry.or_else(|| ids.next())
    }

    fn remove(&mut self, id: u64) -> Option<Arc<Notify>> {
        let Waiting { source, evict, .. } = self.all.remove(&id)?;
        let notify = evict;
        if let Some(ids) = self.by_source.get_mut(&source) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_source.remove(&source);
            }
        }
        Some(notify)
    }

    /// Closes connection `id` (it stops counting at once; its task closes it).
    fn evict(&mut self, id: u64) {
        if let Some(notify) = self.remove(id) {
            notify.notify_one();
        }
    }
}

/// Why a connection was refused, or which cap made room for it by evicting another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `http.max_connections` connections are open (and all authenticated).
    Full,
    /// This source holds `http.max_unauthenticated_per_source` unauthenticated connections
    /// (only ever an eviction now: the oldest of them is closed).
    SourceFull,
}

/// A connection admitted, and whom it displaced.
#[derive(Debug)]
pub struct Admitted {
    /// The new connection's place.
    pub ticket: Arc<Ticket>,
    /// The cap whose oldest unauthenticated connection was closed to make room, if any.
    pub evicted: Option<Refusal>,
}

impl Admission {
    /// Caps of `max_connections` in all and `max_unauthenticated_per_source` per source.
    pub fn new(max_connections: usize, max_unauthenticated_per_source: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max_connections,
            max_unauthenticated_per_source: max_unauthenticated_per_source.max(1),
            open: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            waiting: Mutex::new(Unauthenticated::default()),
        })
    }

    fn waiting(&self) -> MutexGuard<'_, Unauthenticated> {
        // Nothing panics while holding it; a poisoned map is still consistent.
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Admits a connection from `source` (evicting the oldest unauthenticated one when a cap
    /// is reached), or refuses it when every open connection has authenticated. The ticket
    /// frees its place on drop.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Admitted, Refusal> {
        let mut evicted = None;
        let mut waiting = self.waiting();
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_connections).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            // Full: make room by closing the oldest connection that has not authenticated.
            let Some(oldest) = waiting.victim(waiting.all.keys().copied()) else {
                return Err(Refusal::Full);
            };
            waiting.evict(oldest);
            // Its place passes to the newcomer (the evicted task's drop gives one back).
            self.open.fetch_add(1, Ordering::AcqRel);
            evicted = Some(Refusal::Full);
        }
        let held = waiting.by_source.get(&source).map_or(0, BTreeSet::len);
        if held >= self.max_unauthenticated_per_source {
            let oldest = waiting
                .by_source
                .get(&source)
                .and_then(|ids| waiting.victim(ids.iter().copied()));
            if let Some(oldest) = oldest {
                waiting.evict(oldest);
                evicted = Some(Refusal::SourceFull);
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        let read_dry = Arc::new(AtomicBool::new(false));
        waiting.all.insert(
            id,
            Waiting {
                source,
                evict: notify.clone(),
                read_dry: read_dry.clone(),
            },
        );
        waiting.by_source.entry(source).or_default().insert(id);
        drop(waiting);
        Ok(Admitted {
            ticket: Arc::new(Ticket {
                admission: self.clone(),
                id,
                evict: notify,
                read_dry,
                unauthenticated: AtomicBool::new(true),
            }),
            evicted,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Connections open now that have not authenticated.
    pub fn unauthenticated(&self) -> usize {
        self.waiting().all.len()
    }
}

/// One admitted connection (shared by the tunnel it may become).
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    id: u64,
    evict: Arc<Notify>,
    /// Set once a read of the socket found nothing more (see [`Watched`]).
    read_dry: Arc<AtomicBool>,
    unauthenticated: AtomicBool,
}

/// Why a connection's task must close it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// A newer connection needed its place (it had not authenticated).
    Evicted,
    /// It did not authenticate within `http.auth_timeout_secs`.
    AuthTimeout,
}

impl Ticket {
    /// The connection sent valid credentials: it no longer counts against its source's
    /// unauthenticated cap, can no longer be evicted, and has no deadline.
    pub fn authenticated(&self) {
        if self.unauthenticated.swap(false, Ordering::AcqRel) {
            self.admission.waiting().remove(self.id);
        }
    }

    /// Whether it has not authenticated yet.
    pub fn is_unauthenticated(&self) -> bool {
        self.unauthenticated.load(Ordering::Acquire)
    }

    /// Resolves when the connection must be closed: evicted, or still unauthenticated
    /// `auth_timeout` after it opened. Never resolves once it authenticated.
    pub async fn closing(&self, auth_timeout: Duration) -> Closing {
        tokio::select! {
            _ = self.evict.notified() => Closing::Evicted,
            _ = async {
                tokio::time::sleep(auth_timeout).await;
                if !self.is_unauthenticated() {
                    std::future::pending::<()>().await;
                }
            } => Closing::AuthTimeout,
        }
    }
}

/// An agent connection's socket, telling its [`Ticket`] when a read first finds nothing more to
/// read (everything the peer sent so far has been seen): from then on, if it has not
/// authenticated, it has had its chance and may be evicted first.
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    read_dry: Option<Arc<AtomicBool>>,
}

impl<S> Watched<S> {
    /// `inner`, reporting to `ticket`.
    pub fn new(inner: S, ticket: &Ticket) -> Watched<S> {
        Watched {
            inner,
            read_dry: Some(ticket.read_dry.clone()),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_pending() {
            if let Some(flag) = self.read_dry.take() {
                flag.store(true, Ordering::Release);
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.authenticated();
        self.admission.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed_now(t: &Ticket) -> bool {
        use std::future::Future;
        let fut = std::pin::pin!(t.closing(Duration::from_secs(3600)));
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        fut.poll(&mut cx).is_ready()
    }

    #[tokio::test]
    async fn caps_evict_the_oldest_unauthenticated_and_places_come_back() {
        let a = Admission::new(3, 2);
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let t1 = a.admit(one).unwrap();
        let t2 = a.admit(one).unwrap();
        assert_eq!(t1.evicted, None);
        // A third from the same source: the oldest (t1) is evicted, the newcomer admitted.
        let t3 = a.admit(one).unwrap();
        assert_eq!(t3.evicted, Some(Refusal::SourceFull));
        assert!(closed_now(&t1.ticket));
        assert!(!closed_now(&t2.ticket));
        assert_eq!(a.unauthenticated(), 2);
        // Authenticated connections are never evicted.
        t2.ticket.authenticated();
        t3.ticket.authenticated();
        assert_eq!(a.open(), 3);
        // Full, and only t1 (already evicted, not yet dropped) is open besides: refused.
        assert_eq!(a.admit(two).unwrap_err(), Refusal::Full);
        drop(t1);
        let t4 = a.admit(two).unwrap();
        assert_eq!(t4.evicted, None);
        // Full again: the newcomer evicts the oldest unauthenticated connection of any source.
        let t5 = a.admit(one).unwrap();
        assert_eq!(t5.evicted, Some(Refusal::Full));
        assert!(closed_now(&t4.ticket));
        assert!(!closed_now(&t2.ticket) && !closed_now(&t3.ticket));
        drop((t2, t3, t4, t5));
        assert_eq!(a.open(), 0);
        assert_eq!(a.unauthenticated(), 0);
    }

    #[tokio::test]
    async fn an_unauthenticated_connection_has_a_deadline() {
        let a = Admission::new(10, 10);
        let source: IpAddr = "10.0.0.1".parse().unwrap();
        let slow = a.admit(source).unwrap().ticket;
        let deadline = Duration::from_millis(50);
        assert_eq!(slow.closing(deadline).await, Closing::AuthTimeout);
        let agent = a.admit(source).unwrap().ticket;
        agent.authenticated();
        let waited =
            tokio::time::timeout(Duration::from_millis(300), agent.closing(deadline)).await;
        assert!(
            waited.is_err(),
            "an authenticated connection has no deadline"
        );
    }
}
