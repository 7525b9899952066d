use super::*;
use proptest::prelude::*;
use serde_json::json;

const NOW: f64 = 1_700_000_000.0;

fn res(j: Json) -> Result<Vec<Record>, SenmlError> {
    resolve(j.to_string().as_bytes(), NOW)
}

fn num(r: &Record) -> f64 {
    match r.value {
        Some(Value::Number(x)) => x,
        ref v => panic!("{v:?}"),
    }
}

/// RFC 8428 §5.1.4 ("Multiple Measurements") and its resolved form in
/// §5.1.5, from the SenML specification repository (core-wg/senml-spec,
/// ex5.gen.json and ex5.gen.resolved.json).
#[test]
fn rfc_multiple_measurements_resolve_as_published() {
    let pack = r#"[
      {"bn":"urn:dev:ow:10e2073a01080063","bt":1.320067464e+09,"bu":"%RH","v":20},
      {"u":"lon","v":24.30621},
      {"u":"lat","v":60.07965},
      {"t":60,"v":20.3},
      {"u":"lon","t":60,"v":24.30622},
      {"u":"lat","t":60,"v":60.07965},
      {"t":120,"v":20.7},
      {"u":"lon","t":120,"v":24.30623},
      {"u":"lat","t":120,"v":60.07966},
      {"u":"%EL","t":150,"v":98},
      {"t":180,"v":21.2},
      {"u":"lon","t":180,"v":24.30628},
      {"u":"lat","t":180,"v":60.07967}
    ]"#;
    let resolved = r#"[
      {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067464e+09,"v":20},
      {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067464e+09,"v":24.30621},
      {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067464e+09,"v":60.07965},
      {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067524e+09,"v":20.3},
      {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067524e+09,"v":24.30622},
      {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067524e+09,"v":60.07965},
      {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067584e+09,"v":20.7},
      {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067584e+09,"v":24.30623},
      {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067584e+09,"v":60.07966},
      {"n":"urn:dev:ow:10e2073a01080063","u":"%EL","t":1.320067614e+09,"v":98},
      {"n":"urn:dev:ow:10e2073a01080063","u":"%RH","t":1.320067644e+09,"v":21.2},
      {"n":"urn:dev:ow:10e2073a01080063","u":"lon","t":1.320067644e+09,"v":24.30628},
      {"n":"urn:dev:ow:10e2073a01080063","u":"lat","t":1.320067644e+09,"v":60.07967}
    ]"#;
    let got = resolve(pack.as_bytes(), NOW).unwrap();
    let want = resolve(resolved.as_bytes(), NOW).unwrap();
    assert_eq!(got.len(), 13);
    assert_eq!(got, want);
    assert_eq!(got[9].unit.as_deref(), Some("%EL"));
    assert_eq!(got[9].time, 1_320_067_614.0);
}

/// RFC 8428 §5.1.2 (relative times before a base time) and §5.1.6
/// (several data types, at "now").
#[test]
fn rfc_relative_times_and_data_types() {
    let pack = json!([
      {"bn":"urn:dev:ow:10e2073a01080063:","bt":1.276020076001e+09,"bu":"A","bver":5,"n":"voltage","u":"V","v":120.1},
      {"n":"current","t":-5,"v":1.2},
      {"n":"current","t":-4,"v":1.3},
      {"n":"current","t":-3,"v":1.4},
      {"n":"current","t":-2,"v":1.5},
      {"n":"current","t":-1,"v":1.6},
      {"n":"current","v":1.7}
    ]);
    let r = res(pack).unwrap();
    assert_eq!(r[0].name, "urn:dev:ow:10e2073a01080063:voltage");
    assert_eq!(r[0].unit.as_deref(), Some("V"));
    assert_eq!(r[1].unit.as_deref(), Some("A"));
    assert_eq!(r[1].time, 1.276020071001e9);
    assert_eq!(r[6].time, 1.276020076001e9);
    assert_eq!(num(&r[5]), 1.6);

    let pack = json!([
      {"bn":"urn:dev:ow:10e2073a01080063:","n":"temp","u":"Cel","v":23.1},
      {"n":"label","vs":"Machine Room"},
      {"n":"open","vb":false},
      {"n":"nfv-reader","vd":"aGkgCg"}
    ]);
    let r = res(pack).unwrap();
    assert!(r.iter().all(|r| r.time == NOW));
    assert_eq!(r[1].value, Some(Value::String("Machine Room".into())));
    assert_eq!(r[2].value, Some(Value::Bool(false)));
    assert_eq!(r[3].value, Some(Value::Data(b"hi \n".to_vec())));
    assert_eq!(r[3].name, "urn:dev:ow:10e2073a01080063:nfv-reader");
}

