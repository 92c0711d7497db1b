//! Who a caller is: a Kubernetes ServiceAccount, and the SPIFFE ID it gets.

use std::fmt;

/// A ServiceAccount, the unit of identity in the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceAccount {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl ServiceAccount {
    /// Reads the username Kubernetes gives a ServiceAccount (`system:serviceaccount:NS:NAME`),
    /// as in a token's `sub` or a TokenReview's `status.user.username`.
    pub fn from_username(username: &str) -> Option<Self> {
        let rest = username.strip_prefix("system:serviceaccount:")?;
        let (namespace, name) = rest.split_once(':')?;
        let valid = |s: &str| !s.is_empty() && !s.contains([':', '/']);
        (valid(namespace) && valid(name)).then(|| Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    /// `system:serviceaccount:NS:NAME`.
    pub fn username(&self) -> String {
        format!("system:serviceaccount:{}:{}", self.namespace, self.name)
    }

    /// `spiffe://TRUST_DOMAIN/ns/NS/sa/NAME`, the ID its certificates carry.
    pub fn spiffe_id(&self, trust_domain: &str) -> String {
        format!(
            "spiffe://{trust_domain}/ns/{}/sa/{}",
            self.namespace, self.name
        )
    }
}

impl fmt::Display for ServiceAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for ServiceAccount {
    type Err = String;

    /// `NAMESPACE/NAME`, as flags take it.
    fn from_str(s: &str) -> Result<Self, String> {
        Self::from_username(&format!(
            "system:serviceaccount:{}",
            s.replacen('/', ":", 1)
        ))
        .ok_or_else(|| format!("{s:?} is not NAMESPACE/SERVICEACCOUNT"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_and_spiffe_ids() {
        let sa = ServiceAccount::from_username("system:serviceaccount:shop:web").unwrap();
        assert_eq!(
            sa.spiffe_id("cluster.local"),
            "spiffe://cluster.local/ns/shop/sa/web"
        );
        assert_eq!(sa.username(), "system:serviceaccount:shop:web");
        assert_eq!("shop/web".parse::<ServiceAccount>().unwrap(), sa);
        for bad in [
            "system:serviceaccount:shop",
            "system:serviceaccount::web",
            "system:serviceaccount:shop:web:x",
            "system:node:n1",
            "alice",
        ] {
            assert!(ServiceAccount::from_username(bad).is_none(), "{bad}");
        }
        assert!("shop".parse::<ServiceAccount>().is_err());
    }
}
