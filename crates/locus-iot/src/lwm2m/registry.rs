//! The registrations an LwM2M server holds (Registration interface, LwM2M
//! 1.0 TS §5.3): Register, Update, De-register and expiry, as a table with
//! the time and the registration ids passed in.
//!
//! A registration lives `lifetime` seconds after its Register or last
//! Update; [`Registry::expire`] removes the ones past that. A Register of
//! an endpoint that is already registered replaces its registration (the
//! client restarted), and the table holds at most the number of
//! registrations it was made with.
//!
//! `A` is the address the client's requests came from, which is where the
//! server sends its own requests; this module never looks inside it.

use thiserror::Error;

use super::query::{RegisterQuery, UpdateQuery};
use super::{Binding, Links, ObjectPath};

/// One client's registration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration<A> {
    /// The id the server gave it: the client updates `/rd/<id>`.
    pub id: String,
    pub endpoint: String,
    pub lifetime_s: u32,
    pub version: String,
    pub binding: Binding,
    pub sms: Option<String>,
    pub queue_mode: bool,
    /// The client's root path (`/` unless it said otherwise).
    pub root: String,
    pub objects: Vec<ObjectPath>,
    /// Where the client is.
    pub addr: A,
    /// When it registered and when it last registered or updated (ms).
    pub registered_ms: u64,
    pub updated_ms: u64,
}

impl<A> Registration<A> {
    /// When the registration expires (ms) unless the client updates it.
    pub fn expires_ms(&self) -> u64 {
        self.updated_ms
            .saturating_add(u64::from(self.lifetime_s).saturating_mul(1000))
    }

    /// Whether the client announced `/object/instance` (by the instance or
    /// by the whole object).
    pub fn announces(&self, object: u16, instance: u16) -> bool {
        self.objects
            .iter()
            .any(|o| o.object == object && o.instance.is_none_or(|i| i == instance))
    }
}

/// Why a registration was not made or changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RegistryError {
    #[error("the server holds {max} registrations, its limit")]
    Full { max: usize },
    #[error("registration id {0:?} is already in use")]
    IdInUse(String),
    #[error("no registration {0:?}")]
    Unknown(String),
}

/// What a Register did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered<A> {
    pub registration: Registration<A>,
    /// The endpoint's earlier registration, which this one replaced.
    pub replaced: Option<Registration<A>>,
}

/// The registrations, by id; at most `max`.
#[derive(Debug, Clone)]
pub struct Registry<A> {
    max: usize,
    by_id: std::collections::BTreeMap<String, Registration<A>>,
}

impl<A: Clone> Registry<A> {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            by_id: Default::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    pub fn get(&self, id: &str) -> Option<&Registration<A>> {
        self.by_id.get(id)
    }

    pub fn by_endpoint(&self, endpoint: &str) -> Option<&Registration<A>> {
        self.by_id.values().find(|r| r.endpoint == endpoint)
    }

