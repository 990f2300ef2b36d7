//! Secrets in SSM Parameter Store: private keys, certificate chains, ACME
//! account keys and generated webhook secrets live here as `SecureString`
//! parameters, never in state. State keeps only their names.
//!
//! # Paths
//! - `/jaam/<stack>/<address>/<item>` for what belongs to one resource
//!   (`/jaam/web/certificate.www/private_key`), so a stack's secrets can be
//!   granted, listed and removed by prefix.
//! - `/jaam/acme/account/<hash of the directory URL>` for ACME account keys,
//!   shared by every stack that uses the same CA.
//!
//! # Size
//! Standard parameters hold at most 4 KB, and a certificate chain with its
//! intermediates can be more: every write asks for `Intelligent-Tiering`,
//! which stores a value as Standard when it fits and as Advanced (8 KB) only
//! when it does not.
//!
//! # Refresh cost
//! [`Parameters::get_many`] asks for up to 10 names per GetParameters call (the
//! API's limit), whatever the number of resources.

use std::collections::HashMap;

use aws_config::SdkConfig;
use aws_sdk_ssm::Client as SsmClient;
use aws_sdk_ssm::types::{ParameterTier, ParameterType};

use super::{CallCounter, classify};
use crate::addr::ResourceAddr;
use crate::provider::{ErrorKind, ProviderError, Result};
use crate::value::Secret;

/// GetParameters takes at most this many names.
const BATCH: usize = 10;

/// The parameter path of `item` of the resource `addr` in `stack`.
pub fn path(stack: &str, addr: &ResourceAddr, item: &str) -> String {
    format!("/jaam/{stack}/{addr}/{item}")
}

/// A Parameter Store client for secrets.
#[derive(Clone, Debug)]
pub struct Parameters {
    client: SsmClient,
}

impl Parameters {
    /// A client using `config`; `counter` counts every HTTP attempt (tests).
    pub fn new(config: &SdkConfig, counter: Option<CallCounter>) -> Self {
        let builder = super::instrumented!(aws_sdk_ssm::config::Builder::from(config), counter);
        Self {
            client: SsmClient::from_conf(builder.build()),
        }
    }

    /// The SSM client (for SendCommand).
    pub fn client(&self) -> &SsmClient {
        &self.client
    }

    /// The decrypted values of `names` that exist, in batches of ten.
    ///
    /// # Errors
    /// A failed GetParameters call.
    pub async fn get_many(&self, names: &[String]) -> Result<HashMap<String, Secret>> {
        let mut found = HashMap::new();
        for batch in names.chunks(BATCH) {
            let answer = self
                .client
                .get_parameters()
                .set_names(Some(batch.to_vec()))
                .with_decryption(true)
                .send()
                .await
                .map_err(|e| classify("GetParameters", e))?;
            for parameter in answer.parameters() {
                if let (Some(name), Some(value)) = (parameter.name(), parameter.value()) {
                    found.insert(name.to_owned(), Secret::new(value));
                }
            }
        }
        Ok(found)
    }

    /// One decrypted value, or `None` when the parameter does not exist.
    ///
    /// # Errors
    /// A failed GetParameter call other than "not found".
    pub async fn get(&self, name: &str) -> Result<Option<Secret>> {
        match self
            .client
            .get_parameter()
            .name(name)
            .with_decryption(true)
            .send()
            .await
        {
            Ok(answer) => Ok(answer
                .parameter()
                .and_then(|parameter| parameter.value())
                .map(Secret::new)),
            Err(error) => {
                let error = classify("GetParameter", error);
                if error.kind == ErrorKind::NotFound || error.message.contains("ParameterNotFound")
                {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    }

    /// Writes `value` as a SecureString, replacing any earlier value.
    ///
    /// # Errors
    /// A failed PutParameter call.
    pub async fn put(&self, name: &str, value: &Secret, description: &str) -> Result<()> {
        self.client
            .put_parameter()
            .name(name)
            .value(value.expose())
            .r#type(ParameterType::SecureString)
            .tier(ParameterTier::IntelligentTiering)
            .description(description)
            .overwrite(true)
            .send()
            .await
            .map_err(|e| classify("PutParameter", e))?;
        Ok(())
    }

    /// Deletes `names`; names already gone are fine.
    ///
    /// # Errors
    /// A failed DeleteParameters call.
    pub async fn delete(&self, names: &[String]) -> Result<()> {
        for batch in names.chunks(BATCH) {
            self.client
                .delete_parameters()
                .set_names(Some(batch.to_vec()))
                .send()
                .await
                .map_err(|e| classify("DeleteParameters", e))?;
        }
        Ok(())
    }
}

/// A provider error for a secret that could not be decoded (never quoting it).
pub fn malformed(name: &str, what: &str) -> ProviderError {
    ProviderError::new(
        ErrorKind::Invalid,
        format!("parameter `{name}` does not hold {what}"),
    )
}
