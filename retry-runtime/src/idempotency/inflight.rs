//! Requests running in this process, so that in-process duplicates wait on
//! the first one instead of polling the store.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use tokio::sync::Notify;

use super::{IdempotencyStore, RecordKey};

/// The identity of a store's records ([`IdempotencyStore::identity`]): the
/// same for every clone and handle of one store.
pub(crate) type StoreId = usize;

type Registry = Mutex<HashMap<(StoreId, RecordKey), Arc<Notify>>>;

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

pub(crate) fn store_id(store: &dyn IdempotencyStore) -> StoreId {
    store.identity()
}

/// A running request; dropping it wakes the local duplicates.
pub(crate) struct Inflight {
    id: (StoreId, RecordKey),
    notify: Arc<Notify>,
}

impl Inflight {
    pub(crate) fn register(store: StoreId, key: &RecordKey) -> Inflight {
        let id = (store, key.clone());
        let notify = Arc::new(Notify::new());
        lock().insert(id.clone(), notify.clone());
        Inflight { id, notify }
    }

    pub(crate) fn lookup(store: StoreId, key: &RecordKey) -> Option<Arc<Notify>> {
        lock().get(&(store, key.clone())).cloned()
    }
}

impl Drop for Inflight {
    fn drop(&mut self) {
        let mut registry = lock();
        if registry
            .get(&self.id)
            .is_some_and(|notify| Arc::ptr_eq(notify, &self.notify))
        {
            registry.remove(&self.id);
        }
        drop(registry);
        self.notify.notify_waiters();
    }
}

fn lock() -> std::sync::MutexGuard<'static, HashMap<(StoreId, RecordKey), Arc<Notify>>> {
    registry()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}
