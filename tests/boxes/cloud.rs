//! The cloud around the boxes: a proxy in front of moto that jaam's AWS
//! endpoint points at.
//!
//! - **EC2**: RunInstances with more than 16,384 bytes of user data is
//!   refused (`InvalidParameterValue`), as EC2 does and moto does not.
//!   RunInstances, StopInstances, StartInstances and TerminateInstances go to
//!   moto; then the instance's box is made and
//!   booted (user data read back with DescribeInstanceAttribute, run once),
//!   shut down, booted again on the new public IP, or destroyed. A stop
//!   answers once the box is down; a launch or start answers at once, while
//!   the box boots (as EC2 reports `running` long before the boot script is
//!   done).
//! - **SSM, the agent's side**: an instance registers once its boot script
//!   has finished, and only when its instance profile's role allows the SSM
//!   core actions (`AmazonSSMManagedInstanceCore` attached, or an inline
//!   policy allowing `ssm:UpdateInstanceInformation`), read from moto's IAM.
//!   SendCommand to a boxed instance that is not registered fails with
//!   `InvalidInstanceId`; a registered one runs the commands as root in its
//!   box: Pending → InProgress → Success / Failed / TimedOut at
//!   `executionTimeout` (default 3600 s). GetCommandInvocation keeps the first
//!   24,000 characters of standard output and 8,000 of standard error;
//!   ListCommandInvocations' plugin output the first 2,500; ListCommands and
//!   DescribeInstanceInformation answer for boxed instances. Everything else
//!   (and every instance without a box) passes through to moto.
//! - **Parameter Store**: PutParameter of more than 4,096 characters on the
//!   Standard tier (or no tier) is refused, as SSM does and moto does not.
//! - **The CloudWatch agent**: once a box's agent was started with a
//!   configuration (`amazon-cloudwatch-agent-ctl -a fetch-config … -s`), the
//!   lines appended to the files it lists are shipped to their log group and
//!   stream in moto (PutLogEvents), about every 300 ms.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::{BoxConfig, InstanceBox, Ran};

/// SSM's output limits (GetCommandInvocation; ListCommandInvocations' plugin output).
pub const STDOUT_LIMIT: usize = 24_000;
/// SSM keeps this much of standard error in GetCommandInvocation.
pub const STDERR_LIMIT: usize = 8_000;
/// ListCommandInvocations' plugin `Output`.
pub const PLUGIN_OUTPUT_LIMIT: usize = 2_500;

/// One instance the cloud runs.
pub struct Machine {
    /// The instance id.
    pub id: String,
    /// Held while the box boots or shuts down.
    power: tokio::sync::Mutex<()>,
    /// Its box, once made.
    instance_box: Mutex<Option<Arc<InstanceBox>>>,
    registered: AtomicBool,
    /// Why it did not register, once its boot finished.
    pub not_registered: Mutex<Option<String>>,
    /// The user data's outcome at the first boot.
    pub user_data: Mutex<Option<Ran>>,
    /// Boots finished so far.
    pub boots: std::sync::atomic::AtomicUsize,
    shipped: Mutex<HashMap<String, u64>>,
}

impl Machine {
    /// Whether the SSM agent stand-in registered it.
    pub fn registered(&self) -> bool {
        self.registered.load(Ordering::SeqCst)
    }

    /// Its box, once made.
    pub fn instance_box(&self) -> Option<Arc<InstanceBox>> {
        self.instance_box.lock().unwrap().clone()
    }
}

#[derive(Clone, Debug)]
struct Invocation {
    command_id: String,
    instance_id: String,
    comment: String,
    document: String,
    commands: Vec<String>,
    status: &'static str,
    details: &'static str,
    code: i64,
    stdout: String,
    stderr: String,
    requested: f64,
}

struct Shared {
    moto: String,
    config: BoxConfig,
    machines: Mutex<HashMap<String, Arc<Machine>>>,
    invocations: Mutex<Vec<Invocation>>,
}

