//! `certificate`: a TLS certificate issued through ACME DNS-01, validated with
//! TXT records in Route53, its key and chain kept in SSM Parameter Store.
//!
//! # Arguments
//! - `domains` (list, the first is the common name): **replaces**.
//! - `zone`: the Route53 zone the `_acme-challenge` TXT records go into.
//! - `acme_directory` (default Let's Encrypt production; the staging URL or any
//!   directory works): **replaces**.
//! - `contact_email`: given to the CA when jaam creates the account.
//! - `key_type`: `ecdsa-p256` (default) or `ecdsa-p384`: **replaces**.
//! - `renew_before` (`30d`, `12h`, `90m`, `45s`): renew when this little of the
//!   lifetime remains; by default when a third remains. When the CA publishes
//!   renewal information (ARI, RFC 9773) and its suggested window has started,
//!   that counts too.
//! - `install_on` (instance ids): apply delivers the files to these instances.
//!
//! Computed: `serial`, `fingerprint` (SHA-256 of the leaf, hex), `not_before`,
//! `not_after` (RFC 3339), `private_key_parameter`, `chain_parameter`.
//!
//! # Secrets never in state
//! The private key and the chain are SecureString parameters at
//! `/jaam/<stack>/<address>/private_key` and `/chain`; the cloud id is the
//! prefix `/jaam/<stack>/<address>`. The ACME account key is stored once per
//! directory at `/jaam/acme/account/<hash>` and reused by every later run.
//!
//! # Issuance
//! Order → one `_acme-challenge.<name>` TXT record per name (values of one name
//! share a record set), written with the `record` kind's Route53 code and
//! waited to INSYNC → challenges set ready → order polled with backoff →
//! finalize with a CSR from a fresh key → chain downloaded → TXT records
//! removed (also when validation fails) → parameters written. A failed
//! validation fails the apply with the CA's reason; nothing is recorded.
//!
//! # Renewal as drift
//! Refresh reads the chain from Parameter Store (10 parameters per call) and
//! reports a certificate inside its renewal window as due: the plan shows
//! `~ certificate.x` "(renewal due: expires in N days)" and apply issues a new
//! certificate under the same parameters. A parameter deleted outside jaam makes
//! the certificate absent, so the plan creates it again.
//!
//! # Installation (`install_on`)
//! SSM SendCommand (`AWS-RunShellScript`) makes each instance read the two
//! parameters itself (`aws ssm get-parameter --with-decryption`; its instance
//! profile needs `ssm:GetParameter` on the path), write
//! `/etc/jaam/tls/<name>/fullchain.pem` and `privkey.pem` (mode 0600), then
//! run `/etc/jaam/tls/<name>/on-install` when it exists (a `site` puts one
//! there that switches its nginx to HTTPS), else reload nginx when installed. The key never travels in the command.
//! Apply waits for every instance's result with backoff.
//!
//! # Rate limits
//! A CA that refuses with `rateLimited` (Let's Encrypt: certificates per
//! domain per week, new orders, accounts) says when to come back in
//! `Retry-After`. jaam keeps that header (a wrapper around the HTTPS client,
//! as instant-acme reads it only while polling an order): the error is
//! transient, its message names the time, and the daemon schedules the
//! retry no earlier (`ProviderError::retry_after`) instead of asking again
//! every few minutes and extending the limit.
//!
//! # Decisions
//! - A replacement deletes the old parameters before issuing (both objects share
//!   the address's parameter path); files already installed keep serving.
//! - Certificates are not revoked on delete: they expire on their own, and a
//!   revocation the CA counts against rate limits is a user's decision.
//! - The HTTPS client trusts the system roots; `JAAM_ACME_ROOT_CA` names one
//!   extra PEM root instead (a test CA such as Pebble's).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_sdk_route53::types::ChangeAction;
use chrono::{DateTime, Utc};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use sha2::{Digest, Sha256};

use super::aws::CallCounter;
use super::aws::parameters::{self, Parameters};
use super::aws::route53::Records;
use crate::provider::{
    Context, ErrorKind, Observed, Owner, Provider, ProviderError, RefreshTarget, Result, Rewrite,
};
use crate::schema::{Attribute, ReplaceOrder, Schema, Type};
use crate::value::{Attrs, Secret, Value, string_list};

/// Let's Encrypt's production directory, the default.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The key types jaam generates.
pub const KEY_TYPES: [&str; 2] = ["ecdsa-p256", "ecdsa-p384"];

/// How long to wait for the CA to validate and issue.
const ORDER_POLL: RetryPolicy = RetryPolicy::new()
    .initial_delay(Duration::from_millis(250))
    .backoff(2.0)
    .timeout(Duration::from_secs(300));

fn check_key_type(value: &Value) -> Result<(), String> {
    crate::schema::one_of(value, &KEY_TYPES, "a key type jaam generates")
}

