//! The memory store's tag index: which logical keys each tag (and each
//! credential scope, as an internal tag) indexes, and which version of the
//! key's record put it there, so removing an old version never unindexes a
//! newer one; expired members leave in time proportional to their number.

use super::memory::Rec;
use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

/// A key's place in a tag's index: the record version that put it there,
/// and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Member {
    pub(super) id: u64,
    pub(super) expires_at: Option<Instant>,
}

/// Tag → logical key → [`Member`], and every member that expires ordered by
/// expiry, so expired ones leave in time proportional to their number.
/// Invariant: `(t, tag, key)` is in `by_expiry` iff
/// `tags[tag][key].expires_at == Some(t)`.
#[derive(Default)]
pub(super) struct TagIndex {
    pub(super) tags: HashMap<String, HashMap<String, Member>>,
    pub(super) by_expiry: BTreeSet<(Instant, String, String)>,
}

impl TagIndex {
    /// Indexes `key` under `tag` (replacing what indexed it before).
    pub(super) fn add(&mut self, tag: &str, key: &str, member: Member) {
        let members = match self.tags.get_mut(tag) {
            Some(members) => members,
            None => self.tags.entry(tag.to_string()).or_default(),
        };
        let old = members.insert(key.to_string(), member);
        if let Some(t) = old.and_then(|m| m.expires_at) {
            self.by_expiry.remove(&(t, tag.to_string(), key.to_string()));
        }
        if let Some(t) = member.expires_at {
            self.by_expiry.insert((t, tag.to_string(), key.to_string()));
        }
    }

    /// Unindexes `key` from `tag` if the version `id` indexed it.
    pub(super) fn remove(&mut self, tag: &str, key: &str, id: u64) {
        let Some(members) = self.tags.get_mut(tag) else {
            return;
        };
        if members.get(key).map(|m| m.id) != Some(id) {
            return;
        }
        let old = members.remove(key);
        if members.is_empty() {
            self.tags.remove(tag);
        }
        if let Some(t) = old.and_then(|m| m.expires_at) {
            self.by_expiry.remove(&(t, tag.to_string(), key.to_string()));
        }
    }

    /// Indexes `key` under every tag of `record`.
    pub(super) fn index(&mut self, key: &str, record: &Rec) {
        let member = Member {
            id: record.id,
            expires_at: record.expires_at,
        };
        for tag in &record.tags {
            self.add(tag, key, member);
        }
    }

    /// Unindexes `key` from every tag `record` indexed it under.
    pub(super) fn unindex(&mut self, key: &str, record: &Rec) {
        for tag in &record.tags {
            self.remove(tag, key, record.id);
        }
    }

    /// Drops the members expired at `now`.
    pub(super) fn prune(&mut self, now: Instant) {
        while self.by_expiry.first().is_some_and(|(t, _, _)| *t <= now) {
            let Some((_, tag, key)) = self.by_expiry.pop_first() else {
                break;
            };
            if let Some(members) = self.tags.get_mut(&tag) {
                members.remove(&key);
                if members.is_empty() {
                    self.tags.remove(&tag);
                }
            }
        }
    }

    /// The keys `tag` indexes, with the version that indexed each.
    pub(super) fn members(&self, tag: &str) -> impl Iterator<Item = (&String, u64)> {
        self.tags.get(tag).into_iter().flatten().map(|(k, m)| (k, m.id))
    }
}
