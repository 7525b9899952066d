//! `panel::annual_kwh` against pvlib's PVWatts chain on the shipped
//! Greensboro TMY3 year: the two must agree within 5 %.
//!
//! The Python side is `tests/pvwatts.py`, run with
//! `target/pyenv/bin/python`, where `scripts/test.sh` installs pvlib
//! (`scripts/requirements-test.txt`). Without it the test fails, saying so.

use std::path::{Path, PathBuf};
use std::process::Command;

use locus_energy::irradiance::parse_tmy3;
use locus_energy::panel::{Panel, annual_kwh};

const TOLERANCE: f64 = 0.05;

fn panels() -> Vec<(&'static str, Panel)> {
    let base = Panel {
        peak_w: 1000.0,
        tilt_deg: 30.0,
        azimuth_deg: 180.0,
        gamma_per_c: -0.0047,
        losses: 0.14,
        albedo: 0.2,
    };
    vec![
        ("south_30", base),
        (
            "east_10",
            Panel {
                tilt_deg: 10.0,
                azimuth_deg: 90.0,
                ..base
            },
        ),
        (
            "west_45_5kw",
            Panel {
                peak_w: 5000.0,
                tilt_deg: 45.0,
                azimuth_deg: 250.0,
                gamma_per_c: -0.0035,
                losses: 0.10,
                albedo: 0.3,
            },
        ),
    ]
}

fn python() -> PathBuf {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/pyenv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/test.sh, which installs pvlib there (scripts/requirements-test.txt)",
        python.display()
    );
    python
}

fn tmy3_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/greensboro-nc-tmy3.csv")
}

/// pvlib's annual kWh for each panel, by name.
fn pvlib_kwh(panels: &[(&str, Panel)]) -> serde_json::Map<String, serde_json::Value> {
    let spec: Vec<serde_json::Value> = panels
        .iter()
        .map(|(name, p)| {
            serde_json::json!({
                "name": name,
                "peak_w": p.peak_w,
                "tilt_deg": p.tilt_deg,
                "azimuth_deg": p.azimuth_deg,
                "gamma_per_c": p.gamma_per_c,
                "losses": p.losses,
                "albedo": p.albedo,
            })
        })
        .collect();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pvwatts.py");
    let out = Command::new(python())
        .arg(&script)
        .arg(tmy3_path())
        .arg(serde_json::Value::Array(spec).to_string())
        .output()
        .expect("run target/pyenv/bin/python");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{} failed ({}); if pvlib is missing, run scripts/test.sh (pvlib is in scripts/requirements-test.txt):\n{stderr}",
        script.display(),
        out.status
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "pvwatts.py printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    println!("pvlib {}", json["pvlib"]);
    json["annual_kwh"]
        .as_object()
        .expect("annual_kwh is an object")
        .clone()
}

#[test]
fn annual_energy_agrees_with_pvlib_pvwatts_within_5_percent() {
    let text = std::fs::read_to_string(tmy3_path()).expect("read the shipped TMY3 year");
    let year = parse_tmy3(&text).expect("parse the shipped TMY3 year");
    let panels = panels();
    let reference = pvlib_kwh(&panels);
    let mut failures = Vec::new();
    for (name, panel) in &panels {
        let ours = annual_kwh(&year, panel);
        let theirs = reference[*name]
            .as_f64()
            .unwrap_or_else(|| panic!("no pvlib figure for {name}"));
        let diff = (ours - theirs) / theirs;
        println!(
            "{name}: locus {ours:.1} kWh, pvlib {theirs:.1} kWh, difference {:+.2} %",
            diff * 100.0
        );
        if diff.is_nan() || diff.abs() > TOLERANCE {
            failures.push(format!(
                "{name}: {ours} vs {theirs} ({:+.2} %)",
                diff * 100.0
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "more than 5 % from pvlib: {failures:?}"
    );
}
