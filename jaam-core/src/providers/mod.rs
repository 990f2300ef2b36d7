//! The built-in providers, one module per resource kind.
//!
//! Each sits behind the cargo feature of its SDK (`aws`, later `github` and
//! `acme`), so an embedder can take the engine alone.

#[cfg(feature = "aws")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws")))]
pub mod aws;

#[cfg(feature = "acme")]
#[cfg_attr(docsrs, doc(cfg(feature = "acme")))]
pub mod acme;

#[cfg(feature = "github")]
#[cfg_attr(docsrs, doc(cfg(feature = "github")))]
pub mod github;

use crate::provider::Registry;

/// A registry with every provider this build has, configured from the
/// environment (for AWS: the standard credential chain, region and
/// `AWS_ENDPOINT_URL`).
pub async fn default_registry() -> Registry {
    #[allow(unused_mut)]
    let mut registry = Registry::new();
    #[cfg(feature = "aws")]
    {
        let config = aws::load_config().await;
        aws::register(&mut registry, &config);
        #[cfg(feature = "acme")]
        registry.register(std::sync::Arc::new(acme::Certificates::new(&config, None)));
        #[cfg(feature = "github")]
        {
            let api = github::Api::from_env();
            registry.register(std::sync::Arc::new(
                aws::ec2::Instances::new(&config, None).with_heads(api.head_resolver()),
            ));
            registry.register(std::sync::Arc::new(github::Webhooks::with_api(
                &config, api,
            )));
        }
    }
    registry
}
