//! Plans: what an apply will do, as plain serializable data.
//!
//! A plan compares three inputs per address — desired (specs), recorded (state)
//! and observed (a batched refresh through the providers) — and holds one
//! [`ResourceChange`] per resource, plus [`Plan::drift`]: differences between what
//! state recorded and what the cloud reports, shown before the plan.
//! Computing ([`diff`]) is kept apart from rendering ([`render`]).
//!
//! A plan is applied as it is: apply never re-reads the specs. Values that depend
//! on resources not created yet are [`crate::value::Value::Unknown`] and keep
//! their template, which apply resolves once the dependency exists. Applying
//! refuses a plan whose [`Plan::prior`] no longer matches the state ("stale").
//!
//! # Caveats
//! A saved plan file holds argument values as planned. Sensitive arguments are
//! redacted when rendered, but a plan file should be treated like the specs'
//! environment (it is written with mode 0600).

pub mod diff;
pub mod render;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::addr::ResourceAddr;
use crate::schema::ReplaceOrder;
use crate::state::StateMeta;
use crate::value::Attrs;

pub use diff::{Options, compute};

/// The plan format version (`format_version` in JSON).
pub const FORMAT_VERSION: u32 = 1;

/// What will happen to one resource.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Nothing.
    NoOp,
    /// Create it.
    Create,
    /// Update it in place.
    Update {
        /// The arguments that change.
        changed: Vec<String>,
    },
    /// Replace it: an argument that cannot change in place changed.
    Replace {
        /// Which side comes first.
        order: ReplaceOrder,
        /// The arguments that change; those forcing replacement are in `forcing`.
        changed: Vec<String>,
        /// The arguments whose change forces the replacement.
        forcing: Vec<String>,
    },
    /// Delete it.
    Delete,
}

impl Action {
    /// The Terraform-style symbol: `+`, `~`, `-/+`, `+/-`, `-`, or blank.
    pub fn symbol(&self) -> &'static str {
        match self {
            Action::NoOp => " ",
            Action::Create => "+",
            Action::Update { .. } => "~",
            Action::Replace {
                order: ReplaceOrder::DeleteThenCreate,
                ..
            } => "-/+",
            Action::Replace {
                order: ReplaceOrder::CreateThenDelete,
                ..
            } => "+/-",
            Action::Delete => "-",
        }
    }

    /// Whether this changes anything.
    pub fn is_change(&self) -> bool {
        !matches!(self, Action::NoOp)
    }
}

/// One resource in a plan (or in its drift list).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceChange {
    /// The resource.
    pub addr: ResourceAddr,
    /// Its kind.
    pub kind: String,
    /// What happens.
    pub action: Action,
    /// The cloud id before the change, when it exists.
    pub id: Option<String>,
    /// Attributes before (observed, or recorded without refresh).
    pub before: Option<Attrs>,
    /// Attributes after (desired; unknowns where not known until apply).
    pub after: Option<Attrs>,
    /// Resources this one depends on (desired for creates/updates, recorded for deletes).
    pub dependencies: Vec<ResourceAddr>,
    /// Attribute names whose values are secrets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensitive: Vec<String>,
    /// Why, for display only: apply never branches on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A computed plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The stack.
    pub stack: String,
    /// The state the plan was made against; `None` when the stack had no state yet.
    pub prior: Option<StateMeta>,
    /// The lineage a first apply will give the stack (when `prior` is `None`).
    pub lineage: Uuid,
    /// Whether this plan destroys everything.
    #[serde(default)]
    pub destroy: bool,
    /// Changes made outside jaam, found by refresh.
    pub drift: Vec<ResourceChange>,
    /// One entry per resource in scope, sorted by address.
    pub changes: Vec<ResourceChange>,
    /// Old objects of earlier create-then-delete replacements to delete now
    /// (see [`crate::state::State::deposed`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deposed: Vec<ResourceChange>,
    /// Interrupted intents this plan resolved (adopted or found absent).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resolved_intents: Vec<Uuid>,
    /// Things worth knowing that change nothing (a newer image available).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Counts of a plan's changes, Terraform-style (a replacement adds and destroys).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Resources created (including replacements).
    pub add: usize,
    /// Resources updated in place.
    pub change: usize,
    /// Resources destroyed (including replacements).
    pub destroy: usize,
}

impl Plan {
    /// Whether applying would change anything in the cloud or in state.
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|change| change.action.is_change()) || !self.deposed.is_empty()
    }

    /// The counts.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        for change in &self.changes {
            match change.action {
                Action::NoOp => {}
                Action::Create => summary.add += 1,
                Action::Update { .. } => summary.change += 1,
                Action::Replace { .. } => {
                    summary.add += 1;
                    summary.destroy += 1;
                }
                Action::Delete => summary.destroy += 1,
            }
        }
        summary.destroy += self.deposed.len();
        summary
    }

    /// The change for `addr`.
    pub fn change(&self, addr: &ResourceAddr) -> Option<&ResourceChange> {
        self.changes.iter().find(|change| &change.addr == addr)
    }
}

/// Errors computing a plan.
///
/// [`Error::Refresh`] is retryable when its source is; the others are not.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A refresh call failed.
    #[error("failed to refresh `{kind}` resources")]
    Refresh {
        /// The kind.
        kind: String,
        /// The provider error.
        #[source]
        source: crate::provider::ProviderError,
    },
    /// A resource's kind has no provider (state written by a build with more kinds).
    #[error("`{addr}`: no provider for kind `{}`", .addr.kind())]
    UnknownKind {
        /// The resource.
        addr: ResourceAddr,
    },
    /// A `--target` names no declared or recorded resource.
    #[error("target `{addr}` is neither declared in the specs nor recorded in state")]
    UnknownTarget {
        /// The target.
        addr: ResourceAddr,
    },
}

/// Plan result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