fn check_domains(value: &Value) -> Result<(), String> {
    let Value::List(items) = value else {
        return Ok(());
    };
    if items.is_empty() {
        return Err("a certificate needs at least one domain".to_owned());
    }
    for item in items {
        let Some(name) = item.as_str() else { continue };
        let bare = name.strip_prefix("*.").unwrap_or(name);
        let valid = !bare.is_empty()
            && bare.len() <= 253
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid {
            return Err(format!("`{name}` is not a domain name"));
        }
    }
    Ok(())
}

fn check_duration(value: &Value) -> Result<(), String> {
    match value.as_str() {
        None => Ok(()),
        Some(text) => parse_duration(text).map(|_| ()).ok_or_else(|| {
            format!("`{text}` is not a duration; write a number and a unit: 30d, 12h, 90m or 45s")
        }),
    }
}

/// Parses `30d`, `12h`, `90m`, `45s`.
pub fn parse_duration(text: &str) -> Option<chrono::Duration> {
    let text = text.trim();
    let split = text.len().checked_sub(1)?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.trim().parse().ok().filter(|n| *n >= 0)?;
    match unit {
        "d" => chrono::Duration::try_days(number),
        "h" => chrono::Duration::try_hours(number),
        "m" => chrono::Duration::try_minutes(number),
        "s" => chrono::Duration::try_seconds(number),
        _ => None,
    }
}

/// The `certificate` schema.
pub fn schema() -> Schema {
    Schema {
        kind: "certificate",
        attributes: vec![
            Attribute::required("domains", Type::List(Box::new(Type::String)))
                .force_new()
                .checked(check_domains),
            Attribute::required("zone", Type::String),
            Attribute::optional("acme_directory", Type::String)
                .default_value(LETS_ENCRYPT)
                .force_new(),
            Attribute::optional("contact_email", Type::String),
            Attribute::optional("key_type", Type::String)
                .default_value("ecdsa-p256")
                .force_new()
                .checked(check_key_type),
            Attribute::optional("renew_before", Type::String).checked(check_duration),
            Attribute::optional("install_on", Type::List(Box::new(Type::String))),
            Attribute::computed("serial", Type::String),
            Attribute::computed("fingerprint", Type::String),
            Attribute::computed("not_before", Type::String),
            Attribute::computed("not_after", Type::String),
            Attribute::computed("private_key_parameter", Type::String),
            Attribute::computed("chain_parameter", Type::String),
        ],
        replace_order: ReplaceOrder::DeleteThenCreate,
        adoptable: true,
        in_flight_grace: Duration::ZERO,
    }
}

/// What jaam reads from an issued chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issued {
    /// The leaf's serial number, hex with colons.
    pub serial: String,
    /// SHA-256 of the leaf's DER, hex.
    pub fingerprint: String,
    /// Validity start.
    pub not_before: DateTime<Utc>,
    /// Validity end.
    pub not_after: DateTime<Utc>,
    /// The leaf's DNS subject alternative names.
    pub names: Vec<String>,
    /// The leaf's DER.
    pub leaf: Vec<u8>,
}

/// Reads the leaf (first certificate) of a PEM chain.
///
/// # Errors
/// A message when the text holds no parsable certificate.
pub fn inspect_chain(pem: &str) -> std::result::Result<Issued, String> {
    let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let leaf = block.contents.clone();
    let (_, certificate) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let time = |t: x509_parser::time::ASN1Time| {
        DateTime::<Utc>::from_timestamp(t.timestamp(), 0).unwrap_or_default()
    };
    let names = certificate
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(Issued {
        serial: certificate.raw_serial_as_string(),
        fingerprint: hex::encode(Sha256::digest(&leaf)),
        not_before: time(certificate.validity().not_before),
        not_after: time(certificate.validity().not_after),
        names,
        leaf,
    })
}

/// Why a certificate issued for `not_before..not_after` should be renewed at
/// `now`, or `None`. `renew_before` defaults to a third of the lifetime.
pub fn renewal_due(
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
    renew_before: Option<chrono::Duration>,
    now: DateTime<Utc>,
) -> Option<String> {
    let lead = renew_before.unwrap_or_else(|| (not_after - not_before) / 3);
    if now < not_after - lead {
        return None;
    }
    let left = not_after - now;
    Some(if left <= chrono::Duration::zero() {
        format!("renewal due: expired {} ago", human(-left))
    } else {
        format!("renewal due: expires in {}", human(left))
    })
}

fn human(span: chrono::Duration) -> String {
    let plural = |n: i64, unit: &str| format!("{n} {unit}{}", if n == 1 { "" } else { "s" });
    if span.num_days() >= 2 {
        plural(span.num_days(), "day")
    } else if span.num_hours() >= 2 {
        plural(span.num_hours(), "hour")
    } else if span.num_minutes() >= 2 {
        plural(span.num_minutes(), "minute")
    } else {
        plural(span.num_seconds(), "second")
    }
}

fn text<'a>(attributes: &'a Attrs, name: &str) -> Option<&'a str> {
    attributes.get(name).and_then(Value::as_str)
}

