//! The fleet's repairing marks in Redis: one hash, `{prefix}__cg:repair`,
//! with a field per instance that has purges not yet applied, holding what
//! the gateway wrote (when the mark lapses, and the purges). See
//! `cache/pending_purges.rs`.

use super::redis::RedisStore;
use super::StoreResult;
use fred::prelude::*;

/// The hash itself goes if no instance renews a mark for this long.
const HASH_LIFE_MS: i64 = 60_000;

impl RedisStore {
    fn repair_key(&self) -> String {
        format!("{}repair", self.internal_prefix())
    }

    pub(super) async fn set_repairing(&self, instance: &str, mark: Option<&str>) -> StoreResult<()> {
        let key = self.repair_key();
        let client = self.on(&key)?;
        match mark {
            Some(mark) => {
                let pipeline = client.pipeline();
                let queued: Result<(), Error> = async {
                    let _: () = pipeline.hset(&key, (instance, mark)).await?;
                    let _: () = pipeline.pexpire(&key, HASH_LIFE_MS, None).await?;
                    Ok(())
                }
                .await;
                queued.map_err(|e| super::StoreError::Backend(e.to_string()))?;
                let _: Vec<Value> = self.bounded_on(&client, pipeline.all()).await?;
            }
            None => {
                let _: i64 = self.bounded_on(&client, client.hdel(&key, instance)).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn all_repairing(&self) -> StoreResult<Vec<(String, String)>> {
        let key = self.repair_key();
        let client = self.on(&key)?;
        self.bounded_on(&client, client.hgetall(&key)).await
    }
}
