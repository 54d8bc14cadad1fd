//! Time limits on agent connections: how long a request head may take to arrive (which also
//! bounds an idle keep-alive connection: hyper starts the timer whenever it waits for a head),
//! how long an intercepted tunnel's TLS handshake may take, how long a tunnel may sit with no
//! byte moving and no request in flight, and how long an upstream may take to answer.
//!
//! Idleness is measured by [`Tracked`], which stamps every read and write on a stream, and
//! `Activity::in_flight`, which counts requests being answered: a request waiting on a slow
//! upstream or on the operator's approval is not idle.

use crate::config::HttpConfig;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The configured limits (`http.*_timeout_secs`).
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A request head must arrive within this (also the idle keep-alive limit).
    pub header_read: Duration,
    /// A tunnel with no traffic and no request in flight for this long is closed.
    pub tunnel_idle: Duration,
    /// The first byte and TLS handshake of an intercepted tunnel must complete within this.
    pub tls_handshake: Duration,
    /// An upstream must send its response head within this.
    pub upstream_response: Duration,
    /// A connection must authenticate within this of opening.
    pub auth: Duration,
}

impl Timeouts {
    /// The limits of `http`.
    pub fn from_config(http: &HttpConfig) -> Timeouts {
        Timeouts {
            header_read: Duration::from_secs(http.header_read_timeout_secs),
            tunnel_idle: Duration::from_secs(http.tunnel_idle_timeout_secs),
            tls_handshake: Duration::from_secs(http.tls_handshake_timeout_secs),
            upstream_response: Duration::from_secs(http.upstream_response_timeout_secs),
            auth: Duration::from_secs(http.auth_timeout_secs),
        }
    }
}

/// When a connection last moved a byte, and how many of its requests are being answered.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last read or write.
    last_ms: AtomicU64,
    in_flight: AtomicU32,
}

impl Activity {
    /// Active now, nothing in flight.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.epoch.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    /// Counts a request as being answered until the guard drops.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(self.clone())
    }

    /// Resolves once nothing has moved and nothing was in flight for `limit`.
    pub async fn idle(&self, limit: Duration) {
        loop {
            let quiet = self.idle_for();
            if quiet >= limit && self.in_flight.load(Ordering::Acquire) == 0 {
                return;
            }
            // Look again when the limit could first be reached (at least every second while
            // a request is in flight).
            let wait = limit.saturating_sub(quiet).max(Duration::from_millis(250));
            tokio::time::sleep(wait.min(limit)).await;
        }
    }
}

/// A request being answered; see [`Activity::request`].
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A stream that stamps its [`Activity`] on every byte read or written.
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Tracked<S> {
        activity.touch();
        Tracked { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn idle_waits_for_quiet_and_no_request_in_flight() {
        let a = Activity::new();
        let (client, server) = tokio::io::duplex(64);
        let mut tracked = Tracked::new(server, a.clone());
        let mut client = client;
        client.write_all(b"hi").await.unwrap();
        let mut buf = [0u8; 2];
        tracked.read_exact(&mut buf).await.unwrap();
        let limit = Duration::from_millis(300);
        let req = a.request();
        // In flight: never idle, however long it takes.
        assert!(
            tokio::time::timeout(Duration::from_millis(900), a.idle(limit))
                .await
                .is_err()
        );
        drop(req);
        let started = std::time::Instant::now();
        a.idle(limit).await;
        assert!(started.elapsed() >= limit);
        // Bytes moving keep it alive.
        client.write_all(b"x").await.unwrap();
        tracked.read_exact(&mut buf[..1]).await.unwrap();
        let started = std::time::Instant::now();
        let mover = async {
            for _ in 0..4 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                client.write_all(b"x").await.unwrap();
                tracked.read_exact(&mut buf[..1]).await.unwrap();
            }
        };
        tokio::join!(mover, a.idle(limit));
        assert!(started.elapsed() >= Duration::from_millis(850));
    }
}
