//! The embedded in-process store.
use super::*;
use bytes::Bytes;

pub struct MemoryStore;

impl MemoryStore {
    pub fn new(max_entries: u64, max_bytes: u64, tombstone_ttl: Duration, secret: Option<&str>) -> MemoryStore {
        let _ = (max_entries, max_bytes, tombstone_ttl, secret);
        MemoryStore
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> &'static str { "memory" }
    fn is_up(&self) -> bool { true }
    fn scope_secret(&self) -> Option<Bytes> { None }
    async fn lookup(&self, _key: &str, _field: &str) -> StoreResult<Lookup> { todo!() }
    async fn fill_guard(&self, _key: &str) -> StoreResult<FillGuard> { todo!() }
    async fn fill(&self, _key: &str, _field: &str, _value: Bytes, _ttl: Duration, _guard: FillGuard) -> StoreResult<bool> { todo!() }
    async fn purge_keys(&self, _keys: &[String]) -> StoreResult<u64> { todo!() }
    async fn purge_pattern(&self, _pattern: &str) -> StoreResult<u64> { todo!() }
}