#[test]
fn base_values_sums_and_relative_times() {
    let r = res(json!([
        {"bn": "dev/", "bv": 100, "bs": 10, "n": "a", "v": 1},
        {"n": "b", "v": -1, "s": 5},
        {"n": "c", "vs": "x"},
        {"n": "d", "bs": 0, "s": 2, "t": -60},
        {"n": "e", "t": 5}
    ]))
    .unwrap();
    assert_eq!(num(&r[0]), 101.0);
    assert_eq!(r[0].sum, Some(10.0));
    assert_eq!(num(&r[1]), 99.0);
    assert_eq!(r[1].sum, Some(15.0));
    assert_eq!(r[2].sum, Some(10.0));
    assert_eq!((r[3].value.clone(), r[3].sum), (None, Some(2.0)));
    assert_eq!(r[3].time, NOW - 60.0);
    // Only a (base) sum: the reading carries the sum.
    assert_eq!((r[4].value.clone(), r[4].sum), (None, Some(0.0)));
    assert_eq!(r[4].time, NOW + 5.0);
    let reading = r[3].to_reading("thing").unwrap();
    assert_eq!(reading.value(), &Value::Number(2.0));
    assert_eq!(reading.resource(), "dev/d");
    assert_eq!(reading.time_ms(), 1_699_999_940_000);
    // An absolute base time with a relative-looking offset stays absolute.
    let r = res(json!([{"n":"x","bt":1.5e9,"t":-10,"v":1},{"n":"y","t":0.25,"v":2}])).unwrap();
    assert_eq!((r[0].time, r[1].time), (1.5e9 - 10.0, 1.5e9 + 0.25));
    // Units: u overrides bu, an empty u means none.
    let r = res(json!([{"n":"x","bu":"V","v":1},{"n":"y","u":"A","v":1},{"n":"z","u":"","v":1},{"n":"w","v":1}])).unwrap();
    let units: Vec<_> = r.iter().map(|r| r.unit.as_deref()).collect();
    assert_eq!(units, [Some("V"), Some("A"), None, Some("V")]);
    assert_eq!(
        res(json!([{"n":"x","v":1,"ut":30}])).unwrap()[0].update_time,
        Some(30.0)
    );
}

#[test]
fn bad_records_name_the_record_and_field() {
    let e = |j: Json| res(j).unwrap_err();
    assert_eq!(e(json!([{"n": "a"}])), SenmlError::NoValue { index: 0 });
    assert_eq!(
        e(json!([{"n": "a", "v": 1}, {"n": "b", "v": 1, "vs": "x"}])),
        SenmlError::MultipleValues {
            index: 1,
            fields: "v, vs".into()
        }
    );
    assert_eq!(
        e(json!([{"n": "a", "v": "1"}])),
        SenmlError::Type {
            index: 0,
            field: "v".into(),
            expected: "a number",
            found: "a string"
        }
    );
    assert!(matches!(
        e(json!([{"n": "a", "vb": 1}])),
        SenmlError::Type { field, .. } if field == "vb"
    ));
    assert!(matches!(
        e(json!([{"n": 3, "v": 1}])),
        SenmlError::Type { field, .. } if field == "n"
    ));
    assert_eq!(
        e(json!([{"v": 1}])),
        SenmlError::Name {
            index: 0,
            name: "".into(),
            why: "is empty".into()
        }
    );
    assert!(matches!(
        e(json!([{"n": "/3303/0/5700", "v": 1}])),
        SenmlError::Name { why, .. } if why.contains("starts with '/'")
    ));
    assert!(matches!(
        e(json!([{"bn": "a", "v": 1}, {"n": "b c", "v": 1}])),
        SenmlError::Name { index: 1, name, why } if name == "ab c" && why == "has ' ' at byte 2"
    ));
    assert_eq!(
        e(json!([{"n": "a", "v": 1, "foo_": 1}])),
        SenmlError::MustUnderstand {
            index: 0,
            field: "foo_".into()
        }
    );
    assert_eq!(
        e(json!([{"n": "a", "v": 1, "bver": 11}])),
        SenmlError::Version {
            index: 0,
            version: "11".into()
        }
    );
    assert!(matches!(
        e(json!([{"n": "a", "v": 1, "bver": 1.5}])),
        SenmlError::Version { .. }
    ));
    assert_eq!(
        e(json!([{"n": "a", "bv": 1e308, "v": 1e308}])),
        SenmlError::NotFinite {
            index: 0,
            field: "v"
        }
    );
    assert!(matches!(
        e(json!([{"n": "a", "v": 1, "t": 1e300}])),
        SenmlError::Time { index: 0, .. }
    ));
    assert!(matches!(
        e(json!([{"n": "a", "vd": "a+b/"}])),
        SenmlError::Data { index: 0, .. }
    ));
    assert_eq!(
        e(json!([{"n": "a", "v": 1}, 7])),
        SenmlError::NotAnObject {
            index: 1,
            found: "a number"
        }
    );
    assert_eq!(
        e(json!({"n": "a"})),
        SenmlError::TopLevel { found: "an object" }
    );
    let many: Vec<Json> = (0..=MAX_RECORDS).map(|_| json!({"n":"a","v":1})).collect();
    assert_eq!(
        e(Json::Array(many)),
        SenmlError::TooMany {
            count: MAX_RECORDS + 1,
            max: MAX_RECORDS
        }
    );
    match resolve(b"[{\"n\":\"a\",\n \"v\": nope}]", NOW) {
        Err(SenmlError::Json { line: 2, .. }) => {}
        other => panic!("{other:?}"),
    }
    // Unknown fields without '_' are ignored; the value needs no name
    // field when the base name is enough.
    let r = res(json!([{"bn": "a", "v": 1, "l": "[]", "x": {}}])).unwrap();
    assert_eq!(r[0].name, "a");
}

