//! Who may hold a connection: at most `http.max_connections` at once in all, and at most
//! `http.max_unauthenticated_per_source` per source address that have not yet sent a request
//! with valid proxy credentials (so one source cannot exhaust the proxy with half-sent
//! requests; agents that authenticated are capped by their own `max_connections`). A refused
//! connection is closed at once, before anything is read or allocated for it.

use dashmap::DashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// The counters behind the caps.
#[derive(Debug)]
pub struct Admission {
    max_connections: usize,
    max_unauthenticated_per_source: usize,
    open: AtomicUsize,
    unauthenticated: DashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `http.max_connections` connections are open.
    Full,
    /// This source holds `http.max_unauthenticated_per_source` unauthenticated connections.
    SourceFull,
}

impl Admission {
    /// Caps of `max_connections` in all and `max_unauthenticated_per_source` per source.
    pub fn new(max_connections: usize, max_unauthenticated_per_source: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max_connections,
            max_unauthenticated_per_source,
            open: AtomicUsize::new(0),
            unauthenticated: DashMap::new(),
        })
    }

    /// Admits a connection from `source`, or says why not. The ticket frees its place on drop.
    pub fn admit(self: &Arc<Self>, source: IpAddr) -> Result<Arc<Ticket>, Refusal> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_connections).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            return Err(Refusal::Full);
        }
        let mut per_source = self.unauthenticated.entry(source).or_insert(0);
        if *per_source >= self.max_unauthenticated_per_source {
            drop(per_source);
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::SourceFull);
        }
        *per_source += 1;
        Ok(Arc::new(Ticket {
            admission: self.clone(),
            source,
            unauthenticated: AtomicBool::new(true),
        }))
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    fn release_unauthenticated(&self, source: IpAddr) {
        if let dashmap::Entry::Occupied(mut e) = self.unauthenticated.entry(source) {
            *e.get_mut() = e.get().saturating_sub(1);
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// One admitted connection (shared by the tunnel it may become).
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    source: IpAddr,
    unauthenticated: AtomicBool,
}

impl Ticket {
    /// The connection sent valid credentials: it no longer counts against its source's
    /// unauthenticated cap.
    pub fn authenticated(&self) {
        if self.unauthenticated.swap(false, Ordering::AcqRel) {
            self.admission.release_unauthenticated(self.source);
        }
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

    #[test]
    fn caps_hold_and_places_come_back() {
        let a = Admission::new(3, 2);
        let one: IpAddr = "10.0.0.1".parse().unwrap();
        let two: IpAddr = "10.0.0.2".parse().unwrap();
        let t1 = a.admit(one).unwrap();
        let t2 = a.admit(one).unwrap();
        assert_eq!(a.admit(one).unwrap_err(), Refusal::SourceFull);
        t1.authenticated();
        let t3 = a.admit(one).unwrap();
        assert_eq!(a.admit(two).unwrap_err(), Refusal::Full);
        assert_eq!(a.open(), 3);
        drop((t1, t2, t3));
        assert_eq!(a.open(), 0);
        assert!(a.unauthenticated.is_empty());
        a.admit(two).unwrap();
    }
}
