//! Walks on Redis: keyspace pages (`SCAN MATCH`, on a cluster every
//! primary in turn), the pages of a tag's or a credential scope's index
//! (`ZSCAN` of a sorted set scored by the record's expiry), dropping index
//! members a purge read, and a scope's removal from the records its index
//! names (see `scope_index.rs`). Each page is one primitive call; the
//! protocol (`protocol.rs`) decides what is walked and what is done with
//! each page.

use super::backend::{Index, Keys, Member, Page};
use super::entry::now_ms;
use super::redis::{RedisBackend, SCAN_BATCH};
use super::{StoreError, StoreResult, MARK_FIELD};
use crate::rules::{glob_escape, INTERNAL_PREFIX};
use fred::prelude::*;
use fred::types::scan::ScanType;
use fred::types::{ClusterHash, CustomCommand, Value};

/// Where a Redis walk continues: a SCAN or ZSCAN cursor, and for a
/// keyspace walk the nodes it visits (found on its first page, so a slot
/// map re-read midway does not reorder them) and which one it is on.
#[derive(Default)]
pub struct RedisCursor {
    nodes: Option<Vec<Option<Server>>>,
    node: usize,
    /// Redis's cursor; empty at the start (`0`).
    at: String,
}

impl RedisCursor {
    fn at(&self) -> String {
        if self.at.is_empty() {
            "0".to_string()
        } else {
            self.at.clone()
        }
    }
}

impl RedisBackend {
    /// How many keys of this prefix are cachegate's records holding
    /// entries, and how many are its internal keys (`P__cg:*`: epoch,
    /// secret, tag and scope indexes, stats, marks): a walk of the whole
    /// keyspace, page by page, for the admin `stats` route.
    pub(super) async fn count_keys(&self) -> StoreResult<(u64, u64)> {
        let mut records = 0u64;
        let mut cursor = RedisCursor::default();
        loop {
            let page = self.scan_keys("*", Keys::Records, cursor).await?;
            records += page.items.len() as u64;
            match page.next {
                Some(next) => cursor = next,
                None => break,
            }
        }
        let client = self.client()?;
        let internal_pattern = format!("{}{INTERNAL_PREFIX}*", glob_escape(&self.prefix));
        let mut internal = 0u64;
        for node in self.primaries(client).await? {
            let mut at = "0".to_string();
            loop {
                let (next, found) = self
                    .scan_page_on((client, node.as_ref()), at, &internal_pattern, None)
                    .await?;
                internal += found.len() as u64;
                if next == "0" {
                    break;
                }
                at = next;
            }
        }
        Ok((records, internal))
    }

    /// One page of the keys matching `pattern` (logical keys, internal
    /// ones left out; with [`Keys::Records`], only cachegate's records).
    pub(super) async fn scan_keys(
        &self,
        pattern: &str,
        keys: Keys,
        cursor: RedisCursor,
    ) -> StoreResult<Page<String, RedisCursor>> {
        let client = self.client()?;
        let nodes = match cursor.nodes {
            Some(ref nodes) => nodes.clone(),
            // Every primary of a cluster holds its own part of the keyspace.
            None => self.primaries(client).await?,
        };
        let full = format!("{}{}", glob_escape(&self.prefix), pattern);
        let node = nodes.get(cursor.node).cloned().flatten();
        let (next, found) = match keys {
            Keys::Any => {
                let (next, found) = self
                    .scan_page_on((client, node.as_ref()), cursor.at(), &full, None)
                    .await?;
                let internal = self.internal_prefix();
                (next, found.into_iter().filter(|k| !k.starts_with(&internal)).collect())
            }
            Keys::Records => self.record_page(client, node.as_ref(), cursor.at(), &full).await?,
        };
        let items = found.iter().map(|k| self.logical(k).to_string()).collect();
        let next = if next != "0" {
            Some(RedisCursor {
                nodes: Some(nodes),
                node: cursor.node,
                at: next,
            })
        } else if cursor.node + 1 < nodes.len() {
            Some(RedisCursor {
                nodes: Some(nodes),
                node: cursor.node + 1,
                at: String::new(),
            })
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// One SCAN page of the Redis keys of cachegate's records matching
    /// `full` (an already prefixed pattern): the next cursor and the keys.
    /// Tombstones, foreign keys and internal keys are left out.
    async fn record_page(
        &self,
        client: &Client,
        node: Option<&Server>,
        cursor: String,
        full: &str,
    ) -> StoreResult<(String, Vec<String>)> {
        let (next, keys) = self
            .scan_page_on((client, node), cursor, full, Some(ScanType::Hash))
            .await?;
        let internal = self.internal_prefix();
        let candidates: Vec<String> = keys.into_iter().filter(|k| !k.starts_with(&internal)).collect();
        if candidates.is_empty() {
            return Ok((next, candidates));
        }
        let pipeline = client.pipeline();
        for k in &candidates {
            let _: () = pipeline
                .hexists(k, MARK_FIELD)
                .await
                .map_err(|e| StoreError::Backend(e.to_string()))?;
        }
        let marks: Vec<bool> = self.bounded_by(self.bulk_timeout(), pipeline.all()).await?;
        let ours = candidates
            .into_iter()
            .zip(marks)
            .filter_map(|(k, ours)| ours.then_some(k))
            .collect();
        Ok((next, ours))
    }

    fn logical<'a>(&self, redis_key: &'a str) -> &'a str {
        redis_key.strip_prefix(self.prefix.as_str()).unwrap_or(redis_key)
    }