#[test]
fn simple_reading_form() {
    let r = parse(
        br#"{"resource": "temp", "value": 21.5, "unit": "Cel", "time": 1700000000.25}"#,
        NOW,
    )
    .unwrap();
    assert_eq!(
        r,
        vec![Record {
            name: "temp".into(),
            unit: Some("Cel".into()),
            time: 1_700_000_000.25,
            value: Some(Value::Number(21.5)),
            sum: None,
            update_time: None,
        }]
    );
    assert_eq!(r[0].to_reading("t1").unwrap().time_ms(), 1_700_000_000_250);
    let r = parse(br#"{"resource": "door", "value": false}"#, NOW).unwrap();
    assert_eq!(
        (r[0].time, r[0].value.clone()),
        (NOW, Some(Value::Bool(false)))
    );
    let r = parse(br#"{"resource": "label", "value": "on"}"#, NOW).unwrap();
    assert_eq!(r[0].value, Some(Value::String("on".into())));

    let e = |s: &str| parse(s.as_bytes(), NOW).unwrap_err();
    assert_eq!(
        e(r#"{"resource": "t", "value": 1, "untis": "C"}"#),
        SenmlError::Unknown {
            index: 0,
            field: "untis".into()
        }
    );
    assert_eq!(e(r#"{"resource": "t"}"#), SenmlError::NoValue { index: 0 });
    assert!(matches!(
        e(r#"{"resource": "t", "value": null}"#),
        SenmlError::Type { field, found: "null", .. } if field == "value"
    ));
    assert!(matches!(
        e(r#"{"resource": "t", "value": [1]}"#),
        SenmlError::Type { .. }
    ));
    assert!(matches!(
        e(r#"{"resource": "a b", "value": 1}"#),
        SenmlError::Name { .. }
    ));
    assert!(matches!(
        e(r#"{"resource": 1, "value": 1}"#),
        SenmlError::Type { field, .. } if field == "resource"
    ));
    assert!(matches!(
        e(r#"{"resource": "t", "value": 1, "time": "now"}"#),
        SenmlError::Type { field, .. } if field == "time"
    ));
    assert!(matches!(
        e(r#"{"resource": "t", "value": 1, "time": 1e300}"#),
        SenmlError::Time { .. }
    ));
    assert_eq!(e("3"), SenmlError::TopLevel { found: "a number" });
}

#[test]
fn resource_map_form() {
    let r = parse(br#"{"temp": 21.5, "door": false, "label": "x"}"#, NOW).unwrap();
    let got: Vec<_> = r
        .iter()
        .map(|r| (r.name.as_str(), r.value.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("door", Some(Value::Bool(false))),
            ("label", Some(Value::String("x".into()))),
            ("temp", Some(Value::Number(21.5))),
        ]
    );
    assert!(r.iter().all(|r| r.time == NOW && r.unit.is_none()));
    assert!(parse(b"{}", NOW).unwrap().is_empty());
    assert!(matches!(
        parse(br#"{"temp": {"v": 1}}"#, NOW),
        Err(SenmlError::Type { field, .. }) if field == "temp"
    ));
    assert!(matches!(
        parse(br#"{"bad name": 1}"#, NOW),
        Err(SenmlError::Name { .. })
    ));
}

// --- Property tests ---

fn arb_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<f64>().prop_map(|x| serde_json::Number::from_f64(x).map_or(Json::Null, Json::Number)),
        any::<i64>().prop_map(|x| json!(x)),
        prop_oneof![
            Just("bn"),
            Just("n"),
            Just("v"),
            Just("vs"),
            Just("vb"),
            Just("vd"),
            Just("bt"),
            Just("t"),
            Just("u"),
            Just("bu"),
            Just("bv"),
            Just("s"),
            Just("bs"),
            Just("bver"),
            Just("resource"),
            Just("value"),
            Just("time"),
            Just("unit"),
            Just("a_"),
            Just("aGkgCg"),
        ]
        .prop_map(|s| Json::String(s.into())),
        "\\PC{0,8}".prop_map(Json::String),
    ];
    leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Json::Array),
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("bn"),
                        Just("n"),
                        Just("v"),
                        Just("vs"),
                        Just("vb"),
                        Just("vd"),
                        Just("bt"),
                        Just("t"),
                        Just("u"),
                        Just("bu"),
                        Just("bv"),
                        Just("s"),
                        Just("bs"),
                        Just("bver"),
                        Just("ut"),
                        Just("resource"),
                        Just("value"),
                        Just("time"),
                        Just("unit"),
                        Just("x_"),
                        Just("temp"),
                    ],
                    inner
                ),
                0..8
            )
            .prop_map(|kv| Json::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

/// A resolved record with values that survive base arithmetic exactly.
fn arb_record(prefix: &'static str) -> impl Strategy<Value = Record> {
    (
        "[a-z0-9][a-z0-9:._/-]{0,8}",
        proptest::option::of(prop_oneof![Just("Cel"), Just("%RH"), Just("V")]),
        (1_500_000_000i64..1_800_000_000, 0u32..4),
        prop_oneof![
            (-1_000_000i64..1_000_000).prop_map(|x| Value::Number(x as f64 / 4.0)),
            "\\PC{0,10}".prop_map(Value::String),
            any::<bool>().prop_map(Value::Bool),
            proptest::collection::vec(any::<u8>(), 0..12).prop_map(Value::Data),
        ],
    )
        .prop_map(move |(n, unit, (secs, quarter), value)| Record {
            name: format!("{prefix}{n}"),
            unit: unit.map(str::to_owned),
            time: secs as f64 + f64::from(quarter) / 4.0,
            value: Some(value),
            sum: None,
            update_time: None,
        })
}

/// Write resolved records as a SenML pack that uses every base field it
/// can: bn, bt, bu (when every record has the same unit) and bv.
fn to_pack(records: &[Record], prefix: &str, bv: i64) -> Json {
    let bt = records.first().map_or(0.0, |r| r.time);
    let first_unit = records.first().and_then(|r| r.unit.clone());
    let same_unit = first_unit.is_some() && records.iter().all(|r| r.unit == first_unit);
    let mut out = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let mut o = Map::new();
        if i == 0 {
            o.insert("bn".into(), json!(prefix));
            o.insert("bt".into(), json!(bt));
            o.insert("bv".into(), json!(bv));
            if same_unit {
                o.insert("bu".into(), json!(first_unit));
            }
        }
        o.insert("n".into(), json!(&r.name[prefix.len()..]));
        let dt = r.time - bt;
        if dt != 0.0 {
            o.insert("t".into(), json!(dt));
        }
        if !same_unit && let Some(u) = &r.unit {
            o.insert("u".into(), json!(u));
        }
        match r.value.as_ref().unwrap() {
            Value::Number(x) => o.insert("v".into(), json!(x - bv as f64)),
            Value::String(s) => o.insert("vs".into(), json!(s)),
            Value::Bool(b) => o.insert("vb".into(), json!(b)),
            Value::Data(d) => o.insert(
                "vd".into(),
                json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d)),
            ),
        };
        out.push(Json::Object(o));
    }
    Json::Array(out)
}

proptest! {
    #[test]
    fn arbitrary_json_never_panics(j in arb_json()) {
        let s = j.to_string();
        let _ = resolve(s.as_bytes(), NOW);
        if let Ok(records) = parse(s.as_bytes(), NOW) {
            for r in records {
                prop_assert!(r.time.is_finite());
                prop_assert!(r.value.is_some() || r.sum.is_some());
                let _ = r.to_reading("t");
            }
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse(&bytes, NOW);
    }

    #[test]
    fn a_generated_pack_resolves_to_its_records(
        records in proptest::collection::vec(arb_record("urn:dev:x:"), 1..12),
        bv in -1000i64..1000,
    ) {
        let pack = to_pack(&records, "urn:dev:x:", bv);
        let got = resolve(pack.to_string().as_bytes(), NOW).unwrap();
        prop_assert_eq!(&got, &records);
        for (r, g) in records.iter().zip(&got) {
            let reading = g.to_reading("thing").unwrap();
            prop_assert_eq!(reading.resource(), r.name.as_str());
            prop_assert_eq!(reading.time_ms() as f64, r.time * 1000.0);
        }
    }
}