/// The `certificate` provider.
pub struct Certificates {
    schema: Schema,
    records: Records,
    parameters: Parameters,
    region: Option<String>,
    root_ca: Option<PathBuf>,
    /// Accounts by directory URL, loaded or created once per process. A
    /// tokio mutex: creating an account is awaited while it is held, so two
    /// certificates of one apply never register two accounts.
    accounts: tokio::sync::Mutex<HashMap<String, Account>>,
    /// The `Retry-After` of the CA's last error answer (see [`RetryAfterWatch`]).
    /// One slot for the provider: certificates applied at once share it, so
    /// a rate limit seen by one may be reported by another's error, which is
    /// right for per-account limits and harmless for the rest (a later time).
    retry_after: std::sync::Arc<std::sync::Mutex<Option<std::time::SystemTime>>>,
}

/// The HTTPS client instant-acme would build (the system's roots, or one PEM
/// root instead), built here so it can be wrapped.
fn https_client(
    root: Option<&std::path::Path>,
) -> std::result::Result<Box<dyn instant_acme::HttpClient>, String> {
    use hyper_rustls::HttpsConnectorBuilder;
    let builder = match root {
        Some(path) => {
            use rustls_pki_types::pem::PemObject as _;
            let der = rustls_pki_types::CertificateDer::from_pem_file(path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(der)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(roots)
                    .with_no_client_auth(),
            )
        }
        None => HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| e.to_string())?,
    };
    let client: hyper_util::client::legacy::Client<_, instant_acme::BodyWrapper<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(builder.https_only().enable_http1().enable_http2().build());
    Ok(Box::new(client))
}

/// Remembers the `Retry-After` of the CA's error answers: instant-acme 0.8
/// reads that header only while polling an order, not on a problem such as
/// `rateLimited` (RFC 8555 §6.6), which is where a CA sends it.
struct RetryAfterWatch {
    inner: Box<dyn instant_acme::HttpClient>,
    seen: std::sync::Arc<std::sync::Mutex<Option<std::time::SystemTime>>>,
}

impl instant_acme::HttpClient for RetryAfterWatch {
    fn request(
        &self,
        request: http::Request<instant_acme::BodyWrapper<bytes::Bytes>>,
    ) -> std::pin::Pin<
        Box<
            dyn std::future::Future<
                    Output = std::result::Result<instant_acme::BytesResponse, instant_acme::Error>,
                > + Send,
        >,
    > {
        let answer = self.inner.request(request);
        let seen = std::sync::Arc::clone(&self.seen);
        Box::pin(async move {
            let answer = answer.await?;
            let status = answer.parts.status;
            if (status.is_client_error() || status.is_server_error())
                && let Some(at) = answer
                    .parts
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|value| value.to_str().ok())
                    .and_then(parse_retry_after)
            {
                *seen.lock().expect("retry_after") = Some(at);
            }
            Ok(answer)
        })
    }
}

/// `Retry-After`: seconds, or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &str) -> Option<std::time::SystemTime> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(std::time::SystemTime::now() + Duration::from_secs(seconds));
    }
    DateTime::parse_from_rfc2822(value)
        .ok()
        .map(|at| std::time::SystemTime::from(at.with_timezone(&Utc)))
}

impl Certificates {
    /// A provider using `config`; `counter` counts every AWS HTTP attempt (tests).
    /// `JAAM_ACME_ROOT_CA` names a PEM root to trust instead of the system roots.
    pub fn new(config: &SdkConfig, counter: Option<CallCounter>) -> Self {
        Self {
            schema: schema(),
            records: Records::new(config, counter.clone()),
            parameters: Parameters::new(config, counter),
            region: config.region().map(ToString::to_string),
            root_ca: std::env::var_os("JAAM_ACME_ROOT_CA").map(PathBuf::from),
            accounts: tokio::sync::Mutex::default(),
            retry_after: std::sync::Arc::default(),
        }
    }

