//! `jaam-iam-check LOG POLICY`: fails, naming them, when the IAM policy
//! document POLICY does not allow an operation in LOG (see
//! [`jaam_tests::iam_policy`]).

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, log, policy] = args.as_slice() else {
        eprintln!("usage: jaam-iam-check OPERATION_LOG POLICY_JSON");
        std::process::exit(2);
    };
    let log = std::fs::read_to_string(log).unwrap_or_else(|e| {
        eprintln!("error: cannot read the operation log {log}: {e}");
        std::process::exit(2);
    });
    let text = std::fs::read_to_string(policy).unwrap_or_else(|e| {
        eprintln!("error: cannot read {policy}: {e}");
        std::process::exit(2);
    });
    let document: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        eprintln!("error: {policy}: {e}");
        std::process::exit(2);
    });
    let operations = log.lines().filter(|l| !l.trim().is_empty()).count();
    if operations == 0 {
        eprintln!(
            "error: the operation log is empty: was JAAM_AWS_OPERATION_LOG set for the tests?"
        );
        std::process::exit(1);
    }
    let missing = jaam_tests::iam_policy::uncovered(&log, &document);
    if missing.is_empty() {
        let distinct: std::collections::BTreeSet<&str> = log.lines().collect();
        println!(
            "{policy} allows all {} distinct AWS operations the tests made jaam perform",
            distinct.len()
        );
        return;
    }
    eprintln!("error: {policy} does not allow these operations jaam performed in the tests:");
    for operation in &missing {
        eprintln!("  {operation}");
    }
    std::process::exit(1);
}