    /// Every registration, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Registration<A>> {
        self.by_id.values()
    }

    /// Register a client under `id` (which must be new), replacing the
    /// endpoint's earlier registration.
    pub fn register(
        &mut self,
        id: String,
        query: RegisterQuery,
        links: Links,
        addr: A,
        now_ms: u64,
    ) -> Result<Registered<A>, RegistryError> {
        if self.by_id.contains_key(&id) {
            return Err(RegistryError::IdInUse(id));
        }
        let old = self
            .by_id
            .iter()
            .find(|(_, r)| r.endpoint == query.endpoint)
            .map(|(k, _)| k.clone());
        if old.is_none() && self.by_id.len() >= self.max {
            return Err(RegistryError::Full { max: self.max });
        }
        let replaced = old.and_then(|k| self.by_id.remove(&k));
        let registration = Registration {
            id: id.clone(),
            endpoint: query.endpoint,
            lifetime_s: query.lifetime_s,
            version: query.version,
            binding: query.binding,
            sms: query.sms,
            queue_mode: query.queue_mode,
            root: links.root,
            objects: links.objects,
            addr,
            registered_ms: now_ms,
            updated_ms: now_ms,
        };
        self.by_id.insert(id, registration.clone());
        Ok(Registered {
            registration,
            replaced,
        })
    }

    /// Update a registration: renew it, take the new address, and the
    /// parameters and objects that the Update carries.
    pub fn update(
        &mut self,
        id: &str,
        query: UpdateQuery,
        links: Option<Links>,
        addr: A,
        now_ms: u64,
    ) -> Result<&Registration<A>, RegistryError> {
        let r = self
            .by_id
            .get_mut(id)
            .ok_or_else(|| RegistryError::Unknown(id.to_owned()))?;
        r.updated_ms = now_ms;
        r.addr = addr;
        if let Some(lt) = query.lifetime_s {
            r.lifetime_s = lt;
        }
        if let Some(b) = query.binding {
            r.binding = b;
        }
        if query.sms.is_some() {
            r.sms = query.sms;
        }
        r.queue_mode = query.queue_mode;
        if let Some(l) = links {
            r.root = l.root;
            r.objects = l.objects;
        }
        Ok(r)
    }

    /// Remove a registration (De-register).
    pub fn deregister(&mut self, id: &str) -> Result<Registration<A>, RegistryError> {
        self.by_id
            .remove(id)
            .ok_or_else(|| RegistryError::Unknown(id.to_owned()))
    }

    /// Remove and return the registrations expired at `now_ms`.
    pub fn expire(&mut self, now_ms: u64) -> Vec<Registration<A>> {
        let gone: Vec<String> = self
            .by_id
            .values()
            .filter(|r| r.expires_ms() <= now_ms)
            .map(|r| r.id.clone())
            .collect();
        gone.iter().filter_map(|id| self.by_id.remove(id)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lwm2m::parse_links;
    use crate::lwm2m::query::parse_register;
    use proptest::prelude::*;

    fn query(ep: &str, lt: u32) -> RegisterQuery {
        let o = [format!("ep={ep}"), format!("lt={lt}")];
        parse_register(o.iter().map(|s| s.as_bytes())).unwrap()
    }

    fn links(s: &str) -> Links {
        parse_links(s.as_bytes()).unwrap()
    }

    #[test]
    fn register_update_deregister() {
        let mut reg = Registry::new(4);
        let r = reg
            .register("a".into(), query("dev", 60), links("</3303/0>"), 1u8, 1000)
            .unwrap();
        assert_eq!(r.replaced, None);
        assert_eq!(r.registration.expires_ms(), 61_000);
        assert!(r.registration.announces(3303, 0));
        assert!(!r.registration.announces(3303, 1));
        assert_eq!(reg.by_endpoint("dev").unwrap().id, "a");

        let u = reg
            .update(
                "a",
                UpdateQuery {
                    lifetime_s: Some(10),
                    ..Default::default()
                },
                Some(links("</3303>,</3311/0>")),
                2u8,
                5000,
            )
            .unwrap();
        assert_eq!(u.addr, 2);
        assert_eq!(u.expires_ms(), 15_000);
        assert!(u.announces(3303, 7), "a whole object covers its instances");
        assert!(u.announces(3311, 0));
        assert_eq!(
            reg.update("zz", UpdateQuery::default(), None, 2, 0),
            Err(RegistryError::Unknown("zz".into()))
        );
        assert_eq!(reg.deregister("a").unwrap().endpoint, "dev");
        assert_eq!(reg.deregister("a"), Err(RegistryError::Unknown("a".into())));
        assert!(reg.is_empty());
    }

    #[test]
    fn a_new_register_replaces_the_endpoints_old_one() {
        let mut reg = Registry::new(1);
        reg.register("a".into(), query("dev", 60), links(""), 1u8, 0)
            .unwrap();
        let r = reg
            .register("b".into(), query("dev", 60), links(""), 2u8, 10)
            .unwrap();
        assert_eq!(r.replaced.unwrap().id, "a");
        assert_eq!(reg.len(), 1);
        assert_eq!(
            reg.register("c".into(), query("other", 60), links(""), 3u8, 10),
            Err(RegistryError::Full { max: 1 })
        );
        assert_eq!(
            reg.register("b".into(), query("dev", 60), links(""), 3u8, 10),
            Err(RegistryError::IdInUse("b".into()))
        );
    }

    #[test]
    fn registrations_expire_after_their_lifetime() {
        let mut reg = Registry::new(8);
        reg.register("a".into(), query("a", 1), links(""), (), 0)
            .unwrap();
        reg.register("b".into(), query("b", 5), links(""), (), 0)
            .unwrap();
        assert!(reg.expire(999).is_empty());
        let gone = reg.expire(1000);
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].id, "a");
        reg.update("b", UpdateQuery::default(), None, (), 4000)
            .unwrap();
        assert!(reg.expire(8999).is_empty());
        assert_eq!(reg.expire(9000).len(), 1);
    }

    proptest! {
        /// Whatever happens, the table stays within its limit and holds one
        /// registration per endpoint.
        #[test]
        fn the_table_stays_bounded(ops in proptest::collection::vec((0u8..4, 0u8..6, 1u32..20, 0u64..50_000), 0..80)) {
            let mut reg = Registry::new(3);
            let mut next = 0;
            let mut now = 0u64;
            for (op, ep, lt, dt) in ops {
                now += dt;
                let ids: Vec<String> = reg.iter().map(|r| r.id.clone()).collect();
                match op {
                    0 => {
                        next += 1;
                        let _ = reg.register(format!("r{next}"), query(&format!("e{ep}"), lt), links(""), (), now);
                    }
                    1 => if let Some(id) = ids.get(usize::from(ep) % ids.len().max(1)) {
                        reg.update(id, UpdateQuery::default(), None, (), now).unwrap();
                    },
                    2 => if let Some(id) = ids.first() {
                        reg.deregister(id).unwrap();
                    },
                    _ => {
                        for r in reg.expire(now) {
                            prop_assert!(r.expires_ms() <= now);
                        }
                        prop_assert!(reg.iter().all(|r| r.expires_ms() > now));
                    }
                }
                prop_assert!(reg.len() <= 3);
                let mut eps: Vec<&str> = reg.iter().map(|r| r.endpoint.as_str()).collect();
                eps.sort();
                let n = eps.len();
                eps.dedup();
                prop_assert_eq!(eps.len(), n);
            }
        }
    }
}
