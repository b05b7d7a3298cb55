//! The store checks through a store's immediate operations.

use std::sync::Arc;

use super::super::{
    Claim, ClaimRequest, Completion, IdempotencyStore, ImmediateClaim, ImmediateStore, Millis,
    RecordKey, StoreFuture,
};

/// `store`, its claims, completes and releases made through its
/// [`ImmediateStore`] operations (the rest through its futures).
pub(super) struct Immediately<'s, S: ?Sized>(pub(super) &'s S);

impl<S: IdempotencyStore + ?Sized> Immediately<'_, S> {
    fn records(&self) -> &dyn ImmediateStore {
        self.0.immediate().expect(
            "only stores that answer at once are checked through their immediate operations",
        )
    }
}

impl<S: IdempotencyStore + ?Sized> IdempotencyStore for Immediately<'_, S> {
    fn claim<'a>(&'a self, request: &'a ClaimRequest<'a>) -> StoreFuture<'a, Claim> {
        let found = self
            .records()
            .claim_now(request)
            .map(ImmediateClaim::into_claim);
        Box::pin(std::future::ready(found))
    }

    fn complete<'a>(&'a self, completion: Completion<'a>) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(self.records().complete_now(completion)))
    }

    fn release<'a>(&'a self, key: &'a RecordKey, token: u64) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(self.records().release_now(key, token)))
    }

    fn renew<'a>(&'a self, key: &'a RecordKey, token: u64, until: Millis) -> StoreFuture<'a, bool> {
        self.0.renew(key, token, until)
    }

    fn purge_expired(&self, now: Millis) -> StoreFuture<'_, u64> {
        self.0.purge_expired(now)
    }

    fn shared(&self) -> Option<Arc<dyn IdempotencyStore>> {
        self.0.shared()
    }

    fn identity(&self) -> usize {
        self.0.identity()
    }

    fn release_detached(&self, key: RecordKey, token: u64) {
        self.0.release_detached(key, token);
    }

    fn immediate(&self) -> Option<&dyn ImmediateStore> {
        Some(self.records())
    }
}