    /// An ACME error as a provider error. A `rateLimited` problem is
    /// transient and carries the `Retry-After` the CA sent with it, so the
    /// daemon does not ask again before then (the message says when).
    fn acme_error(&self, step: &str, error: instant_acme::Error) -> ProviderError {
        let limited = matches!(&error, instant_acme::Error::Api(problem)
            if problem.r#type.as_deref().is_some_and(|t| t.ends_with(":rateLimited")));
        let kind = match &error {
            _ if limited => ErrorKind::Transient,
            instant_acme::Error::Api(_) => ErrorKind::Invalid,
            instant_acme::Error::Hyper(_) | instant_acme::Error::Timeout(_) => ErrorKind::Transient,
            _ => ErrorKind::Other,
        };
        let retry_after = limited
            .then(|| self.retry_after.lock().expect("retry_after").take())
            .flatten()
            .map(DateTime::<Utc>::from);
        let mut message = format!("ACME {step}: {error}");
        if let Some(at) = retry_after {
            let _ = std::fmt::Write::write_fmt(
                &mut message,
                format_args!(
                    "; the CA asks not to retry before {}",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                ),
            );
        }
        let error = ProviderError::new(kind, message).with_source(error);
        match retry_after {
            Some(at) => error.with_retry_after(at),
            None => error,
        }
    }

    fn account_parameter(directory: &str) -> String {
        let hash = hex::encode(Sha256::digest(directory.as_bytes()));
        format!("/jaam/acme/account/{}", &hash[..16])
    }

    fn builder(&self) -> Result<instant_acme::AccountBuilder> {
        let inner = https_client(self.root_ca.as_deref()).map_err(|message| {
            ProviderError::new(ErrorKind::Invalid, format!("ACME client set-up: {message}"))
        })?;
        Ok(Account::builder_with_http(Box::new(RetryAfterWatch {
            inner,
            seen: std::sync::Arc::clone(&self.retry_after),
        })))
    }

    /// The account for `directory`: cached, else loaded from Parameter Store,
    /// else (when `create`) registered with the CA and stored.
    async fn account(
        &self,
        directory: &str,
        contact: Option<&str>,
        create: bool,
    ) -> Result<Option<Account>> {
        let mut accounts = self.accounts.lock().await;
        if let Some(account) = accounts.get(directory) {
            return Ok(Some(account.clone()));
        }
        let name = Self::account_parameter(directory);
        let account = match self.parameters.get(&name).await? {
            Some(stored) => {
                let credentials: AccountCredentials = serde_json::from_str(stored.expose())
                    .map_err(|_| parameters::malformed(&name, "ACME account credentials"))?;
                tracing::debug!(directory, parameter = %name, "reusing the stored ACME account");
                self.builder()?
                    .from_credentials(credentials)
                    .await
                    .map_err(|e| self.acme_error("account", e))?
            }
            None if create => {
                let contact: Vec<String> = contact
                    .map(|email| vec![format!("mailto:{email}")])
                    .unwrap_or_default();
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = self
                    .builder()?
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        directory.to_owned(),
                        None,
                    )
                    .await
                    .map_err(|e| self.acme_error("new account", e))?;
                let stored = serde_json::to_string(&credentials).map_err(|e| {
                    ProviderError::new(ErrorKind::Other, format!("encoding the account: {e}"))
                })?;
                self.parameters
                    .put(&name, &Secret::new(stored), "jaam ACME account key")
                    .await?;
                tracing::info!(directory, parameter = %name, "created an ACME account");
                account
            }
            None => return Ok(None),
        };
        accounts.insert(directory.to_owned(), account.clone());
        Ok(Some(account))
    }

    /// Runs one order to a certificate: returns the key (PEM) and the chain.
    async fn issue(&self, attributes: &Attrs) -> Result<(Secret, String)> {
        let domains = string_list(attributes.get("domains"));
        let zone = text(attributes, "zone").unwrap_or_default();
        let directory = text(attributes, "acme_directory").unwrap_or(LETS_ENCRYPT);
        let account = self
            .account(directory, text(attributes, "contact_email"), true)
            .await?
            .expect("created when missing");
        let identifiers: Vec<Identifier> = domains.iter().cloned().map(Identifier::Dns).collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| self.acme_error("new order", e))?;

