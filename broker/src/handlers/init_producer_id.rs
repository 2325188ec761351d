//! InitProducerId: producer ids and epochs for idempotent producers (transactional ones
//! are the transaction coordinator's, `txn.rs`).
//!
//! Ids come from blocks reserved in the metadata store ([`Broker::next_producer_id`]), so
//! no id is handed out twice across restarts or brokers. An idempotent producer always
//! gets a new id, epoch 0, even when it names its current id and epoch (KIP-360, v3+), as
//! Kafka does: bumping the epoch of an id the caller names would let any client fence any
//! producer whose (sequential, guessable) id it knows.

use std::sync::Arc;

use kafka_protocol::ResponseError;
use kafka_protocol::messages::{
    InitProducerIdRequest, InitProducerIdResponse, ProducerId, ResponseKind,
};
use tracing::warn;

use crate::broker::Broker;

pub async fn init_producer_id(
    broker: &Arc<Broker>,
    request: InitProducerIdRequest,
    version: i16,
) -> ResponseKind {
    if let Some(id) = request
        .transactional_id
        .as_ref()
        .filter(|id| !id.0.is_empty())
    {
        return super::txn::init_producer_id(broker, &request, id, version).await;
    }
    let refuse = |code: ResponseError| {
        broker.metrics.error("InitProducerId", code);
        ResponseKind::InitProducerId(
            InitProducerIdResponse::default()
                .with_error_code(code.code())
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
    };
    let (id, epoch) = match broker.next_producer_id().await {
        Ok(id) => (id, 0),
        Err(e) => {
            warn!(error = %e, "cannot reserve producer ids");
            return refuse(ResponseError::CoordinatorNotAvailable);
        }
    };
    ResponseKind::InitProducerId(
        InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(epoch),
    )
}
