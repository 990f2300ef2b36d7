//! `security_group` against moto: create in the default VPC with its rules,
//! rule changes in place (same id), a description change replaces, bad rules
//! are refused at validate, import, and destroy.

use jaam_tests::{Workspace, ec2_client, moto_endpoint, unique};

async fn rules(id: &str) -> (Vec<String>, Vec<String>, Option<String>) {
    let answer = ec2_client()
        .await
        .describe_security_groups()
        .group_ids(id)
        .send()
        .await
        .expect("DescribeSecurityGroups");
    let group = &answer.security_groups()[0];
    let render = |permissions: &[aws_sdk_ec2::types::IpPermission]| {
        let mut out: Vec<String> = permissions
            .iter()
            .flat_map(|p| {
                let ports = match (p.from_port(), p.to_port()) {
                    (Some(a), Some(b)) if a == b && a != -1 => a.to_string(),
                    (Some(a), Some(b)) if a != -1 => format!("{a}-{b}"),
                    _ => "all".into(),
                };
                let protocol = match p.ip_protocol() {
                    Some("-1") | None => "all".to_owned(),
                    Some(other) => other.to_owned(),
                };
                p.ip_ranges()
                    .iter()
                    .filter_map(|r| r.cidr_ip())
                    .chain(p.ipv6_ranges().iter().filter_map(|r| r.cidr_ipv6()))
                    .map(move |cidr| format!("{protocol} {ports} {cidr}"))
                    .collect::<Vec<_>>()
            })
            .collect();
        out.sort();
        out
    };
    (
        render(group.ip_permissions()),
        render(group.ip_permissions_egress()),
        group.vpc_id().map(str::to_owned),
    )
}

/// Whether group `id` exists in moto.
async fn exists(id: &str) -> bool {
    let found = ec2_client()
        .await
        .describe_security_groups()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("group-id")
                .values(id)
                .build(),
        )
        .send()
        .await
        .unwrap();
    !found.security_groups().is_empty()
}

fn state_id(ws: &Workspace, addr: &str) -> String {
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ws.state()).unwrap()).unwrap();
    state["resources"][addr]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn security_group_should_change_rules_in_place_and_replace_on_description() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("sg"));
    let name = format!("{}-web", ws.stack);
    ws.write_specs(&format!(
        "security_group.web:\n  name: {name}\n  ingress: [\"tcp 80 0.0.0.0/0\", \"tcp 443 0.0.0.0/0\", \"tcp 443 ::/0\"]\n"
    ));
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    let id = state_id(&ws, "security_group.web");
    let (ingress, egress, vpc) = rules(&id).await;
    assert_eq!(
        ingress,
        ["tcp 443 0.0.0.0/0", "tcp 443 ::/0", "tcp 80 0.0.0.0/0"]
    );
    assert_eq!(egress, ["all all 0.0.0.0/0"]);
    let default_vpc = ec2_client()
        .await
        .describe_vpcs()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("is-default")
                .values("true")
                .build(),
        )
        .send()
        .await
        .unwrap()
        .vpcs()[0]
        .vpc_id()
        .map(str::to_owned);
    assert_eq!(vpc, default_vpc, "in the default VPC");
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);

    // Rules change in place: same group, one added, one revoked.
    ws.write_specs(&format!(
        "security_group.web:\n  name: {name}\n  ingress: [\"tcp 443 0.0.0.0/0\", \"tcp 443 ::/0\", \"tcp 22 10.0.0.0/8\"]\n  \
         egress: [\"tcp 443 0.0.0.0/0\"]\n"
    ));
    let run = ws.jaam(&["plan"]);
    run.expect_code(0);
    let text = run.squashed();
    assert!(text.contains("~ security_group.web {"), "{text}");
    assert!(text.contains("tcp 22 10.0.0.0/8"), "{text}");
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    assert_eq!(state_id(&ws, "security_group.web"), id);
    let (ingress, egress, _) = rules(&id).await;
    assert_eq!(
        ingress,
        ["tcp 22 10.0.0.0/8", "tcp 443 0.0.0.0/0", "tcp 443 ::/0"]
    );
    assert_eq!(egress, ["tcp 443 0.0.0.0/0"]);
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);

    // A rule removed outside jaam is drift, put back by the next apply.
    ec2_client()
        .await
        .revoke_security_group_ingress()
        .group_id(&id)
        .ip_permissions(
            aws_sdk_ec2::types::IpPermission::builder()
                .ip_protocol("tcp")
                .from_port(22)
                .to_port(22)
                .ip_ranges(
                    aws_sdk_ec2::types::IpRange::builder()
                        .cidr_ip("10.0.0.0/8")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .unwrap();
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(2);
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    assert!(rules(&id).await.0.contains(&"tcp 22 10.0.0.0/8".to_owned()));

    // A new description replaces (EC2 cannot change it): new group first.
    let renamed = format!("{name}-2");
    ws.write_specs(&format!(
        "security_group.web:\n  name: {renamed}\n  description: the web tier\n  ingress: [\"tcp 443 0.0.0.0/0\"]\n"
    ));
    let run = ws.jaam(&["apply", "--auto-approve"]);
    run.expect_code(0);
    let replaced = state_id(&ws, "security_group.web");
    assert_ne!(replaced, id);
    assert!(!exists(&id).await, "the old group is deleted");

    ws.jaam(&["destroy", "--auto-approve"]).expect_code(0);
    assert!(!exists(&replaced).await, "destroy deletes it");
}

#[test]
fn security_group_rules_should_be_checked_at_validate() {
    let ws = Workspace::new(&unique("sgbad"));
    ws.write_specs(
        "security_group.web:\n  name: web\n  ingress: [\"tcp 443 0.0.0.0/0\", \"TCP 80 0.0.0.0\"]\n",
    );
    let run = ws.jaam(&["validate"]);
    run.expect_code(1);
    assert!(run.stderr.contains("main.yaml:3:"), "{}", run.stderr);
    assert!(run.stderr.contains("protocol `TCP`"), "{}", run.stderr);
}

#[tokio::test]
async fn security_group_should_be_imported() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    let ws = Workspace::new(&unique("sgimport"));
    let name = format!("{}-imported", ws.stack);
    let made = ec2_client()
        .await
        .create_security_group()
        .group_name(&name)
        .description("made by hand")
        .send()
        .await
        .unwrap();
    let id = made.group_id().unwrap().to_owned();
    ws.write_specs(&format!(
        "security_group.hand:\n  name: {name}\n  description: made by hand\n"
    ));
    ws.jaam(&["import", "security_group.hand", &id])
        .expect_code(0);
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);
    ws.write_specs(&format!(
        "security_group.hand:\n  name: {name}\n  description: made by hand\n  ingress: [\"tcp 443 0.0.0.0/0\"]\n"
    ));
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(2);
    ws.jaam(&["apply", "--auto-approve"]).expect_code(0);
    ws.jaam(&["plan", "--detailed-exitcode"]).expect_code(0);
    assert_eq!(rules(&id).await.0, ["tcp 443 0.0.0.0/0"]);
    ws.jaam(&["destroy", "--auto-approve"]).expect_code(0);
}

