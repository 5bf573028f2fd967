//! The PostgreSQL engine behind the store.

pub mod cluster;
