#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

//! Integration tests: the real application on port 0 with a fresh data directory,
//! and the real binary for signals and crashes. One test binary (link time).

mod access;
mod api;
mod attacks;
mod audit;
mod bad_input;
mod cli;
mod contract;
mod database;
mod executor;
mod helpers;
mod isolation;
mod kinds;
mod mail;
mod openapi;
mod process;
mod queue;
mod scheduler;
mod vault;
