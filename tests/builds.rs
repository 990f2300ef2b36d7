//! An SSM stand-in for builds: in front of moto (which runs nothing), every
//! `GetCommandInvocation` answers `InProgress` until the command has run for
//! the build time since it was first asked about, and a chosen instance's
//! commands fail. It counts the deploy commands sent per (instance,
//! revision) and notes any two commands running on one instance at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The stand-in's switches, and what it saw.
#[derive(Default)]
pub struct Builds {
    /// Commands take [`build`](Self::build).
    pub slow: AtomicBool,
    /// How long a build runs.
    pub build: Mutex<Duration>,
    /// The instance whose commands fail.
    pub failing: Mutex<Option<String>>,
    /// When each command was first asked about, and on which instance.
    first_seen: Mutex<HashMap<String, (Instant, String)>>,
    /// Deploy commands sent, per (instance, revision).
    pub deploys: Mutex<HashMap<(String, String), usize>>,
    /// Commands that ran on an instance while another one ran there.
    pub overlaps: Mutex<Vec<String>>,
}

impl Builds {
    /// Notes a `SendCommand` that deploys a revision.
    fn sent(&self, body: &str) {
        let (Some(comment), Some(instance)) = (
            crate::json_field(body, "Comment"),
            body.split("\"InstanceIds\":[\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next()),
        ) else {
            return;
        };
        if let Some(revision) = comment.strip_prefix("jaam: deploy ") {
            *self
                .deploys
                .lock()
                .unwrap()
                .entry((instance.to_owned(), revision.to_owned()))
                .or_default() += 1;
        }
    }

    /// When command `id` on `instance` was first asked about; a command
    /// first seen while another ran on the instance is an overlap.
    fn first_seen(&self, id: String, instance: String) -> Instant {
        let build = *self.build.lock().unwrap();
        let mut seen = self.first_seen.lock().unwrap();
        if let Some((at, _)) = seen.get(&id) {
            return *at;
        }
        let now = Instant::now();
        if seen
            .values()
            .any(|(at, on)| *on == instance && now.duration_since(*at) < build)
        {
            self.overlaps
                .lock()
                .unwrap()
                .push(format!("{id} on {instance}"));
        }
        seen.insert(id, (now, instance));
        now
    }

    /// Deploy commands sent of `revision` to `instance`.
    pub fn deploys_of(&self, instance: &str, revision: &str) -> usize {
        self.deploys
            .lock()
            .unwrap()
            .get(&(instance.to_owned(), revision.to_owned()))
            .copied()
            .unwrap_or_default()
    }
}

/// Starts the stand-in in front of `moto`, builds taking `build` once
/// [`Builds::slow`] is set.
pub async fn start(moto: &str, build: Duration) -> (Arc<Builds>, crate::InterceptProxy) {
    let builds = Arc::new(Builds {
        build: Mutex::new(build),
        ..Builds::default()
    });
    let answer: crate::Answer = {
        let builds = Arc::clone(&builds);
        Arc::new(move |head: &str, body: &str| {
            if head.contains("x-amz-target: amazonssm.sendcommand") {
                builds.sent(body);
            }
            if !head.contains("x-amz-target: amazonssm.getcommandinvocation") {
                return crate::Intercept::Forward;
            }
            let instance = crate::json_field(body, "InstanceId");
            if instance.is_some() && *builds.failing.lock().unwrap() == instance {
                return crate::Intercept::failed_invocation(
                    body,
                    "> build\nerror: the build broke\n",
                    "error: build failed; still serving the previous release",
                );
            }
            if builds.slow.load(Ordering::SeqCst) {
                let id = crate::json_field(body, "CommandId").unwrap_or_default();
                let first = builds.first_seen(id, instance.unwrap_or_default());
                if first.elapsed() < *builds.build.lock().unwrap() {
                    return crate::Intercept::invocation(body, "InProgress", "> build\n", "");
                }
            }
            crate::Intercept::Forward
        })
    };
    let proxy = crate::InterceptProxy::start(moto, answer).await;
    (builds, proxy)
}
