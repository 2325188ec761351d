//! Tests of the replication state machine.
