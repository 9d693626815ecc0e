//! The bus: one pub/sub connection per runtime on `{prefix}:bus`, carrying invalidations,
//! clears, "value ready" notices and session ends, and this instance's own heartbeats. A
//! heartbeat received back proves every message published before it was received (Redis
//! delivers one channel's messages in order), so the local tier is trusted for one
//! invalidation bound after it. Past the bound without one, Redis counts as away: local copies
//! of shared values are dropped (and again every bound while away), one warning is logged, and
//! the connection is rebuilt; when it is back, the local copies are dropped once more (messages
//! may have been missed) and the invalidations kept meanwhile are published.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;

use super::tier::{RedisState, Tier, bump};

/// A message on the bus. The wire format is a tag byte and length-prefixed fields, written by
/// hand because the lock scripts publish `R` messages from Lua.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Message {
    /// `H`: a heartbeat of `instance`, sent `nanos` after its bus started.
    Heartbeat { instance: u64, nanos: u64 },
    /// `I`: remove one key of a resource.
    Invalidate { origin: u64, resource: String, key: Vec<u8> },
    /// `C`: remove every key of a resource (`None`: of every shared resource).
    Clear { origin: u64, resource: Option<String> },
    /// `R`: a value was stored, or the lock of its load released (the rest is the value key).
    Ready { value_key: Vec<u8> },
    /// `S`: a session ended.
    SessionEnd { origin: u64, id: String },
}

impl Message {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let field = |out: &mut Vec<u8>, bytes: &[u8]| {
            out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(bytes);
        };
        match self {
            Message::Heartbeat { instance, nanos } => {
                out.push(b'H');
                out.extend_from_slice(&instance.to_le_bytes());
                out.extend_from_slice(&nanos.to_le_bytes());
            }
            Message::Invalidate { origin, resource, key } => {
                out.push(b'I');
                out.extend_from_slice(&origin.to_le_bytes());
                field(&mut out, resource.as_bytes());
                field(&mut out, key);
            }
            Message::Clear { origin, resource } => {
                out.push(b'C');
                out.extend_from_slice(&origin.to_le_bytes());
                if let Some(r) = resource {
                    field(&mut out, r.as_bytes());
                }
            }
            Message::Ready { value_key } => {
                out.push(b'R');
                out.extend_from_slice(value_key);
            }
            Message::SessionEnd { origin, id } => {
                out.push(b'S');
                out.extend_from_slice(&origin.to_le_bytes());
                field(&mut out, id.as_bytes());
            }
        }
        out
    }

    /// `None` for anything malformed (a hostile or foreign publisher): it is ignored.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Message> {
        let (&tag, mut rest) = bytes.split_first()?;
        let u64_ = |rest: &mut &[u8]| -> Option<u64> {
            let (head, tail) = rest.split_at_checked(8)?;
            *rest = tail;
            Some(u64::from_le_bytes(head.try_into().ok()?))
        };
        fn field<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
            let (len, tail) = rest.split_at_checked(4)?;
            let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
            let (value, tail) = tail.split_at_checked(len)?;
            *rest = tail;
            Some(value)
        }
        let text = |b: &[u8]| String::from_utf8(b.to_vec()).ok();
        let message = match tag {
            b'H' => Message::Heartbeat { instance: u64_(&mut rest)?, nanos: u64_(&mut rest)? },
            b'I' => {
                let origin = u64_(&mut rest)?;
                let resource = text(field(&mut rest)?)?;
                Message::Invalidate { origin, resource, key: field(&mut rest)?.to_vec() }
            }
            b'C' => {
                let origin = u64_(&mut rest)?;
                let resource = if rest.is_empty() { None } else { Some(text(field(&mut rest)?)?) };
                Message::Clear { origin, resource }
            }
            b'R' => return Some(Message::Ready { value_key: rest.to_vec() }),
            b'S' => {
                let origin = u64_(&mut rest)?;
                Message::SessionEnd { origin, id: text(field(&mut rest)?)? }
            }
            _ => return None,
        };
        rest.is_empty().then_some(message)
    }
}