/// The proxy; every box is destroyed when it drops.
pub struct Cloud {
    /// `http://127.0.0.1:PORT`: jaam's (or a Route53 mirror's) upstream.
    pub url: String,
    shared: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Cloud {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        // Boxes clean up after themselves (namespaces, processes) on drop.
        self.shared.machines.lock().unwrap().clear();
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn first_chars(text: &str, limit: usize) -> String {
    text.chars().take(limit).collect()
}

impl Cloud {
    /// Starts the proxy in front of `moto`; boxes get `config`.
    pub async fn start(moto: &str, config: BoxConfig) -> Self {
        super::require_root();
        let (listener, url, upstream) = crate::bind_proxy(moto).await;
        let shared = Arc::new(Shared {
            moto: upstream,
            config,
            machines: Mutex::new(HashMap::new()),
            invocations: Mutex::new(Vec::new()),
        });
        let serving = Arc::clone(&shared);
        let serve = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let shared = Arc::clone(&serving);
                tokio::spawn(async move {
                    let _ = handle(shared, client).await;
                });
            }
        });
        let shipping = Arc::clone(&shared);
        let agent = tokio::spawn(async move {
            let logs = crate::logs_client().await;
            loop {
                let machines: Vec<Arc<Machine>> = shipping
                    .machines
                    .lock()
                    .unwrap()
                    .values()
                    .cloned()
                    .collect();
                for machine in machines {
                    ship_logs(&logs, &machine).await;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        });
        Self {
            url,
            shared,
            tasks: vec![serve, agent],
        }
    }

    /// The machine of instance `id`, if the cloud launched it.
    pub fn machine(&self, id: &str) -> Option<Arc<Machine>> {
        self.shared.machines.lock().unwrap().get(id).cloned()
    }

    /// Every machine launched so far.
    pub fn machines(&self) -> Vec<Arc<Machine>> {
        self.shared
            .machines
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect()
    }
}

fn respond(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn ssm_error(kind: &str, message: &str) -> String {
    respond(
        "400 Bad Request",
        "application/x-amz-json-1.1",
        &json!({"__type": kind, "message": message}).to_string(),
    )
}

fn ssm_ok(body: &Value) -> String {
    respond("200 OK", "application/x-amz-json-1.1", &body.to_string())
}

async fn exchange(upstream: &str, request: &[u8]) -> std::io::Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut server = tokio::net::TcpStream::connect(upstream).await?;
    server.write_all(request).await?;
    let mut response = Vec::new();
    server.read_to_end(&mut response).await?;
    Ok(response)
}

/// The values of form fields `InstanceId.N` in an EC2 query body.
fn instance_ids(body: &str) -> Vec<String> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(key, _)| key.starts_with("InstanceId."))
        .map(|(_, value)| value.to_owned())
        .collect()
}

/// EC2's limit on user data, in bytes before base64.
pub const USER_DATA_LIMIT: usize = 16_384;

/// The decoded size of a RunInstances request's `UserData`.
fn user_data_size(body: &str) -> Option<usize> {
    let encoded = form_value(body, "UserData")?
        .replace("%2B", "+")
        .replace("%2F", "/")
        .replace("%3D", "=");
    aws_smithy_types::base64::decode(encoded)
        .ok()
        .map(|raw| raw.len())
}

fn form_value<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    body.split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

