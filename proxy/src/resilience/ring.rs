//! Consistent hashing: a ring of virtual nodes (Karger et al., as in Envoy's `RING_HASH`). A
//! key goes to the first node clockwise from its hash; removing one endpoint moves only the
//! keys that were on it.

use std::{
    hash::{BuildHasher, Hash},
    net::{IpAddr, SocketAddr},
};

use http::HeaderMap;
use weir_api::model::HashKey;

/// Virtual nodes per endpoint: enough for an even spread over a handful of endpoints.
const VNODES: usize = 160;

/// The hash used for both keys and nodes: fixed keys, so every proxy agrees.
pub fn hash<T: Hash + ?Sized>(value: &T) -> u64 {
    std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(value)
}

/// The ring of one cluster.
#[derive(Debug, Default)]
pub struct Ring {
    /// `(hash, endpoint index)`, sorted by hash.
    nodes: Vec<(u64, usize)>,
}

impl Ring {
    /// Builds the ring for `endpoints` (indices refer to this slice).
    pub fn new(endpoints: &[SocketAddr]) -> Self {
        let mut nodes: Vec<(u64, usize)> = endpoints
            .iter()
            .enumerate()
            .flat_map(|(i, addr)| (0..VNODES).map(move |v| (hash(&(addr, v)), i)))
            .collect();
        nodes.sort_unstable();
        Self { nodes }
    }

    /// Endpoint indices in ring order starting at `key`'s position: the first is the key's
    /// home; the rest are where it goes when the home is unavailable.
    pub fn walk(&self, key: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.nodes.partition_point(|&(h, _)| h < key);
        let (before, after) = self.nodes.split_at(start);
        after.iter().chain(before).map(|&(_, i)| i)
    }
}

/// The consistent-hash key of a request, if it has the property the cluster hashes on.
pub fn request_key(key: &HashKey, headers: &HeaderMap, client: IpAddr) -> Option<u64> {
    match key {
        HashKey::Header(name) => headers.get(name.as_str()).map(|v| hash(v.as_bytes())),
        HashKey::Cookie(name) => headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| hash(v)),
        HashKey::SourceIp => Some(hash(&client)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, 0, (i + 1) as u8], 8080)))
            .collect()
    }

    #[test]
    fn removing_one_of_ten_endpoints_keeps_the_other_keys_in_place() {
        let ten = addrs(10);
        let nine: Vec<SocketAddr> = ten[..9].to_vec();
        let (a, b) = (Ring::new(&ten), Ring::new(&nine));
        let keys = 10_000;
        let mut stayed = 0;
        let mut homeless = 0;
        for k in 0..keys {
            let key = hash(&format!("user-{k}"));
            let before = ten[a.walk(key).next().unwrap()];
            let after = nine[b.walk(key).next().unwrap()];
            if before == ten[9] {
                homeless += 1;
            } else if before == after {
                stayed += 1;
            }
        }
        let kept = stayed as f64 / (keys - homeless) as f64;
        assert!(kept >= 0.95, "only {kept:.3} of keys kept their endpoint");
        // And the removed endpoint had about its share, not most of the keys.
        assert!(
            (500..1500).contains(&homeless),
            "{homeless} keys were on the removed endpoint"
        );
        // Overall at least 85% of all keys stayed put.
        assert!(stayed as f64 / keys as f64 >= 0.85);
    }

    #[test]
    fn keys_spread_over_all_endpoints() {
        let ring = Ring::new(&addrs(4));
        let mut counts = [0u32; 4];
        for k in 0..4000 {
            counts[ring.walk(hash(&k)).next().unwrap()] += 1;
        }
        assert!(
            counts.iter().all(|&c| (600..1400).contains(&c)),
            "{counts:?}"
        );
    }
}
