//! The fleet's repairing marks in Redis: one hash, `{prefix}__cg:repair`,
//! with a field per instance replaying purges after an outage, whose value
//! is when the mark lapses (ms). See `cache/pending_purges.rs`.

use super::entry::now_ms;
use super::redis::RedisStore;
use super::StoreResult;
use fred::prelude::*;

/// The hash itself goes if no instance renews a mark for this long.
const HASH_LIFE_MS: i64 = 60_000;

impl RedisStore {
    fn repair_key(&self) -> String {
        format!("{}repair", self.internal_prefix())
    }

    pub(super) async fn set_repairing(&self, instance: &str, until_ms: Option<u64>) -> StoreResult<()> {
        let client = self.client()?;
        let key = self.repair_key();
        match until_ms {
            Some(until) => {
                let pipeline = client.pipeline();
                let queued: Result<(), Error> = async {
                    let _: () = pipeline.hset(&key, (instance, until as i64)).await?;
                    let _: () = pipeline.pexpire(&key, HASH_LIFE_MS, None).await?;
                    Ok(())
                }
                .await;
                queued.map_err(|e| super::StoreError::Backend(e.to_string()))?;
                let _: Vec<Value> = self.bounded(pipeline.all()).await?;
            }
            None => {
                let _: i64 = self.bounded(client.hdel(&key, instance)).await?;
            }
        }
        Ok(())
    }

    pub(super) async fn any_repairing(&self) -> StoreResult<bool> {
        let client = self.client()?;
        let marks: Vec<(String, i64)> = self.bounded(client.hgetall(self.repair_key())).await?;
        let now = now_ms() as i64;
        Ok(marks.iter().any(|(_, until)| *until > now))
    }
}
