//! Checks that an IAM policy allows every AWS operation jaam performed.
//!
//! `JAAM_AWS_OPERATION_LOG=FILE` makes jaam append each operation it calls as
//! `service:Operation` ([`jaam_core::providers::aws::OperationLog`]);
//! `./scripts/test` sets it for the whole suite, then runs
//! `jaam-iam-check FILE docs/iam-policy.json`, which fails naming every
//! operation the documented policy does not allow, so the document cannot rot.

use std::collections::BTreeSet;

/// The IAM action an SDK operation needs, where the two are spelled
/// differently (S3 object reads and listings).
pub fn action(operation: &str) -> String {
    match operation {
        "s3:HeadObject" => "s3:GetObject".to_owned(),
        "s3:ListObjectsV2" | "s3:ListObjects" | "s3:HeadBucket" => "s3:ListBucket".to_owned(),
        "s3:DeleteObjects" => "s3:DeleteObject".to_owned(),
        // A copy reads the source (GetObject, allowed beside) and writes the copy.
        "s3:CopyObject" => "s3:PutObject".to_owned(),
        other => other.to_owned(),
    }
}

/// Whether IAM action pattern `pattern` (with `*` wildcards, case-insensitive)
/// matches `action`.
pub fn matches(pattern: &str, action: &str) -> bool {
    fn go(p: &[u8], a: &[u8]) -> bool {
        match (p.first(), a.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], a) || (!a.is_empty() && go(p, &a[1..])),
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(y) => go(&p[1..], &a[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), action.as_bytes())
}

/// The actions the policy's `Allow` statements name.
pub fn allowed(policy: &serde_json::Value) -> Vec<String> {
    let statements = match &policy["Statement"] {
        serde_json::Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    statements
        .iter()
        .filter(|s| s["Effect"] == "Allow")
        .flat_map(|s| match &s["Action"] {
            serde_json::Value::Array(items) => items
                .iter()
                .filter_map(|a| a.as_str().map(str::to_owned))
                .collect(),
            serde_json::Value::String(one) => vec![one.clone()],
            _ => Vec::new(),
        })
        .collect()
}

/// The operations of `log` (one per line) the policy does not allow.
pub fn uncovered(log: &str, policy: &serde_json::Value) -> Vec<String> {
    let allowed = allowed(policy);
    let operations: BTreeSet<&str> = log
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    operations
        .into_iter()
        .filter(|operation| {
            let needed = action(operation);
            !allowed.iter().any(|pattern| matches(pattern, &needed))
        })
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_should_match_like_iam() {
        assert!(matches("ec2:Describe*", "ec2:DescribeInstances"));
        assert!(matches("ssm:GetParameter", "ssm:getparameter"));
        assert!(!matches("ssm:GetParameter", "ssm:GetParameters"));
        assert!(matches("*", "iam:CreateRole"));
    }

    #[test]
    fn uncovered_should_name_what_the_policy_lacks() {
        let policy = serde_json::json!({"Statement": [
            {"Effect": "Allow", "Action": ["ec2:Describe*", "s3:GetObject"]},
            {"Effect": "Deny", "Action": "ec2:RunInstances"},
        ]});
        let log = "ec2:DescribeInstances\ns3:HeadObject\nec2:RunInstances\nec2:DescribeInstances\n";
        assert_eq!(uncovered(log, &policy), ["ec2:RunInstances"]);
    }
}
