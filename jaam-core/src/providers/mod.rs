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
/// `AWS_ENDPOINT_URL`; for GitHub: `GITHUB_TOKEN` and `GITHUB_API_URL`).
/// The providers' schemas, without loading any cloud configuration (no
/// credentials, region or network): what checking specs needs. Its providers
/// are built on an empty AWS configuration and must not be asked to act.
pub fn schema_registry() -> Registry {
    #[cfg(feature = "aws")]
    {
        let config = aws::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        registry(&config, |heads| heads)
    }
    #[cfg(not(feature = "aws"))]
    Registry::new()
}

/// The providers, configured from the environment (AWS's standard chain).
pub async fn default_registry() -> Registry {
    #[cfg(feature = "aws")]
    {
        registry(&aws::load_config().await, |heads| heads)
    }
    #[cfg(not(feature = "aws"))]
    Registry::new()
}

/// [`default_registry`] with one `config`, each provider built once;
/// `heads` wraps the branch-head resolver the `instance` kind uses (the
/// daemon answers pushed revisions before asking GitHub).
#[cfg(feature = "aws")]
pub fn registry(
    config: &aws::SdkConfig,
    heads: impl FnOnce(Option<aws::ec2::HeadResolver>) -> Option<aws::ec2::HeadResolver>,
) -> Registry {
    Providers::new(config).registry(heads)
}

/// Every provider built once, to hand out registries that share them: each
/// stack a daemon keeps gets a [`Registry`] of the same providers — their
/// AWS and GitHub clients, connection pools, remembered lookups (AMIs, the
/// default VPC) and conditional-request caches — with a branch-head
/// resolver of its own. A thousand stacks cost a thousand small maps, not a
/// thousand sets of clients.
#[cfg(feature = "aws")]
#[derive(Clone)]
pub struct Providers {
    /// All but `instance`.
    shared: Registry,
    instances: aws::ec2::Instances,
    heads: Option<aws::ec2::HeadResolver>,
    /// The GitHub client the providers use.
    #[cfg(feature = "github")]
    github: github::Api,
}

#[cfg(feature = "aws")]
impl Providers {
    /// The providers, on `config` (and, for GitHub, the environment).
    pub fn new(config: &aws::SdkConfig) -> Self {
        let mut shared = Registry::new();
        #[cfg(feature = "github")]
        let api = github::Api::from_env();
        #[cfg(feature = "github")]
        let heads = Some(api.head_resolver());
        #[cfg(not(feature = "github"))]
        let heads = None;
        aws::register_all_but_instances(&mut shared, config);
        #[cfg(feature = "acme")]
        shared.register(std::sync::Arc::new(acme::Certificates::new(config, None)));
        #[cfg(feature = "github")]
        shared.register(std::sync::Arc::new(github::Webhooks::with_api(
            config,
            api.clone(),
        )));
        Self {
            shared,
            #[cfg(feature = "github")]
            instances: aws::ec2::Instances::new(config, None).with_pulls(api.pulls_resolver()),
            #[cfg(not(feature = "github"))]
            instances: aws::ec2::Instances::new(config, None),
            heads,
            #[cfg(feature = "github")]
            github: api,
        }
    }

    /// The GitHub client the providers use (one connection pool and one
    /// cache of conditional answers for everything else that calls GitHub).
    #[cfg(feature = "github")]
    pub fn github(&self) -> &github::Api {
        &self.github
    }

    /// A registry of these providers; `heads` wraps the branch-head
    /// resolver its `instance` kind uses.
    pub fn registry(
        &self,
        heads: impl FnOnce(Option<aws::ec2::HeadResolver>) -> Option<aws::ec2::HeadResolver>,
    ) -> Registry {
        let mut registry = self.shared.clone();
        let instances = self.instances.clone();
        registry.register(std::sync::Arc::new(match heads(self.heads.clone()) {
            Some(heads) => instances.with_heads(heads),
            None => instances,
        }));
        registry
    }
}
