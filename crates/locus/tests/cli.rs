//! The CLI as a client: tables, JSON, exit codes.

use locus_testkit::*;

#[test]
fn node_status_and_devices_ls_print_tables_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        &dir.path().join("node"),
        &["--name", "cli-test", "--site", "lab"],
    );
    let api = agent.api();

    let out = locus(&["--api", &api, "node", "status"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("name        cli-test"), "{text}");
    assert!(text.contains("site        lab"), "{text}");

    let out = locus(&["--api", &api, "--json", "node", "status"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["name"], "cli-test");
    assert_eq!(json, {
        let mut live = get_json(&agent, "/api/v1/node");
        // Fields that move between two calls.
        for moving in ["uptime_secs", "inventory"] {
            live[moving] = json[moving].clone();
        }
        live
    });

    let out = locus(&["--api", &api, "devices", "ls", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let devices: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(devices, get_json(&agent, "/api/v1/devices"));
    let out = locus(&["--api", &api, "devices", "ls"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("ID") || text.contains("no attachable devices"),
        "{text}"
    );

    // LOCUS_API selects the node too.
    let out = std::process::Command::new(bin())
        .args(["node", "status", "--json"])
        .env("LOCUS_API", &api)
        .env("LOCUS_DATA_DIR", &agent.data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn exit_codes_distinguish_usage_from_failure() {
    let out = locus(&["no-such-command"]);
    assert_eq!(out.status.code(), Some(2));
    let out = locus(&["--api", "not a url", "node", "status"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --api"));

    let closed = free_addr();
    let out = locus(&["--api", &format!("http://{closed}"), "node", "status"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the locus agent"), "{stderr}");

    let out = locus(&["version"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("locus {}", env!("CARGO_PKG_VERSION"))
    );
    let out = locus(&["version", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));

    let out = locus(&["--help"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit codes"));
}

#[test]
fn an_api_error_reaches_the_user_with_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start(&dir.path().join("node"), &[]);
    // Point the CLI at a base path that does not exist: the agent answers
    // with its JSON error envelope, which the CLI reports.
    let out = locus(&[
        "--api",
        &format!("{}/nowhere", agent.api()),
        "node",
        "status",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("404") && stderr.contains("not_found"),
        "{stderr}"
    );
}
