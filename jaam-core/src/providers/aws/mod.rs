//! AWS providers through the official AWS SDK for Rust.
//!
//! One [`aws_config::SdkConfig`] serves every client: the standard credential
//! chain and region, and `AWS_ENDPOINT_URL` when set (how tests point the same
//! binary at moto). Throttling, 5xx and transport errors are retried by the SDK's
//! standard retry strategy (exponential backoff with jitter), raised here to 6
//! attempts; what still fails is classified into a [`ProviderError`] whose
//! `Transient` kind tells the daemon to retry later.

pub mod ec2;
pub mod files;
pub mod iam;
pub mod logs;
pub mod parameters;
pub mod route53;
pub mod security_groups;
pub mod sites;
pub mod ssm;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_config::BehaviorVersion;
pub use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::provider::{ErrorKind, ProviderError, Registry};

/// Loads the shared AWS configuration from the environment.
pub async fn load_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(6))
        .load()
        .await
}

/// Registers every AWS provider built with this crate; `heads` resolves
/// `github:` revisions of instances.
pub fn register(registry: &mut Registry, config: &SdkConfig, heads: Option<ec2::HeadResolver>) {
    register_all_but_instances(registry, config);
    let instances = ec2::Instances::new(config, None);
    registry.register(Arc::new(match heads {
        Some(heads) => instances.with_heads(heads),
        None => instances,
    }));
}

/// The AWS providers but `instance` (which takes a branch-head resolver:
/// see [`crate::providers::Providers`]).
pub(crate) fn register_all_but_instances(registry: &mut Registry, config: &SdkConfig) {
    registry.register(Arc::new(logs::LogGroups::new(config, None)));
    registry.register(Arc::new(route53::Records::new(config, None)));
    registry.register(Arc::new(security_groups::SecurityGroups::new(config, None)));
    registry.register(Arc::new(iam::Roles::new(config, None)));
}

/// Adds the interceptors every AWS client of jaam's carries to a client
/// configuration builder: `counter` (tests counting calls) and the
/// [`OperationLog`] when `JAAM_AWS_OPERATION_LOG` is set.
macro_rules! instrumented {
    ($builder:expr, $counter:expr) => {{
        let mut builder = $builder;
        if let Some(counter) = $counter {
            builder = builder.interceptor(counter);
        }
        if let Some(log) = $crate::providers::aws::OperationLog::from_env() {
            builder = builder.interceptor(log);
        }
        builder
    }};
}
pub(crate) use instrumented;

/// Appends every AWS operation jaam performs to a file, one
/// `service:Operation` line each in IAM's action spelling (`ec2:RunInstances`,
/// `logs:FilterLogEvents`), when `JAAM_AWS_OPERATION_LOG` names the file: what
/// a least-privilege policy for jaam's credentials must allow (the tests check
/// `docs/iam-policy.json` against it).
#[derive(Clone, Debug)]
pub struct OperationLog(Arc<std::path::PathBuf>);

impl OperationLog {
    /// The log `JAAM_AWS_OPERATION_LOG` names, if any.
    pub fn from_env() -> Option<Self> {
        std::env::var_os("JAAM_AWS_OPERATION_LOG")
            .filter(|path| !path.is_empty())
            .map(|path| Self(Arc::new(path.into())))
    }

    /// IAM's prefix for an SDK service name.
    pub fn prefix(service: &str) -> String {
        match service {
            "CloudWatch Logs" => "logs".to_owned(),
            "Route 53" => "route53".to_owned(),
            "Resource Groups Tagging API" => "tag".to_owned(),
            other => other.to_ascii_lowercase().replace(' ', ""),
        }
    }
}

impl Intercept for OperationLog {
    fn name(&self) -> &'static str {
        "jaam-operation-log"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        use std::io::Write as _;
        if let Some(metadata) = cfg.load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
        {
            let line = format!("{}:{}\n", Self::prefix(metadata.service()), metadata.name());
            // One short append per line: lines from parallel processes do not mix.
            if let Ok(mut file) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.0.as_path())
            {
                let _ = file.write_all(line.as_bytes());
            }
        }
        Ok(())
    }
}

/// Counts HTTP attempts made through the clients it is attached to (tests use it
/// to prove refresh is batched).
#[derive(Clone, Debug, Default)]
pub struct CallCounter(Arc<AtomicUsize>);

impl CallCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts counted so far.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// Back to zero.
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed);
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "jaam-call-counter"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

pub(crate) use crate::value::string_map;

/// How long a long-running process (the daemon) remembers what changes
/// rarely and is read at every plan: the region's default VPC and the image
/// behind an AMI's public parameter. A push's plan then makes no AWS call
/// before its deploy command; a CLI run reads them once.
pub(crate) const REMEMBER: std::time::Duration = std::time::Duration::from_secs(600);

/// Values read from AWS, each remembered for [`REMEMBER`]; clones share
/// what they remember.
#[derive(Clone, Debug, Default)]
pub(crate) struct Remembered {
    values: Arc<std::sync::Mutex<HashMap<String, (std::time::Instant, String)>>>,
}

impl Remembered {
    /// The value of `key`, when read less than [`REMEMBER`] ago.
    pub(crate) fn get(&self, key: &str) -> Option<String> {
        let values = self.values.lock().expect("remembered");
        values
            .get(key)
            .filter(|(at, _)| at.elapsed() < REMEMBER)
            .map(|(_, value)| value.clone())
    }

