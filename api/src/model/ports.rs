//! Which Gateway listeners a gateway serves on which port, as the Gateway API tells ports
//! apart: a route attached to a listener is served on that listener's port only. The
//! gateway's own sockets stand for its home ports (plaintext, 80 by default, and TLS, 443),
//! which also serve Ingresses; a listener on any other port gets a socket of its own.
//!
//! A port serves one kind of connection: on the plaintext home port only HTTP listeners, on
//! the TLS one only HTTPS and TLS listeners. Another port belongs to the oldest Gateway with a
//! listener there: a younger one may share it for the same protocol (HTTP or TLS, told apart
//! by hostname and SNI), never for another, nor a TCP port; so no Gateway can turn another's
//! HTTPS port into plaintext or its HTTP port into a tunnel, take its TCP port, or close it.
//!
//! A ListenerSet's listener comes after every Gateway's own: it may open a port no Gateway has,
//! or join its own Gateway's port for the same protocol, never another Gateway's port, so
//! whoever may add listeners to one Gateway cannot take a port from another.
//!
//! The gateway plans its sockets with it, and the controller the listeners' status.

use std::collections::{BTreeMap, BTreeSet};

use super::GatewayListener;

/// The Gateways whose listeners a port serves, and what connections to it speak.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PortPlan {
    /// What connections begin with.
    pub speaks: Speaks,
    /// `namespace/name` of the Gateways with listeners served there.
    pub gateways: BTreeSet<String>,
    /// The port's place in precedence order (the home ports first, then by the listener that
    /// claimed it): which ports a gateway limited to some opens first.
    pub rank: usize,
}

/// What connections to a port speak, as its listeners' protocol says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Speaks {
    /// HTTP in cleartext (`HTTP` listeners).
    #[default]
    Http,
    /// TLS first (`HTTPS` and `TLS` listeners).
    Tls,
    /// Bytes carried to a TCPRoute's backend as they come (`TCP` listeners).
    Tcp,
}

impl Speaks {
    /// What connections to `listener`'s port speak.
    pub fn of(listener: &GatewayListener) -> Self {
        match (listener.tls, listener.tcp) {
            (true, _) => Speaks::Tls,
            (false, true) => Speaks::Tcp,
            (false, false) => Speaks::Http,
        }
    }
}

/// A listener the gateway does not serve for its port, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unserved {
    /// `namespace/name` of its Gateway.
    pub gateway: String,
    /// The listener's name.
    pub listener: String,
    /// Why, naming the port.
    pub why: String,
}

/// What each port serves, given the home ports `(http, tls)` and the Gateways a gateway
/// `serves`: the home ports always, the others where the listeners are; and the listeners
/// that cannot be served as they ask.
pub fn plan_ports(
    listeners: &[GatewayListener],
    (http, tls): (u16, u16),
    serves: impl Fn(&str) -> bool,
) -> (BTreeMap<u16, PortPlan>, Vec<Unserved>) {
    let mut unserved = Vec::new();
    let mut plan = BTreeMap::from([
        (http, PortPlan::default()),
        (
            tls,
            PortPlan {
                speaks: Speaks::Tls,
                rank: 1,
                ..PortPlan::default()
            },
        ),
    ]);
    // Oldest Gateway first: of two that want one port for different things, it keeps it.
    // ListenerSets' listeners after every Gateway's own (a stable sort keeps their order).
    let mut listeners: Vec<_> = listeners.iter().filter(|l| serves(&l.gateway)).collect();
    listeners.sort_by(|a, b| {
        (a.from_set, &a.created, &a.gateway).cmp(&(b.from_set, &b.created, &b.gateway))
    });
    // The Gateway each port other than the home ones was first given to.
    let mut owners: BTreeMap<u16, &str> = BTreeMap::new();
    for l in listeners {
        let speaks = Speaks::of(l);
        let refuse = |why: String| Unserved {
            gateway: l.gateway.clone(),
            listener: l.name.clone(),
            why,
        };
        if l.port == http || l.port == tls {
            let home_tls = l.port == tls;
            let home = if home_tls { Speaks::Tls } else { Speaks::Http };
            if speaks != home {
                let (socket, wanted) = match home_tls {
                    true => ("TLS", "HTTPS or TLS"),
                    false => ("plaintext", "HTTP"),
                };
                unserved.push(refuse(format!("listener {} of Gateway {} is on port {}, the gateway's {socket} port, which serves {wanted} listeners only: not served", l.name, l.gateway, l.port)));
                continue;
            }
            if let Some(p) = plan.get_mut(&l.port) {
                p.gateways.insert(l.gateway.clone());
            }
            continue;
        }
        if l.from_set && owners.get(&l.port).is_some_and(|o| *o != l.gateway) {
            unserved.push(refuse(format!("listener {} of a ListenerSet of Gateway {} wants port {} of Gateway {}: a ListenerSet may not take another Gateway's port; not served", l.name, l.gateway, l.port, owners[&l.port])));
            continue;
        }
        let fresh = !owners.contains_key(&l.port);
        let owner = *owners.entry(l.port).or_insert(&l.gateway);
        let rank = plan.len();
        let p = plan.entry(l.port).or_insert_with(|| PortPlan {
            speaks,
            rank,
            ..PortPlan::default()
        });
        // Another Gateway may share the port for the same thing, HTTP or TLS (hostnames and
        // SNI tell them apart), never a TCP port (its connections have no names).
        if (owner != l.gateway || (l.from_set && !fresh))
            && (p.speaks != speaks || speaks == Speaks::Tcp)
        {
            unserved.push(refuse(format!("listener {} of Gateway {} wants port {} of Gateway {owner} (for another protocol, or TCP, which one Gateway has alone): not served", l.name, l.gateway, l.port)));
            continue;
        }
        p.gateways.insert(l.gateway.clone());
    }
    (plan, unserved)
}