        // Challenge values by TXT name (a wildcard and its apex share one name).
        let mut txt: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization =
                authorization.map_err(|e| self.acme_error("authorization", e))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => {
                    return Err(ProviderError::new(
                        ErrorKind::Invalid,
                        format!(
                            "ACME authorization for {} is {status:?}",
                            authorization.identifier()
                        ),
                    ));
                }
            }
            let challenge = authorization
                .challenge(ChallengeType::Dns01)
                .ok_or_else(|| {
                    ProviderError::new(ErrorKind::Invalid, "the CA offers no dns-01 challenge")
                })?;
            let Identifier::Dns(name) = challenge.identifier().identifier else {
                continue;
            };
            txt.entry(format!("_acme-challenge.{name}"))
                .or_default()
                .push(challenge.key_authorization().dns_value());
        }

        let zone_id = self.records.zone_id(zone).await?;
        let record = |name: &str, values: &[String]| -> Attrs {
            Attrs::from([
                ("name".to_owned(), Value::from(name)),
                ("type".to_owned(), Value::from("TXT")),
                ("ttl".to_owned(), Value::Int(60)),
                (
                    "values".to_owned(),
                    Value::List(values.iter().map(|v| Value::from(v.as_str())).collect()),
                ),
            ])
        };
        for (name, values) in &txt {
            self.records
                .change(&zone_id, ChangeAction::Upsert, &record(name, values))
                .await?;
        }
        let validated = self.validate(&mut order).await;
        // Clean up the TXT records whatever validation said.
        for (name, values) in &txt {
            if let Err(error) = self
                .records
                .change(&zone_id, ChangeAction::Delete, &record(name, values))
                .await
            {
                tracing::warn!(record = %name, %error, "could not remove an ACME challenge record");
            }
        }
        validated?;

        let algorithm = match text(attributes, "key_type") {
            Some("ecdsa-p384") => &rcgen::PKCS_ECDSA_P384_SHA384,
            _ => &rcgen::PKCS_ECDSA_P256_SHA256,
        };
        let key = rcgen::KeyPair::generate_for(algorithm).map_err(|e| {
            ProviderError::new(ErrorKind::Other, format!("generating the key: {e}"))
        })?;
        let mut params = rcgen::CertificateParams::new(domains.clone()).map_err(|e| {
            ProviderError::new(ErrorKind::Invalid, format!("certificate names: {e}"))
        })?;
        params.distinguished_name = rcgen::DistinguishedName::new();
        if let Some(first) = domains.first() {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, first.as_str());
        }
        let csr = params
            .serialize_request(&key)
            .map_err(|e| ProviderError::new(ErrorKind::Other, format!("building the CSR: {e}")))?;
        order
            .finalize_csr(csr.der())
            .await
            .map_err(|e| self.acme_error("finalize", e))?;
        let chain = order
            .poll_certificate(&ORDER_POLL)
            .await
            .map_err(|e| self.acme_error("certificate download", e))?;
        Ok((Secret::new(key.serialize_pem()), chain))
    }

    /// Sets every pending challenge ready and waits for the order to be ready;
    /// on failure, the error carries the CA's reason per name.
    async fn validate(&self, order: &mut instant_acme::Order) -> Result<()> {
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization =
                authorization.map_err(|e| self.acme_error("authorization", e))?;
            if authorization.status != AuthorizationStatus::Pending {
                continue;
            }
            if let Some(mut challenge) = authorization.challenge(ChallengeType::Dns01) {
                challenge
                    .set_ready()
                    .await
                    .map_err(|e| self.acme_error("challenge", e))?;
            }
        }
        let status = order
            .poll_ready(&ORDER_POLL)
            .await
            .map_err(|e| self.acme_error("validation", e));
        if matches!(status, Ok(OrderStatus::Ready)) {
            return Ok(());
        }
        // Collect the CA's reasons from the challenges.
        let mut reasons = Vec::new();
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let Ok(mut authorization) = authorization else {
                continue;
            };
            let _ = authorization.refresh().await;
            let name = authorization.identifier().to_string();
            for challenge in &authorization.challenges {
                if let Some(problem) = &challenge.error {
                    reasons.push(format!(
                        "{name}: {}",
                        problem.detail.as_deref().unwrap_or("validation failed")
                    ));
                }
            }
        }
        let mut message = match status {
            Err(error) => error.message,
            Ok(status) => format!("ACME order is {status:?}"),
        };
        if !reasons.is_empty() {
            message = format!("{message}: {}", reasons.join("; "));
        }
        Err(ProviderError::new(ErrorKind::Invalid, message))
    }

    /// Delivers the files to `instances` over SSM and waits for every result.
    async fn install(&self, name: &str, id: &str, instances: &[String]) -> Result<()> {
        if instances.is_empty() {
            return Ok(());
        }
        let region = self
            .region
            .as_deref()
            .map(|region| format!(" --region {region}"))
            .unwrap_or_default();
        let dir = format!("/etc/jaam/tls/{name}");
        let script = vec![
            "set -eu".to_owned(),
            "umask 077".to_owned(),
            format!("install -d -m 0700 {dir}"),
            format!(
                "aws ssm get-parameter{region} --with-decryption --name {id}/chain --query Parameter.Value --output text > {dir}/fullchain.pem.new"
            ),
            format!(
                "aws ssm get-parameter{region} --with-decryption --name {id}/private_key --query Parameter.Value --output text > {dir}/privkey.pem.new"
            ),
            format!("mv {dir}/fullchain.pem.new {dir}/fullchain.pem"),
            format!("mv {dir}/privkey.pem.new {dir}/privkey.pem"),
            // A site installs a hook that switches its nginx to HTTPS.
            format!(
                "if [ -x {dir}/on-install ]; then {dir}/on-install; \
                 elif command -v nginx >/dev/null 2>&1; then nginx -t && systemctl reload nginx; fi"
            ),
        ];
        super::aws::ssm::send_command(
            self.parameters.client(),
            instances,
            &format!("jaam: install certificate {name}"),
            script,
            super::aws::ssm::COMMAND,
        )
        .await
        .map(|_| ())
    }

    fn observed(
        &self,
        context: &Context,
        addr: &str,
        id: &str,
        arguments: &Attrs,
        issued: &Issued,
    ) -> Observed {
        let mut attributes: Attrs = self
            .schema
            .arguments()
            .filter_map(|attribute| {
                let value = arguments.get(attribute.name)?;
                Some((attribute.name.to_owned(), value.clone()))
            })
            .collect();
        let rfc3339 = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        for (name, value) in [
            ("serial", issued.serial.clone()),
            ("fingerprint", issued.fingerprint.clone()),
            ("not_before", rfc3339(issued.not_before)),
            ("not_after", rfc3339(issued.not_after)),
            ("private_key_parameter", format!("{id}/private_key")),
            ("chain_parameter", format!("{id}/chain")),
        ] {
            attributes.insert(name.to_owned(), Value::String(value));
        }
        let renew_before = text(arguments, "renew_before").and_then(parse_duration);
        Observed {
            id: id.to_owned(),
            attributes,
            owner: Some(Owner {
                stack: context.stack.clone(),
                addr: addr.to_owned(),
                intent: None,
            }),
            due: renewal_due(
                issued.not_before,
                issued.not_after,
                renew_before,
                Utc::now(),
            ),
        }
    }

    /// Issues, stores and installs; the common body of create and renewal.
    async fn issue_and_store(
        &self,
        context: &Context,
        addr: &str,
        id: &str,
        attributes: &Attrs,
    ) -> Result<Observed> {
        let (key, chain) = self.issue(attributes).await?;
        let issued = inspect_chain(&chain).map_err(|e| {
            ProviderError::new(
                ErrorKind::Other,
                format!("the CA's chain is unreadable: {e}"),
            )
        })?;
        self.parameters
            .put(
                &format!("{id}/chain"),
                &Secret::new(chain),
                "jaam certificate chain",
            )
            .await?;
        self.parameters
            .put(
                &format!("{id}/private_key"),
                &key,
                "jaam certificate private key",
            )
            .await?;
        tracing::info!(certificate = addr, serial = %issued.serial, not_after = %issued.not_after, "issued a certificate");
        Ok(self.observed(context, addr, id, attributes, &issued))
    }
}

