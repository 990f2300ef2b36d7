//! End-to-end tests: the `jaam` binary and the library against real emulators
//! (started by `./scripts/test`). One test binary, one module per topic, to keep
//! the number of SDK-sized links down.

mod bad_input;
mod boxes;
mod certificates;
mod cli;
mod crash;
mod daemon;
mod dashboard;
mod fixtures;
mod fleet;
mod frameworks;
mod hardening;
mod iam_roles;
mod instances;
mod lock;
mod log_groups;
mod previews;
mod refresh_cost;
mod s3_state;
mod security_groups;
mod served;
mod sites;
mod webhooks;
