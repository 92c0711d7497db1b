//! How many config streams each ServiceAccount holds open. Every stream costs the controller
//! a task and, for a sidecar, a view channel named after the pod its Hello claims; without a
//! cap one authenticated node could make the controller keep state for as many made-up pods
//! as it likes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use crate::{identity::ServiceAccount, lock};

/// Streams one ServiceAccount may hold at once by default: more than the replicas of any one
/// Deployment, far fewer than would strain the controller.
pub const DEFAULT_PER_ACCOUNT: usize = 1000;

/// Open streams per ServiceAccount.
pub struct StreamLimits {
    max: usize,
    open: Arc<Mutex<HashMap<ServiceAccount, usize>>>,
}

/// One open stream, counted until it is dropped.
pub struct StreamSlot {
    open: Arc<Mutex<HashMap<ServiceAccount, usize>>>,
    account: ServiceAccount,
}

impl StreamLimits {
    /// At most `max` streams per ServiceAccount (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            max: max.max(1),
            open: Arc::default(),
        }
    }

    /// The most streams one ServiceAccount may hold.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Counts one more stream for `account`, or `None` when it already holds the most.
    pub fn open(&self, account: &ServiceAccount) -> Option<StreamSlot> {
        let mut open = lock(&self.open);
        let count = open.entry(account.clone()).or_default();
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(StreamSlot {
            open: self.open.clone(),
            account: account.clone(),
        })
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = lock(&self.open);
        if let Some(count) = open.get_mut(&self.account) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.account);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_holds_at_most_its_streams_and_gets_them_back() {
        let limits = StreamLimits::new(2);
        let (web, db): (ServiceAccount, ServiceAccount) =
            ("shop/web".parse().unwrap(), "shop/db".parse().unwrap());
        let first = limits.open(&web).unwrap();
        let _second = limits.open(&web).unwrap();
        assert!(limits.open(&web).is_none(), "a third is refused");
        assert!(limits.open(&db).is_some(), "accounts count apart");
        drop(first);
        assert!(
            limits.open(&web).is_some(),
            "a closed stream frees its slot"
        );
    }
}
