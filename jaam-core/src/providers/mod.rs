//! The built-in providers, one module per resource kind.
//!
//! Each sits behind the cargo feature of its SDK (`aws`, later `github` and
//! `acme`), so an embedder can take the engine alone.

#[cfg(feature = "aws")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws")))]
pub mod aws;

use crate::provider::Registry;

/// A registry with every provider this build has, configured from the
/// environment (for AWS: the standard credential chain, region and
/// `AWS_ENDPOINT_URL`).
pub async fn default_registry() -> Registry {
    #[allow(unused_mut)]
    let mut registry = Registry::new();
    #[cfg(feature = "aws")]
    aws::register(&mut registry, &aws::load_config().await);
    registry
}