/// A region without a default VPC: a group (or a site) that does not say
/// which VPC fails at plan, saying what to set — not at apply.
#[tokio::test]
async fn a_region_without_a_default_vpc_should_fail_the_plan_saying_what_to_set() {
    moto_endpoint();
    let _moto = jaam_tests::MOTO.read().await;
    // A region no other test uses, its default VPC removed.
    let region = "ap-southeast-2";
    let config = aws_sdk_ec2::config::Builder::from(&jaam_tests::aws_config().await)
        .region(aws_sdk_ec2::config::Region::new(region))
        .build();
    let ec2 = aws_sdk_ec2::Client::from_conf(config);
    let vpcs = ec2
        .describe_vpcs()
        .filters(
            aws_sdk_ec2::types::Filter::builder()
                .name("is-default")
                .values("true")
                .build(),
        )
        .send()
        .await
        .unwrap();
    for vpc in vpcs.vpcs() {
        let id = vpc.vpc_id().unwrap();
        let filter = aws_sdk_ec2::types::Filter::builder()
            .name("vpc-id")
            .values(id)
            .build();
        let subnets = ec2
            .describe_subnets()
            .filters(filter.clone())
            .send()
            .await
            .unwrap();
        for subnet in subnets.subnets() {
            ec2.delete_subnet()
                .subnet_id(subnet.subnet_id().unwrap())
                .send()
                .await
                .unwrap();
        }
        let gateways = ec2
            .describe_internet_gateways()
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("attachment.vpc-id")
                    .values(id)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        for gateway in gateways.internet_gateways() {
            let gateway = gateway.internet_gateway_id().unwrap();
            ec2.detach_internet_gateway()
                .internet_gateway_id(gateway)
                .vpc_id(id)
                .send()
                .await
                .unwrap();
            ec2.delete_internet_gateway()
                .internet_gateway_id(gateway)
                .send()
                .await
                .unwrap();
        }
        ec2.delete_vpc().vpc_id(id).send().await.unwrap();
    }

    let ws = Workspace::new(&unique("novpc"));
    ws.write_specs("security_group.web:\n  name: web\n  ingress: [\"tcp 443 0.0.0.0/0\"]\n");
    let run = jaam_tests::Run::from(
        ws.command(&["plan"])
            .env("AWS_REGION", region)
            .env("AWS_DEFAULT_REGION", region)
            .output()
            .unwrap(),
    );
    run.expect_code(1);
    let text = run.squashed();
    assert!(text.contains("security group `web`"), "{text}");
    assert!(
        text.contains("this region has no default VPC: set `vpc_id`"),
        "{text}"
    );
}
