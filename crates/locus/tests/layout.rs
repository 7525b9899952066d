//! The workspace keeps the shape ARCHITECTURE.md draws: every crate is in
//! the crate map and every row of the map is a crate; dependencies point
//! downwards (pure ← edges ← services ← agent ← api ← binary); no service
//! reaches back into the agent; the agent stays a composition root.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Each crate's normal (not dev) dependencies on other locus crates.
fn locus_deps() -> BTreeMap<String, BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        let Ok(text) = std::fs::read_to_string(dir.join("Cargo.toml")) else {
            continue;
        };
        let manifest: toml::Table = toml::from_str(&text).unwrap();
        let name = manifest["package"]["name"].as_str().unwrap().to_owned();
        assert_eq!(
            dir.file_name().unwrap().to_str().unwrap(),
            name,
            "folder name = crate name"
        );
        let deps = manifest
            .get("dependencies")
            .and_then(|d| d.as_table())
            .map(|d| {
                d.keys()
                    .filter(|k| k.starts_with("locus"))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        out.insert(name, deps);
    }
    out
}

#[test]
fn the_crate_map_names_every_crate_and_only_crates() {
    let text = std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap();
    let map = text
        .split("## Crate map")
        .nth(1)
        .expect("ARCHITECTURE.md has a crate map")
        .split("\n## ")
        .next()
        .unwrap();
    let rows: BTreeSet<String> = map
        .lines()
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .map(str::to_owned)
        .collect();
    let crates: BTreeSet<String> = locus_deps().into_keys().collect();
    assert_eq!(rows, crates, "crate map rows vs crates/*");
}

/// The layer of the service crates, which may hold each other's handles
/// (only those the architecture names).
const SERVICES: u32 = 4;

#[test]
fn dependencies_point_downwards() {
    let deps = locus_deps();
    let layer = |name: &str| match name {
        "locus-core" => 0,
        "locus-sched" | "locus-iot" | "locus-access" => 1,
        // Pure too: the market's rules are stated over orgs and certificates.
        "locus-market" => 2,
        "locus-store" | "locus-fabric" | "locus-runtime" => 3,
        "locus-artifacts" | "locus-readings" | "locus-things" | "locus-workloads"
        | "locus-trust" | "locus-marketplace" => SERVICES,
        "locus-agent" => 5,
        "locus-api" => 6,
        "locus" => 7,
        "locus-testkit" => 8,
        other => panic!("{other} has no layer: add it here and to ARCHITECTURE.md"),
    };
    for (name, uses) in &deps {
        for d in uses {
            assert!(
                layer(d) < layer(name) || (layer(d) == SERVICES && layer(name) == SERVICES),
                "{name} depends on {d}, which is not below it"
            );
            assert_ne!(d, "locus-testkit", "{name} ships the test harness");
        }
    }
    // Between services, only the handles the architecture names.
    let services = [
        "locus-artifacts",
        "locus-readings",
        "locus-things",
        "locus-workloads",
        "locus-trust",
        "locus-marketplace",
    ];
    let mut between: Vec<(String, String)> = Vec::new();
    for s in services {
        for d in &deps[s] {
            if services.contains(&d.as_str()) {
                between.push((s.to_owned(), d.clone()));
            }
        }
    }
    between.sort();
    assert_eq!(
        between,
        [
            ("locus-things".to_owned(), "locus-readings".to_owned()),
            ("locus-trust".to_owned(), "locus-readings".to_owned()),
        ],
        "service-to-service handles"
    );
    // The pure crates stay pure: nothing but pure crates below them.
    for p in [
        "locus-core",
        "locus-sched",
        "locus-iot",
        "locus-access",
        "locus-market",
    ] {
        assert!(
            deps[p]
                .iter()
                .all(|d| d == "locus-core" || d == "locus-access"),
            "{p} depends on {:?}",
            deps[p]
        );
    }
}

/// Lines of Rust outside `#[cfg(test)]` modules and `tests.rs` files.
fn non_test_lines(dir: &Path) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            n += non_test_lines(&path);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|f| f != "tests.rs")
        {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            n += code.lines().count();
        }
    }
    n
}

#[test]
fn the_agent_stays_a_composition_root() {
    let lines = non_test_lines(&root().join("crates/locus-agent/src"));
    eprintln!("locus-agent: {lines} lines of non-test Rust");
    assert!(
        lines <= 3000,
        "locus-agent has {lines} lines of non-test Rust; a domain belongs in its own crate"
    );
}

/// `crate::module` paths used by each top-level module of `src` (outside
/// its tests): who imports whom inside one crate.
fn module_edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    fn walk(dir: &Path, top: Option<&str>, out: &mut Vec<(String, String)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let module = top.map_or(stem.clone(), str::to_owned);
            if path.is_dir() {
                walk(&path, Some(&module), out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                let code = text.split("#[cfg(test)]").next().unwrap().to_owned();
                out.push((module, code));
            }
        }
    }
    let mut files = Vec::new();
    walk(src, None, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in &files {
        if module == "lib" || module == "main" {
            continue;
        }
        for part in code.split("crate::").skip(1) {
            let used: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if used != *module && modules.contains(&used) {
                edges.entry(module.clone()).or_default().insert(used);
            }
        }
    }
    edges
}

#[test]
fn no_module_imports_itself_back() {
    for entry in std::fs::read_dir(root().join("crates")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if !src.is_dir() {
            continue;
        }
        let edges = module_edges(&src);
        // A cycle exists when a module reaches itself.
        for start in edges.keys() {
            let mut seen = BTreeSet::new();
            let mut stack: Vec<&String> = edges[start].iter().collect();
            while let Some(m) = stack.pop() {
                assert_ne!(
                    m,
                    start,
                    "{}: module {start} imports itself back through {seen:?}",
                    src.display()
                );
                if seen.insert(m.clone()) {
                    stack.extend(edges.get(m).into_iter().flatten());
                }
            }
        }
    }
}
