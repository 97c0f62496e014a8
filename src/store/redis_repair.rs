//! The fleet's repairing marks in Redis: a hash with a field per instance
//! that has purges not yet applied, holding what the gateway wrote (when the
//! mark lapses, and the purges). See `gateway/pending_purges.rs`.
//!
//! On a single Redis the hash is `{prefix}__cg:repair`. On a cluster there
//! is one such hash on every primary (`…__cg:repair:<n>`, `n` chosen so the
//! key hashes to a slot that primary serves): a mark is written to every
//! primary that answers and read from every one, so an announcement made
//! while one primary is down still reaches the other instances.

use super::redis::RedisBackend;
use super::{StoreError, StoreResult};
use fred::prelude::*;
use fred::types::cluster::ClusterRouting;

/// The hash itself goes if no instance renews a mark for this long.
const HASH_LIFE_MS: i64 = 60_000;

impl RedisBackend {
    /// The mark hashes: one, or one per cluster primary.
    fn repair_keys(&self) -> Vec<String> {
        let base = format!("{}repair", self.internal_prefix());
        let primaries = self.shard_slot_ranges();
        if primaries.is_empty() {
            return vec![base];
        }
        primaries
            .iter()
            .filter_map(|ranges| {
                (0..100_000u32).map(|n| format!("{base}:{n}")).find(|key| {
                    let slot = ClusterRouting::hash_key(key.as_bytes());
                    ranges.iter().any(|(start, end)| (*start..=*end).contains(&slot))
                })
            })
            .collect()
    }

    pub(super) async fn set_repairing(&self, instance: &str, mark: Option<&str>) -> StoreResult<()> {
        let mut written = false;
        let mut last = StoreError::Unavailable;
        for key in self.repair_keys() {
            match self.set_repairing_on(&key, instance, mark).await {
                Ok(()) => written = true,
                Err(e) => last = e,
            }
        }
        if written {
            Ok(())
        } else {
            Err(last)
        }
    }

    async fn set_repairing_on(&self, key: &str, instance: &str, mark: Option<&str>) -> StoreResult<()> {
        let client = self.on(key)?;
        match mark {
            Some(mark) => {
                let pipeline = client.pipeline();
                let queued: Result<(), Error> = async {
                    let _: () = pipeline.hset(key, (instance, mark)).await?;
                    let _: () = pipeline.pexpire(key, HASH_LIFE_MS, None).await?;
                    Ok(())
                }
                .await;
                queued.map_err(|e| StoreError::Backend(e.to_string()))?;
                let _: Vec<Value> = self.bounded_on(&client, pipeline.all()).await?;
            }
            None => {
                let _: i64 = self.bounded_on(&client, client.hdel(key, instance)).await?;
            }
        }
        Ok(())
    }

    /// Every mark, from every hash that answers; an error only when none does.
    pub(super) async fn all_repairing(&self) -> StoreResult<Vec<(String, String)>> {
        let mut marks = Vec::new();
        let mut read = false;
        let mut last = StoreError::Unavailable;
        for key in self.repair_keys() {
            let got: StoreResult<Vec<(String, String)>> = match self.on(&key) {
                Ok(client) => self.bounded_on(&client, client.hgetall(&key)).await,
                Err(e) => Err(e),
            };
            match got {
                Ok(m) => {
                    read = true;
                    marks.extend(m);
                }
                Err(e) => last = e,
            }
        }
        if read {
            Ok(marks)
        } else {
            Err(last)
        }
    }
}
