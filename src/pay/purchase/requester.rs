//! A single-use purchase is for its request alone: when that request goes away (the agent hung
//! up), a payment still waiting (for approval) is not made for nobody.

use super::FlightResult;
use crate::pay::layer::Requester;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Sets its flag when dropped: the request that started a purchase is gone.
pub(super) struct SetOnDrop(pub(super) Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// How often a single-use purchase looks whether its agent is still there.
const REQUESTER_POLL: Duration = Duration::from_millis(250);

/// Awaits `run`, marking `gone` as soon as `requester` says the agent left.
pub(super) async fn watch_requester(
    run: impl std::future::Future<Output = FlightResult>,
    requester: &dyn Requester,
    gone: &AtomicBool,
) -> FlightResult {
    tokio::pin!(run);
    loop {
        tokio::select! {
            result = &mut run => return result,
            _ = tokio::time::sleep(REQUESTER_POLL) => {
                if requester.gone() {
                    gone.store(true, Ordering::Relaxed);
                }
            }
        }
    }
}
