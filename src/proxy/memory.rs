//! Giving memory back after a crowd leaves. glibc's allocator keeps what thousands of closed
//! connections used in its arenas (a 5,000-connection burst left the RSS where the burst put
//! it); once most of a peak of connections is gone, `malloc_trim` returns the free pages to
//! the system. Elsewhere (other allocators, other libcs) this does nothing.

use super::admission::Admission;
use std::sync::Arc;
use std::time::Duration;

/// Connections below which a peak is not worth trimming after.
const WORTH_TRIMMING: usize = 256;

/// Watches the open connections every `every`; trims once they fell below half a peak.
pub fn spawn(admission: Arc<Admission>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut peak = 0usize;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let open = admission.open();
            peak = peak.max(open);
            if peak >= WORTH_TRIMMING && open < peak / 2 {
                let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
                tracing::debug!(peak, open, released, "connections left: memory trimmed");
                peak = open;
            }
        }
    })
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim takes a size and only walks the allocator's own free lists.
    unsafe { libc::malloc_trim(0) != 0 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
