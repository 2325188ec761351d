//! Producer ids for idempotent producers, handed out from blocks reserved in the metadata
//! store so no id is given twice across restarts or brokers.

use super::Broker;
use crate::cluster::StoreError;

impl Broker {
    /// A producer id never handed out before (InitProducerId).
    pub async fn next_producer_id(&self) -> Result<i64, StoreError> {
        const BLOCK: i64 = 1000;
        let mut ids = self.producer_ids.lock().await;
        if ids.0 >= ids.1 {
            let first = self.store.allocate_producer_ids(BLOCK).await?;
            *ids = (first, first + BLOCK);
        }
        let id = ids.0;
        ids.0 += 1;
        Ok(id)
    }
}