    /// Remembers `value` for `key`, from now.
    pub(crate) fn put(&self, key: &str, value: &str) {
        self.values.lock().expect("remembered").insert(
            key.to_owned(),
            (std::time::Instant::now(), value.to_owned()),
        );
    }
}

/// `found` (a set the cloud reports in its own order) in the order of
/// `written` first, then what was not written, sorted: a list the user wrote
/// in another order than the cloud's is not drift.
pub(crate) fn in_written_order<T: Ord + Clone>(found: Vec<T>, written: &[T]) -> Vec<T> {
    let mut ordered: Vec<T> = written
        .iter()
        .filter(|item| found.contains(item))
        .cloned()
        .collect();
    let mut rest: Vec<T> = found
        .into_iter()
        .filter(|item| !ordered.contains(item))
        .collect();
    rest.sort();
    rest.dedup();
    ordered.extend(rest);
    ordered
}

/// The string argument `name` of `attributes`, or "".
pub(crate) fn text_arg<'a>(attributes: &'a crate::value::Attrs, name: &str) -> &'a str {
    attributes
        .get(name)
        .and_then(crate::value::Value::as_str)
        .unwrap_or_default()
}

/// The resource of `found` a refresh target stands for: by its recorded id,
/// or (no id: adoption after a crash) by the `jaam:address` ownership tag.
pub(crate) fn pick<'a, T>(
    found: &'a [T],
    target: &crate::provider::RefreshTarget<'_>,
    id_of: impl Fn(&T) -> Option<&str>,
    tags_of: impl Fn(&T) -> std::collections::BTreeMap<String, String>,
) -> Option<&'a T> {
    match target.id {
        Some(id) => found.iter().find(|item| id_of(item) == Some(id)),
        None => {
            let addr = target.addr.to_string();
            found
                .iter()
                .find(|item| tags_of(item).get(crate::provider::Owner::ADDRESS_TAG) == Some(&addr))
        }
    }
}

/// The result of a [`crate::backoff::poll`] as a provider result: a timeout
/// becomes a transient error saying what did not happen (`what`) and how long
/// it was waited for.
pub(crate) fn waited<T>(
    outcome: std::result::Result<T, crate::backoff::Error<ProviderError>>,
    what: impl FnOnce() -> String,
) -> std::result::Result<T, ProviderError> {
    match outcome {
        Ok(value) => Ok(value),
        Err(crate::backoff::Error::Failed(error)) => Err(error),
        Err(crate::backoff::Error::Timeout { waited, .. }) => Err(ProviderError::new(
            ErrorKind::Transient,
            format!("{} after {waited:?}", what()),
        )),
    }
}

/// The outcome of a removal, where "it is already gone" counts as done.
///
/// # Errors
/// Any other failure, classified.
pub(crate) fn gone_is_fine<T, E, R>(
    operation: &str,
    outcome: std::result::Result<T, SdkError<E, R>>,
) -> std::result::Result<bool, ProviderError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match outcome {
        Ok(_) => Ok(true),
        Err(error) => {
            let error = classify(operation, error);
            if error.kind == ErrorKind::NotFound {
                Ok(false)
            } else {
                Err(error)
            }
        }
    }
}

/// Turns an SDK error into an address-free [`ProviderError`].
pub(crate) fn classify<E, R>(operation: &str, error: SdkError<E, R>) -> ProviderError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let kind = match &error {
        SdkError::ServiceError(context)
            if context
                .err()
                .code()
                .is_some_and(|code| code.ends_with(".NotFound") || code == "NoSuchHostedZone")
                || (context.err().code() == Some("InvalidChangeBatch")
                    && context
                        .err()
                        .message()
                        .is_some_and(|m| m.contains("not found"))) =>
        {
            ErrorKind::NotFound
        }
        SdkError::ServiceError(context) => match context.err().code().unwrap_or_default() {
            "ResourceNotFoundException" | "NotFoundException" | "NoSuchEntity" => {
                ErrorKind::NotFound
            }
            "ResourceAlreadyExistsException" | "AlreadyExistsException" => ErrorKind::AlreadyExists,
            "ThrottlingException"
            | "Throttling"
            | "RequestLimitExceeded"
            | "ServiceUnavailableException"
            | "ServiceUnavailable"
            | "InternalFailure"
            | "PriorRequestNotComplete" => ErrorKind::Transient,
            "AccessDeniedException"
            | "AccessDenied"
            | "UnrecognizedClientException"
            | "InvalidClientTokenId" => ErrorKind::Denied,
            "InvalidParameterException" | "InvalidParameterValue" | "ValidationException" => {
                ErrorKind::Invalid
            }
            _ => ErrorKind::Other,
        },
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorKind::Transient
        }
        _ => ErrorKind::Other,
    };
    let detail = match &error {
        SdkError::ServiceError(context) => {
            let code = context.err().code().unwrap_or("error");
            match context.err().message() {
                Some(message) => format!("{code}: {message}"),
                None => code.to_owned(),
            }
        }
        other => other.to_string(),
    };
    ProviderError::new(kind, format!("{operation}: {detail}")).with_source(error)
}
