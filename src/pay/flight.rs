//! Single flight within one process: concurrent requests for one key share one outcome. The
//! first to [`Flights::join`] leads; the rest follow and get what the leader lands. The leader's
//! slot is a guard: however the leader ends — landed, cancelled, panicked — its slot is freed
//! and its followers are answered, so no follower can wait on a flight that will never land.

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use std::sync::Arc;
use tokio::sync::watch;

/// How a flight ended, as its followers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Landing<T> {
    /// The leader's outcome.
    Done(T),
    /// The leader ended without an outcome (its task panicked or was dropped).
    Abandoned,
}

type Slot<T> = watch::Receiver<Option<Landing<T>>>;

/// The flights in progress, by key.
pub struct Flights<T: Clone + Send + Sync + 'static> {
    slots: DashMap<String, Slot<T>>,
}

impl<T: Clone + Send + Sync + 'static> Default for Flights<T> {
    fn default() -> Self {
        Flights {
            slots: DashMap::new(),
        }
    }
}

/// What joining a flight made of the caller.
pub enum Join<T: Clone + Send + Sync + 'static> {
    /// Nobody was flying this key: the caller leads and must land (or drop) the guard.
    Lead(Lead<T>),
    /// Somebody is: wait for their landing.
    Follow(Follow<T>),
}

/// The leader's slot. Dropping it without [`Lead::land`] lands [`Landing::Abandoned`].
pub struct Lead<T: Clone + Send + Sync + 'static> {
    flights: Arc<Flights<T>>,
    key: String,
    sender: watch::Sender<Option<Landing<T>>>,
}

/// A follower's view of someone else's flight.
pub struct Follow<T: Clone + Send + Sync + 'static> {
    slot: Slot<T>,
}

impl<T: Clone + Send + Sync + 'static> Flights<T> {
    /// Leads the flight for `key` if none is in progress, else follows it.
    pub fn join(self: &Arc<Self>, key: String) -> Join<T> {
        match self.slots.entry(key) {
            Entry::Occupied(e) => Join::Follow(Follow {
                slot: e.get().clone(),
            }),
            Entry::Vacant(v) => {
                let (sender, slot) = watch::channel(None);
                let key = v.key().clone();
                v.insert(slot);
                Join::Lead(Lead {
                    flights: self.clone(),
                    key,
                    sender,
                })
            }
        }
    }

    /// Flights in progress now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// No flight in progress.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

impl<T: Clone + Send + Sync + 'static> Lead<T> {
    /// Answers every follower with `outcome` and frees the slot.
    pub fn land(self, outcome: T) {
        let _ = self.sender.send(Some(Landing::Done(outcome)));
        // Drop frees the slot; a landing already sent is not overwritten.
    }
}

impl<T: Clone + Send + Sync + 'static> Drop for Lead<T> {
    fn drop(&mut self) {
        self.sender.send_if_modified(|landing| {
            if landing.is_none() {
                *landing = Some(Landing::Abandoned);
                true
            } else {
                false
            }
        });
        // Only this flight's slot: a newer flight under the same key is left alone.
        let sender = &self.sender;
        self.flights
            .slots
            .remove_if(&self.key, |_, slot| slot.same_channel(&sender.subscribe()));
    }
}

impl<T: Clone + Send + Sync + 'static> Follow<T> {
    /// Waits for the leader's landing.
    pub async fn landing(mut self) -> Landing<T> {
        match self.slot.wait_for(Option::is_some).await {
            Ok(landing) => landing.clone().unwrap_or(Landing::Abandoned),
            Err(_) => Landing::Abandoned,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn followers_get_the_leaders_outcome_and_the_slot_is_freed() {
        let flights = Arc::new(Flights::<u32>::default());
        let Join::Lead(lead) = flights.join("k".into()) else {
            panic!("first joiner leads");
        };
        let Join::Follow(follow) = flights.join("k".into()) else {
            panic!("second joiner follows");
        };
        let waiting = tokio::spawn(follow.landing());
        lead.land(7);
        assert_eq!(waiting.await.unwrap(), Landing::Done(7));
        assert!(flights.is_empty());
        assert!(matches!(flights.join("k".into()), Join::Lead(_)));
    }

    #[tokio::test]
    async fn a_leader_that_panics_frees_its_slot_and_answers_followers() {
        let flights = Arc::new(Flights::<u32>::default());
        let Join::Lead(lead) = flights.join("k".into()) else {
            panic!("first joiner leads");
        };
        let Join::Follow(follow) = flights.join("k".into()) else {
            panic!("second joiner follows");
        };
        let task = tokio::spawn(async move {
            let _lead = lead;
            panic!("the payment task fails");
        });
        assert!(task.await.is_err());
        assert_eq!(follow.landing().await, Landing::Abandoned);
        assert!(flights.is_empty(), "no slot left behind");
    }

    #[tokio::test]
    async fn a_cancelled_leader_is_abandoned_not_hung() {
        let flights = Arc::new(Flights::<u32>::default());
        let Join::Lead(lead) = flights.join("k".into()) else {
            panic!("first joiner leads");
        };
        let Join::Follow(follow) = flights.join("k".into()) else {
            panic!("second joiner follows");
        };
        let task = tokio::spawn(async move {
            let _lead = lead;
            std::future::pending::<()>().await;
        });
        task.abort();
        let landing = tokio::time::timeout(std::time::Duration::from_secs(5), follow.landing())
            .await
            .expect("followers never hang");
        assert_eq!(landing, Landing::Abandoned);
        assert!(flights.is_empty());
    }
}