/// The address part of a certificate's name on disk (`certificate.www` → `www`).
fn file_name(addr: &str) -> String {
    addr.split_once('.')
        .map_or(addr, |(_, name)| name)
        .replace(['/', ' '], "_")
}

#[async_trait]
impl Provider for Certificates {
    fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Checks at plan time, before any ACME order is opened, that the zone
    /// exists and holds every domain's `_acme-challenge` name.
    async fn prepare(&self, _context: &Context, desired: &[&Attrs]) -> Result<Vec<Rewrite>> {
        for attributes in desired {
            let Some(zone) = text(attributes, "zone") else {
                continue;
            };
            let zone_domain = self.records.zone_domain(zone).await?;
            for domain in string_list(attributes.get("domains")) {
                let name = super::aws::route53::fqdn(domain.trim_start_matches("*."));
                let inside = name == zone_domain || name.ends_with(&format!(".{zone_domain}"));
                if !inside {
                    return Err(ProviderError::new(
                        ErrorKind::Invalid,
                        format!(
                            "`{domain}` is not in zone `{zone}`: its DNS-01 challenge record \
                             cannot be written there; name the zone that holds it"
                        ),
                    ));
                }
            }
        }
        Ok(Vec::new())
    }

    fn prepares(&self) -> bool {
        true
    }