async fn handle(shared: Arc<Shared>, mut client: tokio::net::TcpStream) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let Some((request, body_start)) = crate::read_request(&mut client).await? else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&request[..body_start]).to_ascii_lowercase();
    let body = String::from_utf8_lossy(&request[body_start..]).into_owned();
    let target = head
        .lines()
        .find_map(|line| line.strip_prefix("x-amz-target:"))
        .map(|value| value.trim().to_owned())
        .unwrap_or_default();
    if let Some(operation) = target.strip_prefix("amazonssm.")
        && let Some(answer) = ssm(&shared, operation, &body).await
    {
        client.write_all(answer.as_bytes()).await?;
        return client.shutdown().await;
    }
    let action = form_value(&body, "Action").unwrap_or_default().to_owned();
    if action == "RunInstances"
        && let Some(size) = user_data_size(&body)
        && size > USER_DATA_LIMIT
    {
        // EC2 enforces what moto does not.
        let answer = respond(
            "400 Bad Request",
            "text/xml",
            &format!(
                "<Response><Errors><Error><Code>InvalidParameterValue</Code><Message>User data is limited to \
                 {USER_DATA_LIMIT} bytes (got {size})</Message></Error></Errors><RequestID>cloud</RequestID></Response>"
            ),
        );
        client.write_all(answer.as_bytes()).await?;
        return client.shutdown().await;
    }
    if action == "StopInstances" {
        // The box is down before EC2 says the instance is stopping.
        for id in instance_ids(&body) {
            let machine = shared.machines.lock().unwrap().get(&id).cloned();
            if let Some(machine) = machine {
                machine.registered.store(false, Ordering::SeqCst);
                let _power = machine.power.lock().await;
                if let Some(instance_box) = machine.instance_box() {
                    instance_box.shutdown().await;
                }
            }
        }
    }
    let response = exchange(&shared.moto, &request).await?;
    client.write_all(&response).await?;
    client.shutdown().await?;
    let text = String::from_utf8_lossy(&response);
    let ok = text.starts_with("HTTP/1.1 200");
    match action.as_str() {
        "RunInstances" if ok => {
            for id in text
                .split("<instanceId>")
                .skip(1)
                .filter_map(|rest| rest.split('<').next())
            {
                let machine = Arc::new(Machine {
                    id: id.to_owned(),
                    power: tokio::sync::Mutex::new(()),
                    instance_box: Mutex::new(None),
                    registered: AtomicBool::new(false),
                    not_registered: Mutex::new(None),
                    user_data: Mutex::new(None),
                    boots: Default::default(),
                    shipped: Mutex::new(HashMap::new()),
                });
                shared
                    .machines
                    .lock()
                    .unwrap()
                    .insert(id.to_owned(), Arc::clone(&machine));
                tokio::spawn(boot(Arc::clone(&shared), machine));
            }
        }
        "StartInstances" if ok => {
            for id in instance_ids(&body) {
                let machine = shared.machines.lock().unwrap().get(&id).cloned();
                if let Some(machine) = machine {
                    tokio::spawn(boot(Arc::clone(&shared), machine));
                }
            }
        }
        "TerminateInstances" if ok => {
            for id in instance_ids(&body) {
                let machine = shared.machines.lock().unwrap().remove(&id);
                if let Some(machine) = machine {
                    machine.registered.store(false, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let _power = machine.power.lock().await;
                        let taken = machine.instance_box.lock().unwrap().take();
                        if let Some(instance_box) = taken {
                            instance_box.destroy().await;
                        }
                    });
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Boots `machine`'s box (making it at the first boot), then registers it
/// with SSM when its role allows.
async fn boot(shared: Arc<Shared>, machine: Arc<Machine>) {
    let _power = machine.power.lock().await;
    let ec2 = crate::ec2_client().await;
    // moto reports the new address with `running`; poll briefly for it.
    let mut found = None;
    for _ in 0..100 {
        let answer = ec2
            .describe_instances()
            .instance_ids(&machine.id)
            .send()
            .await
            .expect("DescribeInstances");
        let instance = answer
            .reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find(|i| i.instance_id() == Some(machine.id.as_str()))
            .cloned();
        if let Some(instance) = instance
            && instance.public_ip_address().is_some()
        {
            found = Some(instance);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Some(instance) = found else {
        *machine.not_registered.lock().unwrap() = Some("no public IP".into());
        return;
    };
    let ip = instance.public_ip_address().unwrap_or_default().to_owned();
    let profile = instance
        .iam_instance_profile()
        .and_then(|p| p.arn())
        .map(str::to_owned);
    let first = machine.instance_box().is_none();
    let mut user_data = None;
    if first {
        let made = InstanceBox::create(&machine.id, shared.config.clone()).await;
        *machine.instance_box.lock().unwrap() = Some(Arc::new(made));
        let attribute = ec2
            .describe_instance_attribute()
            .instance_id(&machine.id)
            .attribute(aws_sdk_ec2::types::InstanceAttributeName::UserData)
            .send()
            .await
            .expect("DescribeInstanceAttribute");
        user_data = attribute
            .user_data()
            .and_then(|v| v.value())
            .map(|encoded| {
                String::from_utf8_lossy(
                    &aws_smithy_types::base64::decode(encoded).expect("base64 user data"),
                )
                .into_owned()
            });
    }
    let instance_box = machine.instance_box().expect("made above");
    let outcome = instance_box.boot(&ip, user_data.as_deref()).await;
    if outcome.is_some() {
        *machine.user_data.lock().unwrap() = outcome;
    }
    machine.boots.fetch_add(1, Ordering::SeqCst);
    match role_allows_ssm(profile.as_deref()).await {
        Ok(()) => {
            *machine.not_registered.lock().unwrap() = None;
            machine.registered.store(true, Ordering::SeqCst);
        }
        Err(why) => *machine.not_registered.lock().unwrap() = Some(why),
    }
}

async fn aws_json(args: &[&str]) -> Result<Value, String> {
    let cli = super::aws_cli().ok_or("the AWS CLI is not installed (JAAM_TEST_AWS_CLI)")?;
    let out = tokio::process::Command::new(cli)
        .args(args)
        .args(["--output", "json"])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

fn allows_ssm(document: &Value) -> bool {
    let statements = match &document["Statement"] {
        Value::Array(items) => items.clone(),
        other => vec![other.clone()],
    };
    statements.iter().any(|statement| {
        let actions = match &statement["Action"] {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        statement["Effect"] == "Allow"
            && actions
                .iter()
                .filter_map(Value::as_str)
                .any(|action| matches!(action, "*" | "ssm:*" | "ssm:UpdateInstanceInformation"))
    })
}

/// Whether the instance profile `arn`'s role allows the SSM agent to register.
async fn role_allows_ssm(arn: Option<&str>) -> Result<(), String> {
    let arn = arn.ok_or("the instance has no instance profile")?;
    let name = arn.rsplit('/').next().unwrap_or(arn);
    let profile = aws_json(&[
        "iam",
        "get-instance-profile",
        "--instance-profile-name",
        name,
    ])
    .await
    .map_err(|e| format!("instance profile {name}: {e}"))?;
    let roles: Vec<String> = profile["InstanceProfile"]["Roles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|role| role["RoleName"].as_str().map(str::to_owned))
        .collect();
    for role in &roles {
        let attached =
            aws_json(&["iam", "list-attached-role-policies", "--role-name", role]).await?;
        if attached["AttachedPolicies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["PolicyArn"].as_str())
            .any(|arn| arn.ends_with("/AmazonSSMManagedInstanceCore"))
        {
            return Ok(());
        }
        let inline = aws_json(&["iam", "list-role-policies", "--role-name", role]).await?;
        for policy in inline["PolicyNames"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            let got = aws_json(&[
                "iam",
                "get-role-policy",
                "--role-name",
                role,
                "--policy-name",
                policy,
            ])
            .await?;
            if allows_ssm(&got["PolicyDocument"]) {
                return Ok(());
            }
        }
    }
    Err(format!(
        "the roles of instance profile {name} ({}) do not allow the SSM core actions",
        roles.join(", ")
    ))
}

/// SSM's limit on a Standard parameter's value, in characters.
pub const STANDARD_PARAMETER_LIMIT: usize = 4_096;

/// Answers an SSM operation for boxed instances; `None` passes it to moto.
async fn ssm(shared: &Arc<Shared>, operation: &str, body: &str) -> Option<String> {
    let request: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    // SSM enforces what moto does not: a Standard parameter holds 4 KB.
    if operation == "putparameter"
        && request["Value"]
            .as_str()
            .is_some_and(|v| v.chars().count() > STANDARD_PARAMETER_LIMIT)
        && !matches!(
            request["Tier"].as_str(),
            Some("Advanced" | "Intelligent-Tiering")
        )
    {
        return Some(ssm_error(
            "ValidationException",
            "Standard tier parameters support a maximum parameter value of 4096 characters. \
             To create a larger parameter value, upgrade the parameter to use the advanced-parameter tier.",
        ));
    }
    let boxed = |id: &str| shared.machines.lock().unwrap().get(id).cloned();
    match operation {
        "sendcommand" => {
            let ids: Vec<String> = request["InstanceIds"]
                .as_array()?
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            let machines: Vec<Arc<Machine>> = ids.iter().filter_map(|id| boxed(id)).collect();
            if machines.is_empty() {
                return None;
            }
            if let Some(machine) = machines.iter().find(|m| !m.registered()) {
                return Some(ssm_error(
                    "InvalidInstanceId",
                    &format!(
                        "Instances [[{}]] not in a valid state for account 123456789012",
                        machine.id
                    ),
                ));
            }
            let commands: Vec<String> = request["Parameters"]["commands"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            let timeout: u64 = request["Parameters"]["executionTimeout"][0]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(3600);
            let command_id = uuid::Uuid::new_v4().to_string();
            let template = Invocation {
                command_id: command_id.clone(),
                instance_id: String::new(),
                comment: request["Comment"].as_str().unwrap_or_default().to_owned(),
                document: request["DocumentName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                commands: commands.clone(),
                status: "Pending",
                details: "Pending",
                code: -1,
                stdout: String::new(),
                stderr: String::new(),
                requested: now(),
            };
            for machine in machines {
                let invocation = Invocation {
                    instance_id: machine.id.clone(),
                    ..template.clone()
                };
                shared.invocations.lock().unwrap().push(invocation);
                tokio::spawn(run_invocation(
                    Arc::clone(shared),
                    machine,
                    command_id.clone(),
                    commands.join("\n"),
                    Duration::from_secs(timeout),
                ));
            }
            Some(ssm_ok(&json!({"Command": {
                "CommandId": command_id,
                "DocumentName": template.document,
                "Comment": template.comment,
                "InstanceIds": ids,
                "Parameters": {"commands": commands, "executionTimeout": [timeout.to_string()]},
                "Status": "Pending",
                "StatusDetails": "Pending",
                "RequestedDateTime": template.requested,
                "TargetCount": ids.len(),
            }})))
        }
        "getcommandinvocation" => {
            let command = request["CommandId"].as_str()?;
            let instance = request["InstanceId"].as_str()?;
            boxed(instance)?;
            let found = shared
                .invocations
                .lock()
                .unwrap()
                .iter()
                .find(|i| i.command_id == command && i.instance_id == instance)
                .cloned();
            Some(match found {
                None => ssm_error("InvocationDoesNotExist", ""),
                Some(i) => ssm_ok(&json!({
                    "CommandId": i.command_id,
                    "InstanceId": i.instance_id,
                    "Comment": i.comment,
                    "DocumentName": i.document,
                    "PluginName": "aws:runShellScript",
                    "ResponseCode": i.code,
                    "Status": i.status,
                    "StatusDetails": i.details,
                    "StandardOutputContent": first_chars(&i.stdout, STDOUT_LIMIT),
                    "StandardErrorContent": first_chars(&i.stderr, STDERR_LIMIT),
                })),
            })
        }
        "listcommandinvocations" | "listcommands" => {
            let command = request["CommandId"].as_str();
            let instance = request["InstanceId"].as_str();
            if instance.is_some_and(|id| boxed(id).is_none()) {
                return None;
            }
            let all = shared.invocations.lock().unwrap().clone();
            let matching: Vec<&Invocation> = all
                .iter()
                .filter(|i| command.is_none_or(|c| c == i.command_id))
                .filter(|i| instance.is_none_or(|id| id == i.instance_id))
                .collect();
            if matching.is_empty() && instance.is_none() {
                return None;
            }
            if operation == "listcommands" {
                let commands: Vec<Value> = matching
                    .iter()
                    .map(|i| {
                        json!({
                            "CommandId": i.command_id,
                            "DocumentName": i.document,
                            "Comment": i.comment,
                            "InstanceIds": [i.instance_id],
                            "Parameters": {"commands": i.commands},
                            "Status": i.status,
                            "StatusDetails": i.details,
                            "RequestedDateTime": i.requested,
                        })
                    })
                    .collect();
                return Some(ssm_ok(&json!({"Commands": commands})));
            }
            let invocations: Vec<Value> = matching
                .iter()
                .map(|i| {
                    json!({
                        "CommandId": i.command_id,
                        "InstanceId": i.instance_id,
                        "Comment": i.comment,
                        "DocumentName": i.document,
                        "Status": i.status,
                        "StatusDetails": i.details,
                        "RequestedDateTime": i.requested,
                        "CommandPlugins": [{
                            "Name": "aws:runShellScript",
                            "Status": i.status,
                            "StatusDetails": i.details,
                            "ResponseCode": i.code,
                            "Output": first_chars(&format!("{}{}", i.stdout, i.stderr), PLUGIN_OUTPUT_LIMIT),
                        }],
                    })
                })
                .collect();
            Some(ssm_ok(&json!({"CommandInvocations": invocations})))
        }
        "describeinstanceinformation" => {
            let machines: Vec<Arc<Machine>> =
                shared.machines.lock().unwrap().values().cloned().collect();
            let list: Vec<Value> = machines
                .iter()
                .filter(|m| m.registered())
                .map(|m| {
                    json!({
                        "InstanceId": m.id,
                        "PingStatus": "Online",
                        "LastPingDateTime": now(),
                        "AgentVersion": "3.3.0.0",
                        "IsLatestVersion": true,
                        "PlatformType": "Linux",
                        "PlatformName": "Amazon Linux",
                        "ResourceType": "EC2Instance",
                    })
                })
                .collect();
            Some(ssm_ok(&json!({"InstanceInformationList": list})))
        }
        _ => None,
    }
}

async fn run_invocation(
    shared: Arc<Shared>,
    machine: Arc<Machine>,
    command_id: String,
    script: String,
    timeout: Duration,
) {
    let update = |change: &dyn Fn(&mut Invocation)| {
        let mut all = shared.invocations.lock().unwrap();
        if let Some(invocation) = all
            .iter_mut()
            .find(|i| i.command_id == command_id && i.instance_id == machine.id)
        {
            change(invocation);
        }
    };
    update(&|i| {
        i.status = "InProgress";
        i.details = "InProgress";
    });
    let ran = match machine.instance_box() {
        Some(instance_box) if instance_box.is_running() => {
            Some(instance_box.run(&script, timeout).await)
        }
        _ => None,
    };
    update(&|i| match &ran {
        None => {
            i.status = "Failed";
            i.details = "Undeliverable";
        }
        Some(ran) => {
            i.stdout = ran.stdout.clone();
            i.stderr = ran.stderr.clone();
            match ran.code {
                Some(0) => {
                    i.status = "Success";
                    i.details = "Success";
                    i.code = 0;
                }
                Some(code) => {
                    i.status = "Failed";
                    i.details = "Failed";
                    i.code = i64::from(code);
                }
                None => {
                    i.status = "TimedOut";
                    i.details = "ExecutionTimedOut";
                    i.code = -1;
                }
            }
        }
    });
}

/// Ships what was appended to the files the box's agent configuration lists.
async fn ship_logs(logs: &aws_sdk_cloudwatchlogs::Client, machine: &Machine) {
    let targets: Vec<(std::path::PathBuf, String, String)> = {
        let Some(instance_box) = machine.instance_box().filter(|b| b.is_running()) else {
            return;
        };
        let etc = "/opt/aws/amazon-cloudwatch-agent/etc";
        if !instance_box.host_path(&format!("{etc}/running")).exists() {
            return;
        }
        let Ok(configs) =
            std::fs::read_dir(instance_box.host_path(&format!("{etc}/amazon-cloudwatch-agent.d")))
        else {
            return;
        };
        let mut targets = Vec::new();
        for config in configs.flatten() {
            let Ok(text) = std::fs::read_to_string(config.path()) else {
                continue;
            };
            let parsed: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            for file in parsed["logs"]["logs_collected"]["files"]["collect_list"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let (Some(path), Some(group), Some(stream)) = (
                    file["file_path"].as_str(),
                    file["log_group_name"].as_str(),
                    file["log_stream_name"].as_str(),
                ) {
                    targets.push((
                        instance_box.host_path(path),
                        group.to_owned(),
                        stream.to_owned(),
                    ));
                }
            }
        }
        targets
    };
    for (path, group, stream) in targets {
        let key = path.display().to_string();
        let offset = *machine.shipped.lock().unwrap().get(&key).unwrap_or(&0);
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let Some(end) = bytes.iter().rposition(|b| *b == b'\n').map(|i| i + 1) else {
            continue;
        };
        if (end as u64) <= offset {
            continue;
        }
        let text = String::from_utf8_lossy(&bytes[offset as usize..end]).into_owned();
        let stamp = i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or_default();
        let events: Vec<_> = text
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| {
                aws_sdk_cloudwatchlogs::types::InputLogEvent::builder()
                    .timestamp(stamp)
                    .message(line)
                    .build()
                    .expect("log event")
            })
            .collect();
        let _ = logs
            .create_log_stream()
            .log_group_name(&group)
            .log_stream_name(&stream)
            .send()
            .await;
        if events.is_empty()
            || logs
                .put_log_events()
                .log_group_name(&group)
                .log_stream_name(&stream)
                .set_log_events(Some(events))
                .send()
                .await
                .is_ok()
        {
            machine.shipped.lock().unwrap().insert(key, end as u64);
        }
    }
}

/// A Git server on loopback serving bare repositories over HTTP (the dumb
/// protocol: `git update-server-info` after every push), in place of
/// `https://github.com/` for the boxes.
pub struct GitServer {
    /// The port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    server: tokio::process::Child,
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "jaam tests")
        .env("GIT_AUTHOR_EMAIL", "tests@jaam.invalid")
        .env("GIT_COMMITTER_NAME", "jaam tests")
        .env("GIT_COMMITTER_EMAIL", "tests@jaam.invalid")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

impl GitServer {
    /// Starts an empty server.
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("git server directory");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let server = tokio::process::Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .arg("--directory")
            .arg(dir.path().join("srv"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 http.server");
        std::fs::create_dir_all(dir.path().join("srv")).expect("served directory");
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Self { port, dir, server }
    }

    /// `http://127.0.0.1:PORT/` (what `https://github.com/` becomes in a box).
    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// Commits the files of `app` (a directory), then `changes` (path →
    /// content), to `repo`'s `main` and publishes it; returns the commit id.
    pub fn push(&self, repo: &str, app: &std::path::Path, changes: &[(&str, &str)]) -> String {
        let work = self.dir.path().join("work").join(repo);
        if !work.exists() {
            std::fs::create_dir_all(&work).expect("work tree");
            git(&work, &["init", "--quiet", "--initial-branch", "main"]);
        }
        let sha = commit(&work, app, changes, "jaam test commit");
        self.publish(repo, &work, "main:main");
        sha
    }

    /// Commits the files of `app`, then `changes`, on top of `repo`'s `main`
    /// as pull request `number`'s head (`refs/pull/NUMBER/head`, where
    /// GitHub keeps every pull request's commits, a fork's too); returns the
    /// commit id. `main` is left as it was.
    pub fn push_pull(
        &self,
        repo: &str,
        number: u64,
        app: &std::path::Path,
        changes: &[(&str, &str)],
    ) -> String {
        let work = self.dir.path().join("work").join(repo);
        let branch = format!("jaam-pr-{number}");
        git(&work, &["checkout", "--quiet", "-B", &branch, "main"]);
        let sha = commit(
            &work,
            app,
            changes,
            &format!("jaam test pull request #{number}"),
        );
        self.publish(repo, &work, &format!("{branch}:refs/pull/{number}/head"));
        git(&work, &["checkout", "--quiet", "main"]);
        sha
    }

    /// Pushes `refspec` of the work tree `work` to `repo`'s served copy.
    fn publish(&self, repo: &str, work: &std::path::Path, refspec: &str) {
        let bare = self.dir.path().join("srv").join(format!("{repo}.git"));
        if !bare.exists() {
            std::fs::create_dir_all(&bare).expect("bare repository");
            git(&bare, &["init", "--quiet", "--bare"]);
        }
        git(
            work,
            &[
                "push",
                "--quiet",
                "--force",
                bare.to_str().unwrap(),
                refspec,
            ],
        );
        git(&bare, &["update-server-info"]);
    }
}

/// Copies `app` into the work tree `work`, applies `changes`, commits
/// everything with `message`; returns the commit id.
fn commit(
    work: &std::path::Path,
    app: &std::path::Path,
    changes: &[(&str, &str)],
    message: &str,
) -> String {
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(format!("{}/.", app.display()))
        .arg(work)
        .status()
        .expect("cp");
    assert!(copy.success());
    for (path, content) in changes {
        let target = work.join(path);
        std::fs::create_dir_all(target.parent().unwrap()).expect("dir");
        std::fs::write(target, content).expect("change");
    }
    git(work, &["add", "-A"]);
    git(work, &["commit", "--quiet", "--allow-empty", "-m", message]);
    git(work, &["rev-parse", "HEAD"])
}

impl Drop for GitServer {
    fn drop(&mut self) {
        let _ = self.server.start_kill();
    }
}

use std::process::Stdio;
