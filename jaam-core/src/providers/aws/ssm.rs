//! Running commands on instances with SSM Run Command (`AWS-RunShellScript`):
//! certificate installation and site deploys.
//!
//! [`send_command`] sends one command to some instances and waits, with
//! backoff under a deadline, until each has a terminal status. An instance
//! that has only just started is not registered with SSM yet
//! (`InvalidInstanceId`): the send is retried for at most ten minutes
//! ([`REGISTRATION`]; `JAAM_SSM_REGISTRATION_TIMEOUT=SECONDS` changes it), after
//! which the error says what registration needs (an instance profile whose
//! role allows the SSM core actions) instead of waiting out a deploy's 30
//! minutes. The command's `executionTimeout` is the wait's deadline, so the
//! instance stops a command jaam no longer waits for. A command that fails
//! reports the tail of its output, which for a deploy is the end of the build
//! log (SSM returns the first 24,000 characters of standard output and 8,000
//! of standard error: the deploy script keeps its failure report on standard
//! error and short).

use std::time::Duration;

use aws_sdk_ssm::types::CommandInvocationStatus as Status;

use super::classify;
use crate::backoff::{self, Backoff};
use crate::provider::{ErrorKind, ProviderError, Result};

/// How long to wait for a short command (writing files, reloading nginx).
pub const COMMAND: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(5),
    deadline: Duration::from_secs(300),
};

/// How long to wait for a deploy (fetch, install, build, switch). Polled
/// at least every second: a finished build is seen within a second (a
/// 10 s poll cost each deploy up to 10 s), and the calls stay one per
/// second per running deploy (`jaam daemon --workers` of them at most).
pub const DEPLOY: Backoff = Backoff {
    initial: Duration::from_millis(200),
    max: Duration::from_secs(1),
    deadline: Duration::from_secs(1800),
};

/// How long an instance may take to register with SSM (boot, then the agent).
pub const REGISTRATION: Duration = Duration::from_secs(600);

/// [`REGISTRATION`], or `JAAM_SSM_REGISTRATION_TIMEOUT` (seconds) when set.
fn registration() -> Duration {
    std::env::var("JAAM_SSM_REGISTRATION_TIMEOUT")
        .ok()
        .and_then(|value| value.trim().trim_end_matches('s').parse::<u64>().ok())
        .map_or(REGISTRATION, Duration::from_secs)
}

/// How the error of an instance that never registered begins (callers add
/// what they know of its instance profile).
pub const NOT_REGISTERED: &str = "did not register with SSM";

/// Lines of output kept in an error.
const TAIL: usize = 40;

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `script` on `instances` and waits for every result; returns each
/// instance's standard output.
///
/// # Errors
/// A failed call, a command that did not succeed on an instance (with the tail
/// of its output), or a transient error at the deadline.
pub async fn send_command(
    client: &aws_sdk_ssm::Client,
    instances: &[String],
    comment: &str,
    script: Vec<String>,
    wait: Backoff,
) -> Result<Vec<String>> {
    let started = tokio::time::Instant::now();
    let register = Backoff {
        deadline: wait.deadline.min(registration()),
        ..wait
    };
    let sent = backoff::poll(register, || async {
        // What is left of the wait when the command goes: the instance stops
        // a command jaam no longer waits for.
        let execution_timeout = wait
            .deadline
            .saturating_sub(started.elapsed())
            .as_secs()
            .clamp(1, 172_800)
            .to_string();
        match client
            .send_command()
            .document_name("AWS-RunShellScript")
            .set_instance_ids(Some(instances.to_vec()))
            .comment(comment)
            .parameters("commands", script.clone())
            .parameters("executionTimeout", vec![execution_timeout])
            .send()
            .await
        {
            Ok(answer) => Ok(Some(
                answer
                    .command()
                    .and_then(|command| command.command_id())
                    .unwrap_or_default()
                    .to_owned(),
            )),
            Err(error) => {
                let error = classify("SendCommand", error);
                // Not registered with SSM yet: the agent starts after boot.
                if error.message.contains("InvalidInstanceId") {
                    Ok(None)
                } else {
                    Err(error)
                }
            }
        }
    })
    .await;
    let command_id = super::waited(sent, || {
        format!(
            "{} {NOT_REGISTERED} (the agent registers once the instance has booted, and only with an \
             instance profile whose role allows the SSM core actions, e.g. AmazonSSMManagedInstanceCore)",
            instances.join(", ")
        )
    })?;
    let remaining = Backoff {
        deadline: wait.deadline.saturating_sub(started.elapsed()),
        ..wait
    };
    let mut outputs = Vec::with_capacity(instances.len());
    for instance in instances {
        let outcome = backoff::poll(remaining, || async {
            let invocation = match client
                .get_command_invocation()
                .command_id(&command_id)
                .instance_id(instance)
                .send()
                .await
            {
                Ok(invocation) => invocation,
                // Right after SendCommand the invocation may not exist yet.
                Err(error) => {
                    let error = classify("GetCommandInvocation", error);
                    if error.message.contains("InvocationDoesNotExist") {
                        return Ok(None);
                    }
                    return Err(error);
                }
            };
            let output = invocation
                .standard_output_content()
                .unwrap_or_default()
                .to_owned();
            match invocation.status() {
                Some(Status::Success) => Ok(Some(output)),
                Some(Status::Pending | Status::InProgress | Status::Delayed) | None => Ok(None),
                Some(status) => {
                    let errors = invocation.standard_error_content().unwrap_or_default();
                    let text = tail(&format!("{output}\n{errors}"), TAIL);
                    Err(ProviderError::new(
                        ErrorKind::Other,
                        format!(
                            "command on {instance} ended {}{}",
                            status.as_str(),
                            if text.trim().is_empty() {
                                String::new()
                            } else {
                                format!(":\n{text}")
                            }
                        ),
                    ))
                }
            }
        })
        .await;
        outputs.push(super::waited(outcome, || {
            format!("command on {instance} did not finish")
        })?);
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tail_should_keep_the_last_lines() {
        assert_eq!(super::tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(super::tail("a", 5), "a");
    }
}