    /// The sorted set of an index: `P__cg:tag:<tag>` or `P__cg:scope:<scope>`.
    pub(super) fn index_key(&self, index: Index<'_>) -> String {
        match index {
            Index::Tag(tag) => format!("{}{INTERNAL_PREFIX}tag:{tag}", self.prefix),
            Index::Scope(scope) => format!("{}{INTERNAL_PREFIX}scope:{scope}", self.prefix),
        }
    }

    /// One `ZSCAN` page of an index, on the primary serving its slot. ZSCAN,
    /// not offsets: a fill landing meanwhile raises its key's score, which
    /// would shift an offset window and skip members. A member whose score
    /// (its record's expiry) has passed is not live.
    pub(super) async fn index_members(
        &self,
        index: Index<'_>,
        cursor: RedisCursor,
    ) -> StoreResult<Page<Member, RedisCursor>> {
        let index = self.index_key(index);
        let client = &*self.on(&index)?;
        let zscan = CustomCommand::new_static("ZSCAN", ClusterHash::FirstKey, false);
        let args: Vec<Value> = vec![
            index.as_str().into(),
            cursor.at().into(),
            "COUNT".into(),
            (SCAN_BATCH as i64).into(),
        ];
        let (next, flat): (String, Vec<String>) =
            self.bounded_by(self.bulk_timeout(), client.custom(zscan, args)).await?;
        let now = now_ms() as f64;
        let mut flat = flat.into_iter();
        let mut items = Vec::with_capacity(flat.len() / 2);
        while let (Some(key), Some(version)) = (flat.next(), flat.next()) {
            let live = version.parse::<f64>().is_ok_and(|s| s >= now);
            items.push(Member { key, version, live });
        }
        let next = (next != "0").then(|| RedisCursor {
            at: next,
            ..RedisCursor::default()
        });
        Ok(Page { items, next })
    }

    /// Drops the members a purge read from an index, unless a fill
    /// re-indexed them since (ZADD GT raised the score): those stay findable.
    pub(super) async fn drop_index_members(&self, index: Index<'_>, members: Vec<Member>) -> StoreResult<()> {
        if members.is_empty() {
            return Ok(());
        }
        let index = self.index_key(index);
        let client = &*self.on(&index)?;
        let mut args: Vec<Value> = Vec::with_capacity(members.len() * 2);
        for member in members {
            args.push(member.key.into());
            args.push(member.version.into());
        }
        let script = self.run_script(client, &self.scripts.untag, vec![index], args);
        let _: i64 = self.bounded_by(self.bulk_timeout(), script).await?;
        Ok(())
    }

    /// Removes `scope`'s fields from each record (one script per record, on
    /// its own key); returns how many held one.
    pub(super) async fn unscope(&self, keys: &[String], scope: &str) -> StoreResult<u64> {
        let client = self.client()?;
        let tombstone_ttl = self.tombstone_ttl.as_millis() as i64;
        let mut removed = 0u64;
        for batch in keys.chunks(SCAN_BATCH as usize) {
            let calls = batch.iter().map(|key| {
                let args: Vec<Value> = vec![scope.into(), tombstone_ttl.into()];
                self.bounded_by(
                    self.bulk_timeout(),
                    self.run_script(client, &self.scripts.unscope, vec![self.key(key)], args),
                )
            });
            for result in futures_util::future::join_all(calls).await {
                removed += result? as u64;
            }
        }
        Ok(removed)
    }
}
