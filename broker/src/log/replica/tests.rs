//! Tests of the replication primitives of the log (written separately).