/// The bus task: runs until the tier is dropped or stopped.
pub(crate) async fn run(tier: Weak<Tier>) {
    let started = Instant::now();
    let Some(bound) = tier.upgrade().map(|t| t.settings.invalidation_bound) else { return };
    let beat = bound / 4;
    let mut health = Health { confirmed: None, last_clear: None, started };
    let mut backoff = beat;
    let mut subscriptions = 0u64;
    loop {
        let Some(t) = tier.upgrade() else { return };
        let client = t.client.clone();
        let channel = t.channel.clone();
        let connect_timeout = t.settings.command_timeout.max(beat);
        drop(t);
        let connected = tokio::time::timeout(connect_timeout, async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await;
        let Ok(Ok(mut pubsub)) = connected else {
            tracing::debug!("connscope: Redis bus: cannot connect; retrying");
            let Some(t) = tier.upgrade() else { return };
            health.check(&t, bound);
            drop(t);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
            continue;
        };
        backoff = beat;
        tracing::debug!("connscope: Redis bus: subscribed");
        // After a lost connection, values loaded before this subscription may have missed
        // messages: drop them (a load still in flight is not cached either). The first time,
        // loads waited for the first confirmation, so nothing predates it.
        if subscriptions > 0
            && let Some(t) = tier.upgrade()
        {
            t.clear_locals();
        }
        subscriptions += 1;
        let subscribed = Instant::now();
        let mut stream = pubsub.on_message();
        let mut ticks = tokio::time::interval(beat);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = stream.next() => {
                    let Some(message) = message else {
                        tracing::debug!("connscope: Redis bus: the connection ended");
                        break;
                    };
                    let Some(t) = tier.upgrade() else { return };
                    match Message::decode(message.get_payload_bytes()) {
                        Some(Message::Heartbeat { instance, nanos }) if instance == t.instance => {
                            health.confirmed = Some(started + Duration::from_nanos(nanos));
                        }
                        Some(message) => t.receive(message),
                        None => {}
                    }
                    health.check(&t, bound);
                }
                _ = ticks.tick() => {
                    let Some(t) = tier.upgrade() else { return };
                    let nanos = started.elapsed().as_nanos() as u64;
                    let beat_message = Message::Heartbeat { instance: t.instance, nanos };
                    let sender = std::sync::Arc::clone(&t);
                    drop(tokio::spawn(async move { sender.publish(beat_message).await }));
                    health.check(&t, bound);
                    // Silent for two bounds on a live socket (a hung server): rebuild it.
                    let heard = health.confirmed.map_or(subscribed, |c| c.max(subscribed));
                    if heard.elapsed() > bound * 2 && t.state() == RedisState::Down {
                        tracing::debug!("connscope: Redis bus: silent for two bounds; reconnecting");
                        break;
                    }
                }
            }
        }
        let Some(t) = tier.upgrade() else { return };
        health.check(&t, bound);
        drop(t);
        tokio::time::sleep(beat).await;
    }
}

/// Whether the bus was confirmed within the bound, and what follows from a change.
struct Health {
    confirmed: Option<Instant>,
    last_clear: Option<Instant>,
    started: Instant,
}

impl Health {
    fn check(&mut self, tier: &std::sync::Arc<Tier>, bound: Duration) {
        let now = Instant::now();
        let up = self.confirmed.is_some_and(|c| now.saturating_duration_since(c) <= bound);
        if up {
            let before = tier.set_state(RedisState::Up);
            if before == RedisState::Down {
                tracing::info!(prefix = %tier.settings.prefix, "connscope: Redis is back; the shared tier is in use again");
                tier.warned.store(false, std::sync::atomic::Ordering::Relaxed);
                // Messages may have been missed while away.
                tier.clear_locals();
            }
            tier.retry_pending();
            self.last_clear = None;
            return;
        }
        // Not confirmed within the bound. The first connection gets two bounds.
        if tier.state() == RedisState::Connecting && now.saturating_duration_since(self.started) <= bound * 2
        {
            return;
        }
        if tier.set_state(RedisState::Down) != RedisState::Down {
            bump(&tier.counters.outages);
            if !tier.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    prefix = %tier.settings.prefix,
                    bound = ?bound,
                    "connscope: Redis is unreachable; serving from this instance's own loads (each kept at most the invalidation bound) until it is back"
                );
            }
            tier.clear_locals();
            self.last_clear = Some(now);
        } else if self.last_clear.is_none_or(|c| now.saturating_duration_since(c) >= bound) {
            // Values loaded while away are this instance's own: keep each at most one bound,
            // since invalidations from other instances cannot reach it.
            tier.clear_locals();
            self.last_clear = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Message;

    #[test]
    fn every_message_round_trips_and_garbage_is_ignored() {
        let all = [
            Message::Heartbeat { instance: 7, nanos: 9 },
            Message::Invalidate { origin: 1, resource: "m::f:1".into(), key: vec![0, 255] },
            Message::Clear { origin: 1, resource: Some("m::f:1".into()) },
            Message::Clear { origin: 1, resource: None },
            Message::Ready { value_key: b"p:r:v:k".to_vec() },
            Message::SessionEnd { origin: 3, id: "abc".into() },
        ];
        for m in all {
            assert_eq!(Message::decode(&m.encode()), Some(m));
        }
        for junk in [&b""[..], b"X", b"H\x01", b"I\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"] {
            assert_eq!(Message::decode(junk), None);
        }
    }
}