    async fn refresh(
        &self,
        context: &Context,
        targets: &[RefreshTarget<'_>],
    ) -> Result<Vec<Option<Observed>>> {
        let ids: Vec<String> = targets
            .iter()
            .map(|target| match target.id {
                Some(id) => id.to_owned(),
                None => format!("/jaam/{}/{}", context.stack, target.addr),
            })
            .collect();
        let names: Vec<String> = ids
            .iter()
            .flat_map(|id| [format!("{id}/chain"), format!("{id}/private_key")])
            .collect();
        let found = self.parameters.get_many(&names).await?;
        let mut answers = Vec::with_capacity(targets.len());
        for (target, id) in targets.iter().zip(&ids) {
            let (Some(chain), Some(_key)) = (
                found.get(&format!("{id}/chain")),
                found.get(&format!("{id}/private_key")),
            ) else {
                answers.push(None);
                continue;
            };
            let issued = inspect_chain(chain.expose())
                .map_err(|_| parameters::malformed(&format!("{id}/chain"), "a certificate"))?;
            let mut observed = self.observed(
                context,
                &target.addr.to_string(),
                id,
                target.attributes,
                &issued,
            );
            if observed.due.is_none() {
                observed.due = self.ari_due(target.attributes, &issued).await;
            }
            answers.push(Some(observed));
        }
        Ok(answers)
    }

    async fn create(
        &self,
        context: &Context,
        owner: &Owner,
        attributes: &Attrs,
    ) -> Result<Observed> {
        let id = format!("/jaam/{}/{}", context.stack, owner.addr);
        let observed = self
            .issue_and_store(context, &owner.addr, &id, attributes)
            .await?;
        self.install(
            &file_name(&owner.addr),
            &id,
            &string_list(attributes.get("install_on")),
        )
        .await?;
        Ok(observed)
    }

    async fn update(
        &self,
        context: &Context,
        owner: &Owner,
        id: &str,
        prior: &Attrs,
        attributes: &Attrs,
        changed: &[String],
    ) -> Result<Observed> {
        let window = |name: &str| {
            text(prior, name)
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
        };
        let due = match (window("not_before"), window("not_after")) {
            (Some(not_before), Some(not_after)) => renewal_due(
                not_before,
                not_after,
                text(attributes, "renew_before").and_then(parse_duration),
                Utc::now(),
            ),
            _ => Some("no recorded validity".to_owned()),
        };
        // No changed argument means the plan found the certificate due (by
        // window or by the CA's renewal information).
        let renew = changed.is_empty() || due.is_some();
        let observed = if renew {
            self.issue_and_store(context, &owner.addr, id, attributes)
                .await?
        } else {
            // The certificate itself is unchanged: the new arguments over what
            // refresh read of it.
            let mut updated = prior.clone();
            for attribute in self.schema.arguments() {
                let value = attributes
                    .get(attribute.name)
                    .cloned()
                    .unwrap_or(Value::Null);
                updated.insert(attribute.name.to_owned(), value);
            }
            Observed {
                id: id.to_owned(),
                attributes: updated,
                owner: None,
                due: None,
            }
        };
        if renew || changed.iter().any(|name| name == "install_on") {
            self.install(
                &file_name(&owner.addr),
                id,
                &string_list(attributes.get("install_on")),
            )
            .await?;
        }
        Ok(observed)
    }

    async fn delete(&self, _context: &Context, id: &str, _prior: &Attrs) -> Result<()> {
        self.parameters
            .delete(&[format!("{id}/private_key"), format!("{id}/chain")])
            .await
    }

    async fn import(&self, context: &Context, id: &str) -> Result<Observed> {
        let names = [format!("{id}/chain"), format!("{id}/private_key")];
        let found = self.parameters.get_many(&names).await?;
        let (Some(chain), Some(_)) = (found.get(&names[0]), found.get(&names[1])) else {
            return Err(ProviderError::new(
                ErrorKind::NotFound,
                format!("no certificate parameters under `{id}`"),
            ));
        };
        let issued = inspect_chain(chain.expose())
            .map_err(|_| parameters::malformed(&names[0], "a certificate"))?;
        let arguments = Attrs::from([(
            "domains".to_owned(),
            Value::List(
                issued
                    .names
                    .iter()
                    .map(|n| Value::from(n.as_str()))
                    .collect(),
            ),
        )]);
        let addr = id.rsplit('/').next().unwrap_or(id);
        Ok(self.observed(context, addr, id, &arguments, &issued))
    }

    async fn list_owned(&self, _context: &Context) -> Result<Vec<Observed>> {
        // Parameters carry no tags; their path is the ownership. `jaam gc`
        // cannot report certificates.
        Ok(Vec::new())
    }
}

impl Certificates {
    /// Whether the CA's renewal information (ARI) says to renew now. Best
    /// effort: a CA without ARI, an account not stored yet or an unreachable
    /// CA leave the decision to the validity window.
    async fn ari_due(&self, arguments: &Attrs, issued: &Issued) -> Option<String> {
        let directory = text(arguments, "acme_directory").unwrap_or(LETS_ENCRYPT);
        let account = match self.account(directory, None, false).await {
            Ok(Some(account)) => account,
            Ok(None) => return None,
            Err(error) => {
                tracing::debug!(%error, "no ACME account for renewal information");
                return None;
            }
        };
        let der = rustls_pki_types_der(&issued.leaf);
        let identifier = instant_acme::CertificateIdentifier::try_from(&der).ok()?;
        match account.renewal_info(&identifier).await {
            Ok((info, _)) => {
                let start = info.suggested_window.start.unix_timestamp();
                (Utc::now().timestamp() >= start)
                    .then(|| "renewal due: the CA's renewal window has started".to_owned())
            }
            Err(instant_acme::Error::Unsupported(_)) => None,
            Err(error) => {
                tracing::warn!(%error, "could not read the CA's renewal information");
                None
            }
        }
    }
}

fn rustls_pki_types_der(der: &[u8]) -> rustls::pki_types::CertificateDer<'static> {
    rustls::pki_types::CertificateDer::from(der.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A CA that refuses new accounts as Let's Encrypt does when a limit is
    /// hit: 429, a `rateLimited` problem and `Retry-After` (RFC 8555 §6.6).
    struct LimitedCa;

    impl instant_acme::HttpClient for LimitedCa {
        fn request(
            &self,
            request: http::Request<instant_acme::BodyWrapper<bytes::Bytes>>,
        ) -> std::pin::Pin<
            Box<
                dyn std::future::Future<
                        Output = std::result::Result<
                            instant_acme::BytesResponse,
                            instant_acme::Error,
                        >,
                    > + Send,
            >,
        > {
            let path = request.uri().path().to_owned();
            Box::pin(async move {
                let answer = http::Response::builder().header("Replay-Nonce", "nonce-1");
                let answer = match path.as_str() {
                    "/directory" => answer.status(200).body(
                        serde_json::json!({
                            "newNonce": "https://ca.test/nonce",
                            "newAccount": "https://ca.test/account",
                            "newOrder": "https://ca.test/order",
                        })
                        .to_string()
                        .into_bytes(),
                    ),
                    "/nonce" => answer.status(200).body(Vec::new()),
                    _ => answer
                        .status(429)
                        .header("content-type", "application/problem+json")
                        .header("Retry-After", "3600")
                        .body(
                            serde_json::json!({
                                "type": "urn:ietf:params:acme:error:rateLimited",
                                "detail": "too many new registrations from this IP",
                                "status": 429,
                            })
                            .to_string()
                            .into_bytes(),
                        ),
                };
                let answer = answer.expect("a response");
                let (parts, body) = answer.into_parts();
                Ok(instant_acme::BytesResponse::from(
                    http::Response::from_parts(
                        parts,
                        instant_acme::BodyWrapper::<bytes::Bytes>::from(body),
                    ),
                ))
            })
        }
    }

    /// Issue 13, item 6: a `rateLimited` answer is transient and carries the
    /// CA's `Retry-After`, so the daemon does not ask again before then.
    #[tokio::test]
    async fn a_rate_limited_answer_should_carry_the_cas_retry_after() {
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .build();
        let provider = Certificates::new(&config, None);
        let builder = Account::builder_with_http(Box::new(RetryAfterWatch {
            inner: Box::new(LimitedCa),
            seen: std::sync::Arc::clone(&provider.retry_after),
        }));
        let before = Utc::now();
        let error = builder
            .create(
                &NewAccount {
                    contact: &[],
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                "https://ca.test/directory".to_owned(),
                None,
            )
            .await
            .map(|_| ())
            .expect_err("the CA refuses");
        let error = provider.acme_error("new account", error);
        assert!(error.is_retryable(), "{error:?}");
        let at = error.retry_after.expect("the CA's Retry-After");
        assert!(
            at >= before + chrono::Duration::seconds(3_590)
                && at <= Utc::now() + chrono::Duration::seconds(3_600),
            "{at}"
        );
        assert!(
            error.message.contains("rateLimited") || error.message.contains("too many"),
            "{}",
            error.message
        );
        assert!(
            error.message.contains("the CA asks not to retry before"),
            "{}",
            error.message
        );
        // Taken once: a later, unrelated error does not inherit it.
        assert!(provider.retry_after.lock().unwrap().is_none());
    }

    #[test]
    fn retry_after_should_read_seconds_and_http_dates() {
        let now = std::time::SystemTime::now();
        let soon = parse_retry_after("120").unwrap();
        assert!(soon >= now + Duration::from_secs(119));
        let dated = parse_retry_after("Fri, 31 Dec 1999 23:59:59 GMT").unwrap();
        assert_eq!(
            DateTime::<Utc>::from(dated).to_rfc3339(),
            "1999-12-31T23:59:59+00:00"
        );
        assert!(parse_retry_after("soon").is_none());
    }

    #[test]
    fn durations_should_parse_with_units() {
        assert_eq!(parse_duration("30d"), chrono::Duration::try_days(30));
        assert_eq!(parse_duration("90m"), chrono::Duration::try_minutes(90));
        assert_eq!(parse_duration("45s"), chrono::Duration::try_seconds(45));
        assert_eq!(parse_duration("12"), None);
        assert_eq!(parse_duration("-1d"), None);
        assert_eq!(parse_duration("d"), None);
    }

    #[test]
    fn renewal_should_be_due_in_the_last_third_by_default() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let end = start + chrono::Duration::days(90);
        assert_eq!(
            renewal_due(start, end, None, start + chrono::Duration::days(59)),
            None
        );
        assert_eq!(
            renewal_due(start, end, None, start + chrono::Duration::days(61)).as_deref(),
            Some("renewal due: expires in 29 days")
        );
        assert_eq!(
            renewal_due(
                start,
                end,
                chrono::Duration::try_days(7),
                start + chrono::Duration::days(61)
            ),
            None
        );
        assert_eq!(
            renewal_due(start, end, None, end + chrono::Duration::hours(3)).as_deref(),
            Some("renewal due: expired 3 hours ago")
        );
    }

    #[test]
    fn domains_should_be_checked() {
        let list = |names: &[&str]| Value::List(names.iter().map(|n| Value::from(*n)).collect());
        assert!(check_domains(&list(&["a.example.com", "*.example.com"])).is_ok());
        assert!(check_domains(&list(&[])).is_err());
        assert!(check_domains(&list(&["bad name.example.com"])).is_err());
    }

    #[test]
    fn a_chain_should_be_inspected() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["a.example.test".into(), "b.example.test".into()])
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        let issued = inspect_chain(&cert.pem()).unwrap();
        assert_eq!(issued.names, ["a.example.test", "b.example.test"]);
        assert_eq!(issued.fingerprint, hex::encode(Sha256::digest(cert.der())));
        assert!(issued.not_after > issued.not_before);
        assert!(inspect_chain("not a certificate").is_err());
    }
}
