//! `iam_role` against moto's IAM: a role with its instance profile, managed
//! and inline policies written as YAML, changed in place, drift, destroy.

use jaam_tests::{Workspace, moto_endpoint, unique};

async fn aws(args: &[&str]) -> serde_json::Value {
    let cli = jaam_tests::boxes::aws_cli().expect(
        "this test needs the AWS CLI the emulator scripts install: run it through ./scripts/test",
    );
    let out = tokio::process::Command::new(cli)
        .args(args)
        .args(["--output", "json"])
        .output()
        .await
        .expect("aws");
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if out.stdout.is_empty() {
        return serde_json::Value::Null;
    }
    serde_json::from_slice(&out.stdout).expect("JSON")
}

/// The managed policy ARNs attached to role `name`, sorted.
async fn attached(name: &str) -> Vec<String> {
    let attached = aws(&["iam", "list-attached-role-policies", "--role-name", name]).await;
    let mut arns: Vec<String> = attached["AttachedPolicies"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["PolicyArn"].as_str().map(str::to_owned))
        .collect();
    arns.sort();
    arns
}

/// Role `name`'s inline policy `logs`.
async fn inline_logs(name: &str) -> serde_json::Value {
    aws(&[
        "iam",
        "get-role-policy",
        "--role-name",
        name,
        "--policy-name",
        "logs",
    ])
    .await
}

fn spec(name: &str, managed: &str, actions: &str) -> String {
    format!(
        "iam_role.web:\n  name: {name}\n  managed_policy_arns: [{managed}]\n  inline_policies:\n    logs:\n      \
         Version: \"2012-10-17\"\n      Statement:\n        - Effect: Allow\n          Action: [{actions}]\n          \
         Resource: \"arn:aws:logs:*:*:log-group:/jaam/{{{{jaam:stack}}}}/web:*\"\n  tags:\n    team: web\n"
    )
}

#[tokio::test]
async fn iam_role_should_create_its_profile_and_change_policies_in_place() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("role"));
    let name = format!("{}-web", ws.stack);
    let ssm = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore";
    ws.write_specs(&spec(&name, ssm, "logs:PutLogEvents"));
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);

    let profile = aws(&[
        "iam",
        "get-instance-profile",
        "--instance-profile-name",
        &name,
    ])
    .await;
    assert_eq!(
        profile["InstanceProfile"]["Roles"][0]["RoleName"],
        name.as_str()
    );
    assert_eq!(attached(&name).await, [ssm]);
    let inline = inline_logs(&name).await;
    assert_eq!(
        inline["PolicyDocument"]["Statement"][0]["Action"][0],
        "logs:PutLogEvents"
    );
    // `{{jaam:stack}}` in a document is the stack's name.
    assert_eq!(
        inline["PolicyDocument"]["Statement"][0]["Resource"],
        format!("arn:aws:logs:*:*:log-group:/jaam/{}/web:*", ws.stack)
    );
    let role = aws(&["iam", "get-role", "--role-name", &name]).await;
    assert_eq!(
        role["Role"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"],
        "ec2.amazonaws.com",
        "EC2 may assume it by default"
    );
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.state()).unwrap()).unwrap();
    assert_eq!(
        state["resources"]["iam_role.web"]["attributes"]["instance_profile_name"],
        name.as_str()
    );
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);

    // Policies change in place.
    let logs = "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy";
    ws.write_specs(&spec(
        &name,
        logs,
        "logs:PutLogEvents, logs:CreateLogStream",
    ));
    let run = ws.jaam(&["plan"]);
    run.expect_code(0);
    let text = run.squashed();
    assert!(text.contains("~ iam_role.web {"), "{text}");
    assert!(
        text.contains("0 to add, 1 to change, 0 to destroy"),
        "{text}"
    );
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    assert_eq!(attached(&name).await, [logs]);
    let inline = inline_logs(&name).await;
    assert_eq!(
        inline["PolicyDocument"]["Statement"][0]["Action"][1],
        "logs:CreateLogStream"
    );
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);

    // A policy attached by hand is drift, removed by the next apply.
    aws(&[
        "iam",
        "attach-role-policy",
        "--role-name",
        &name,
        "--policy-arn",
        ssm,
    ])
    .await;
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(2);
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);

    // Two policies written in another order than IAM lists them: no drift.
    ws.write_specs(&spec(
        &name,
        &format!("{logs}, {ssm}"),
        "logs:PutLogEvents, logs:CreateLogStream",
    ));
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    assert_eq!(attached(&name).await, [ssm, logs]);
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);

    // Destroy reads what is attached now, not what state remembers: IAM
    // deletes a role only once nothing is.
    let extra = "arn:aws:iam::aws:policy/ReadOnlyAccess";
    aws(&[
        "iam",
        "attach-role-policy",
        "--role-name",
        &name,
        "--policy-arn",
        extra,
    ])
    .await;
    ws.jaam(&["destroy", "--auto-approve"]).expect_code(0);
    let roles = aws(&["iam", "list-roles"]).await;
    assert!(
        !roles["Roles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["RoleName"] == name.as_str()),
        "the role is gone"
    );
    let profiles = aws(&["iam", "list-instance-profiles"]).await;
    assert!(
        !profiles["InstanceProfiles"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["InstanceProfileName"] == name.as_str()),
        "its profile is gone"
    );
}
