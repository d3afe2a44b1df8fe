//! The connected TCP clients, for `/stats` and for ids.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Nsqd, lock};
use crate::client::ClientInfo;

/// Connected clients by id, and the next id to give. The map's lock is
/// held for one map operation (or one copy of its values), never across
/// IO or an `.await`.
pub(crate) struct ClientRegistry {
    clients: Mutex<HashMap<u64, Arc<ClientInfo>>>,
    next_id: AtomicU64,
}

impl Default for ClientRegistry {
    fn default() -> Self {
        ClientRegistry {
            clients: Mutex::new(HashMap::new()),
            // nsqd's client ids start at 1.
            next_id: AtomicU64::new(1),
        }
    }
}

impl Nsqd {
    /// A new TCP client's registration for stats.
    pub(crate) fn register_client(&self, info: Arc<ClientInfo>) {
        lock(&self.clients.clients).insert(info.id, info);
    }

    /// The next client id.
    pub(crate) fn next_client_id(&self) -> u64 {
        self.clients.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Forgets a disconnected client.
    pub(crate) fn unregister_client(&self, id: u64) {
        lock(&self.clients.clients).remove(&id);
    }

    /// Every connected client, by id.
    pub(crate) fn clients(&self) -> Vec<Arc<ClientInfo>> {
        let mut clients: Vec<_> = lock(&self.clients.clients).values().cloned().collect();
        clients.sort_by_key(|c| c.id);
        clients
    }
}
