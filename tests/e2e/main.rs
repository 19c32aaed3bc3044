//! End-to-end tests of the `tally` binary's behaviour over HTTP, on the embedded backends.

mod alerts;
mod bad_input;
mod browser;
mod commands;
mod common;
mod compat;
mod connections;
mod crash;
mod dashboards;
mod endpoints;
mod engines;
mod faults;
mod isolation;
mod login;
mod market;
mod money;
mod roles;
mod split;
mod tracker;
mod usage;
