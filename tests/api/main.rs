//! Black-box tests of the HTTP API (openapi.yaml, docs/semantics.md): each test runs the real server on
//! `127.0.0.1:0` through [`helpers::spawn_app`] and talks to it over HTTP; a few property tests call
//! the router directly with `oneshot`. One module per area.

#[path = "../common/mod.rs"]
mod common;

mod acquire;
mod concurrency;
mod cookies;
mod errors;
mod expiry;
mod helpers;
mod ids;
mod leases;
mod list;
mod marks;
mod metrics;
mod openapi;
mod per_page;
mod pools;
mod robustness;
mod service;
mod sessions;
mod store;
mod stores_agree;
mod transfer;
