//! The root's children: one actor per file. Each accepts an injected panic for failure drills.

pub mod backup;
pub mod breakers;
pub mod http;
pub mod janitor;
pub mod scheduler;
pub mod store;
