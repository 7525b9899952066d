use super::*;
use crate::tlv::{self, Kind};
use proptest::prelude::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn p(object: u16, instance: Option<u16>) -> ObjectPath {
    ObjectPath { object, instance }
}

#[test]
fn server_instance_is_the_spec_example() {
    // LwM2M 1.0 §6.4.3.2 C): /1/0 with short id 1, lifetime 86400,
    // notification storing true, binding U.
    let t = Server::new(0, 1, 86400).to_tlv().unwrap();
    assert_eq!(
        tlv::encode(&[t]).unwrap(),
        unhex("08000FC10001C40100015180C10601C10755")
    );
}

#[test]
fn server_instance_checks_its_fields() {
    assert_eq!(
        Server::new(0, 0, 60).to_tlv(),
        Err(Lwm2mError::ShortServerId(0))
    );
    assert_eq!(
        Server::new(0, 65535, 60).to_tlv(),
        Err(Lwm2mError::ShortServerId(65535))
    );
    assert_eq!(Server::new(0, 1, 0).to_tlv(), Err(Lwm2mError::Lifetime));
    let s = Server {
        binding: Binding::UQ,
        store_notifications: false,
        ..Server::new(3, 123, 300)
    };
    let t = s.to_tlv().unwrap();
    assert_eq!(t.id(), 3);
    assert_eq!(t.child(server_res::BINDING).unwrap().as_str(), Ok("UQ"));
    assert_eq!(
        t.child(server_res::NOTIFICATION_STORING).unwrap().as_bool(),
        Ok(false)
    );
    assert_eq!(t.child(server_res::LIFETIME).unwrap().as_int(), Ok(300));
}

fn decoded(s: &Security) -> Tlv {
    let bytes = tlv::encode(&[s.to_tlv().unwrap()]).unwrap();
    let mut top = tlv::decode(&bytes).unwrap();
    assert_eq!(top.len(), 1);
    top.remove(0)
}

#[test]
fn nosec_security_instance() {
    let s = Security {
        instance: 0,
        server_uri: "coap://192.0.2.7:5683".into(),
        mode: SecurityMode::NoSec,
        short_server_id: 101,
    };
    let t = decoded(&s);
    assert_eq!(t.kind(), Kind::ObjectInstance);
    use security_res::*;
    let r = |id| t.child(id).unwrap();
    assert_eq!(r(SERVER_URI).as_str(), Ok("coap://192.0.2.7:5683"));
    assert_eq!(r(BOOTSTRAP_SERVER).as_bool(), Ok(false));
    assert_eq!(r(SECURITY_MODE).as_int(), Ok(3));
    assert_eq!(r(PUBLIC_KEY_OR_IDENTITY).value(), Ok(&[][..]));
    assert_eq!(r(SERVER_PUBLIC_KEY).value(), Ok(&[][..]));
    assert_eq!(r(SECRET_KEY).value(), Ok(&[][..]));
    assert_eq!(r(SHORT_SERVER_ID).as_int(), Ok(101));
    // Byte for byte: 0x08 0x00 len, then each resource with the shortest
    // header.
    let bytes = tlv::encode(&[s.to_tlv().unwrap()]).unwrap();
    let mut want = vec![0x08, 0x00, 0];
    want.extend([0xC8, 0x00, 21]);
    want.extend(b"coap://192.0.2.7:5683");
    want.extend([0xC1, 0x01, 0x00, 0xC1, 0x02, 0x03]);
    want.extend([0xC0, 0x03, 0xC0, 0x04, 0xC0, 0x05]);
    want.extend([0xC1, 0x0A, 101]);
    want[2] = (want.len() - 3) as u8;
    assert_eq!(bytes, want);
}

#[test]
fn psk_security_instance() {
    let s = Security {
        instance: 1,
        server_uri: "coaps://[2001:db8::1]:5684".into(),
        mode: SecurityMode::Psk {
            identity: b"thing-42".to_vec(),
            key: vec![0x11; 16],
        },
        short_server_id: 65534,
    };
    let t = decoded(&s);
    use security_res::*;
    let r = |id| t.child(id).unwrap();
    assert_eq!(r(SECURITY_MODE).as_int(), Ok(0));
    assert_eq!(r(PUBLIC_KEY_OR_IDENTITY).value(), Ok(&b"thing-42"[..]));
    assert_eq!(r(SECRET_KEY).value(), Ok(&[0x11; 16][..]));
    assert_eq!(r(SHORT_SERVER_ID).as_int(), Ok(65534));
}

#[test]
fn security_instance_checks_its_fields() {
    let nosec = |uri: &str| Security {
        instance: 0,
        server_uri: uri.into(),
        mode: SecurityMode::NoSec,
        short_server_id: 1,
    };
    for bad in [
        "coaps://h:5684",
        "http://h",
        "coap://",
        "coap:///x",
        "coap://h x",
        "",
    ] {
        assert!(
            matches!(nosec(bad).to_tlv(), Err(Lwm2mError::ServerUri { .. })),
            "{bad}"
        );
    }
    let psk = |identity: Vec<u8>, key: Vec<u8>| Security {
        mode: SecurityMode::Psk { identity, key },
        ..nosec("coaps://h:5684")
    };
    assert!(psk(b"id".to_vec(), vec![1]).to_tlv().is_ok());
    assert!(nosec("coap://h").to_tlv().is_ok());
    assert_eq!(
        psk(vec![], vec![1]).to_tlv(),
        Err(Lwm2mError::Psk {
            what: "identity",
            len: 0,
            why: "it is empty"
        })
    );
    assert_eq!(
        psk(b"id".to_vec(), vec![0; 65]).to_tlv(),
        Err(Lwm2mError::Psk {
            what: "key",
            len: 65,
            why: "it is too long"
        })
    );
    assert!(matches!(
        Security {
            mode: SecurityMode::Psk {
                identity: b"i".to_vec(),
                key: vec![1]
            },
            ..nosec("coap://h")
        }
        .to_tlv(),
        Err(Lwm2mError::ServerUri { .. })
    ));
    assert_eq!(
        Security {
            short_server_id: 0,
            ..nosec("coap://h")
        }
        .to_tlv(),
        Err(Lwm2mError::ShortServerId(0))
    );
}

#[test]
fn register_payload_of_lwm2m_1_0() {
    let l = parse_links(br#"</1/0>,</3/0>,</3303/0>;rt="x""#).unwrap();
    assert_eq!(l.root, "/");
    assert_eq!(l.objects, [p(1, Some(0)), p(3, Some(0)), p(3303, Some(0))]);
}

#[test]
fn register_payload_from_leshan() {
    // The core-link value of Leshan's LwM2mNodeDecoderTest (object 3442):
    // an LwM2M 1.1 Register payload, carried in a TLV.
    let t = tlv::decode(&unhex(concat!(
        "080072c8b46f3c2f3e3b72743d226f6d612e6c776d326d223b63743d22363020313130",
        "2031313220313534322031353433203131353432203131353433222c3c2f313e3b7665",
        "723d312e312c3c2f312f303e2c3c2f323e2c3c2f333e3b7665723d312e312c3c2f332f",
        "303e2c3c2f333434322f303e"
    )))
    .unwrap();
    let payload = t[0].child(180).unwrap().value().unwrap();
    assert_eq!(
        std::str::from_utf8(payload).unwrap(),
        r#"</>;rt="oma.lwm2m";ct="60 110 112 1542 1543 11542 11543",</1>;ver=1.1,</1/0>,</2>,</3>;ver=1.1,</3/0>,</3442/0>"#
    );
    let l = parse_links(payload).unwrap();
    assert_eq!(l.root, "/");
    assert_eq!(
        l.objects,
        [
            p(1, None),
            p(1, Some(0)),
            p(2, None),
            p(3, None),
            p(3, Some(0)),
            p(3442, Some(0))
        ]
    );
}

#[test]
fn alternate_root_path() {
    let l =
        parse_links(br#"</lwm2m/1/0>, </lwm2m>;rt="oma.lwm2m";ct=11543, </lwm2m/3/0>"#).unwrap();
    assert_eq!(l.root, "/lwm2m");
    assert_eq!(l.objects, [p(1, Some(0)), p(3, Some(0))]);
    assert_eq!(
        l.to_link_format(),
        r#"</lwm2m>;rt="oma.lwm2m",</lwm2m/1/0>,</lwm2m/3/0>"#
    );
    let e = parse_links(br#"</lwm2m>;rt="oma.lwm2m",</1/0>"#).unwrap_err();
    assert_eq!(
        e,
        Lwm2mError::Link {
            offset: 24,
            why: "link </1/0> is outside the root path /lwm2m".into()
        }
    );
    // A root link with several resource types, unquoted parameters, and
    // an empty payload.
    let l = parse_links(br#"</a/>;rt="x oma.lwm2m";ct=40,</a/5>"#).unwrap();
    assert_eq!((l.root.as_str(), l.objects), ("/a", vec![p(5, None)]));
    assert_eq!(
        parse_links(b"").unwrap(),
        Links {
            root: "/".into(),
            objects: vec![]
        }
    );
}

#[test]
fn link_errors_name_the_byte() {
    let off = |s: &str| match parse_links(s.as_bytes()) {
        Err(Lwm2mError::Link { offset, why }) => (offset, why),
        other => panic!("{s}: {other:?}"),
    };
    assert_eq!(off("</1/0>,</3/x>").0, 7);
    assert_eq!(off("</1/0>,").0, 7);
    assert_eq!(off("</1/0>;").0, 7);
    assert_eq!(off("</1/0>;a=").0, 9);
    assert_eq!(off("</1/0> </2>").0, 7);
    assert_eq!(off("</1/0").0, 0);
    assert_eq!(off("1/0").0, 0);
    assert_eq!(off(r#"</1>;rt="abc"#).0, 12);
    assert_eq!(
        off("</1/0/1>").1,
        "link </1/0/1> is not /object or /object/instance"
    );
    assert_eq!(off("</1/65535>").0, 0);
    assert_eq!(off("</70000>").0, 0);
    assert_eq!(off("</+1>").0, 0);
    assert_eq!(off("</1/>").0, 0);
    assert_eq!(off("<1/0>").0, 0);
    assert_eq!(
        off(r#"</a>;rt="oma.lwm2m",</b>;rt="oma.lwm2m""#),
        (20, "a second link with rt=\"oma.lwm2m\"".into())
    );
    let (o, why) = match parse_links(b"</1/0>,\xff") {
        Err(Lwm2mError::Link { offset, why }) => (offset, why),
        other => panic!("{other:?}"),
    };
    assert_eq!((o, why.as_str()), (7, "not UTF-8"));
    let many = vec!["</1>"; MAX_LINKS + 1].join(",");
    assert!(off(&many).1.contains("more than"));
}

fn arb_links() -> impl Strategy<Value = Links> {
    (
        prop_oneof![Just("/".to_owned()), "/[a-z]{1,8}"],
        proptest::collection::vec(
            (any::<u16>(), proptest::option::of(0u16..65535)).prop_map(|(o, i)| p(o, i)),
            0..20,
        ),
    )
        .prop_map(|(root, objects)| Links { root, objects })
}

fn arb_param() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(";ver=1.1".to_owned()),
        Just(";ct=11543".to_owned()),
        Just(";obs".to_owned()),
        "[a-z ,;<>]{0,12}".prop_map(|v| format!(";rt=\"{}\"", v.replace('"', ""))),
        Just(";title=\"a \\\"quoted\\\" \\\\ name\"".to_owned()),
    ]
}

proptest! {
    #[test]
    fn link_format_round_trips(links in arb_links()) {
        prop_assert_eq!(parse_links(links.to_link_format().as_bytes()).unwrap(), links);
    }

    #[test]
    fn parameters_do_not_change_the_paths(links in arb_links(), params in proptest::collection::vec(arb_param(), 20)) {
        // Rebuild the payload with parameters after every object link.
        let prefix = if links.root == "/" { "" } else { links.root.as_str() };
        let mut parts = Vec::new();
        if !prefix.is_empty() {
            parts.push(format!("<{prefix}>;rt=\"oma.lwm2m\";ct=11543"));
        }
        for (o, extra) in links.objects.iter().zip(params.iter().cycle()) {
            parts.push(format!("<{prefix}{o}>{extra}"));
        }
        let payload = parts.join(",");
        prop_assert_eq!(parse_links(payload.as_bytes()).unwrap(), links);
    }

    #[test]
    fn arbitrary_payloads_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..128), s in "[</>0-9a-z;=\",. ]{0,64}") {
        let _ = parse_links(&bytes);
        let _ = parse_links(s.as_bytes());
    }
}

#[test]
fn bootstrap_requests_come_in_order() {
    let security = Security {
        instance: 0,
        server_uri: "coap://127.0.0.1:5683".into(),
        mode: SecurityMode::NoSec,
        short_server_id: 7,
    };
    let server = Server::new(0, 7, 300);
    let reqs = bootstrap_requests(&security, &server).unwrap();
    let shape: Vec<(Method, &str, Option<u16>)> = reqs
        .iter()
        .map(|r| (r.method, r.path.as_str(), r.content_format))
        .collect();
    assert_eq!(
        shape,
        [
            (Method::Delete, "/0", None),
            (Method::Delete, "/1", None),
            (Method::Put, "/0/0", Some(11542)),
            (Method::Put, "/1/0", Some(11542)),
            (Method::Post, "/bs", None),
        ]
    );
    assert_eq!(
        reqs[2].payload,
        tlv::encode(&[security.to_tlv().unwrap()]).unwrap()
    );
    assert_eq!(
        reqs[3].payload,
        tlv::encode(&[server.to_tlv().unwrap()]).unwrap()
    );
    assert_eq!(reqs[2].segments().collect::<Vec<_>>(), ["0", "0"]);
    assert_eq!(
        bootstrap_requests(&security, &Server::new(0, 8, 300)),
        Err(Lwm2mError::ShortServerIdMismatch {
            security: 7,
            server: 8
        })
    );
    assert!(matches!(
        bootstrap_requests(
            &Security {
                server_uri: "http://x".into(),
                ..security.clone()
            },
            &server
        ),
        Err(Lwm2mError::ServerUri { .. })
    ));
}

#[test]
fn bindings_parse_by_name() {
    for b in Binding::ALL {
        assert_eq!(Binding::parse(b.as_str()), Some(b));
    }
    assert_eq!(Binding::parse("T"), None);
    assert_eq!(Binding::parse("u"), None);
}

#[test]
fn a_bootstrap_discover_asks_for_link_format_and_finds_the_free_instance() {
    let d = bootstrap_discover();
    assert_eq!((d.method, d.path.as_str()), (Method::Get, "/0"));
    assert_eq!(d.accept, Some(content::LINK_FORMAT));
    // A 1.1 client that kept its Bootstrap-Server account at /0/0.
    let kept = parse_links(b"</>;lwm2m=1.1,</0/0>").unwrap();
    assert_eq!(free_instance(&kept, SECURITY_OBJECT), 1);
    // Accounts at /0/0 and /0/2 (and an instance of another object).
    let gaps = parse_links(b"</>;lwm2m=1.1,</0/0>,</0/2>;ssid=9,</1/1>").unwrap();
    assert_eq!(free_instance(&gaps, SECURITY_OBJECT), 1);
    assert_eq!(free_instance(&gaps, SERVER_OBJECT), 0);
    // Nothing kept: the first instance.
    let none = parse_links(b"</0>").unwrap();
    assert_eq!(free_instance(&none, SECURITY_OBJECT), 0);
}

#[test]
fn the_writes_go_to_the_instances_chosen() {
    let security = Security {
        instance: 1,
        server_uri: "coap://127.0.0.1:5683".into(),
        mode: SecurityMode::NoSec,
        short_server_id: 7,
    };
    let writes = bootstrap_writes(&security, &Server::new(0, 7, 300)).unwrap();
    let paths: Vec<&str> = writes.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/0/1", "/1/0", "/bs"]);
    let clear: Vec<String> = bootstrap_clear().into_iter().map(|r| r.path).collect();
    assert_eq!(clear, ["/0", "/1"]);
}

proptest! {
    #[test]
    fn the_free_instance_is_never_one_the_client_listed(ids in proptest::collection::btree_set(0u16..64, 0..40)) {
        let payload: Vec<String> = ids.iter().map(|i| format!("</0/{i}>")).collect();
        let links = parse_links(payload.join(",").as_bytes()).unwrap();
        let free = free_instance(&links, SECURITY_OBJECT);
        prop_assert!(!ids.contains(&free));
        prop_assert!((0..free).all(|i| ids.contains(&i)));
    }
}

#[test]
fn senml_json_bootstrap_writes_carry_the_same_resources_as_tlv() {
    let security = Security {
        instance: 1,
        server_uri: "coaps://127.0.0.1:5684".into(),
        mode: SecurityMode::Psk {
            identity: b"dev-1".to_vec(),
            key: vec![9; 16],
        },
        short_server_id: 7,
    };
    let server = Server::new(0, 7, 300);
    let writes = bootstrap_writes_as(&security, &server, content::SENML_JSON).unwrap();
    let shape: Vec<(Method, &str, Option<u16>)> = writes
        .iter()
        .map(|r| (r.method, r.path.as_str(), r.content_format))
        .collect();
    assert_eq!(
        shape,
        [
            (Method::Put, "/0/1", Some(110)),
            (Method::Put, "/1/0", Some(110)),
            (Method::Post, "/bs", None),
        ]
    );
    let records = crate::senml::resolve_lwm2m(&writes[0].payload).unwrap();
    let by_name = |n: &str| records.iter().find(|r| r.name == n).unwrap().value.clone();
    assert_eq!(
        by_name("/0/1/0"),
        Some(crate::Value::String("coaps://127.0.0.1:5684".into()))
    );
    assert_eq!(by_name("/0/1/1"), Some(crate::Value::Bool(false)));
    assert_eq!(by_name("/0/1/2"), Some(crate::Value::Number(0.0)));
    assert_eq!(
        by_name("/0/1/3"),
        Some(crate::Value::Data(b"dev-1".to_vec()))
    );
    assert_eq!(by_name("/0/1/5"), Some(crate::Value::Data(vec![9; 16])));
    assert_eq!(by_name("/0/1/10"), Some(crate::Value::Number(7.0)));
    let records = crate::senml::resolve_lwm2m(&writes[1].payload).unwrap();
    assert_eq!(records.len(), 4);
    assert_eq!(records[1].name, "/1/0/1");
    assert_eq!(records[1].value, Some(crate::Value::Number(300.0)));
    // TLV stays byte-identical to what it was.
    assert_eq!(
        bootstrap_writes(&security, &server).unwrap()[0].payload,
        tlv::encode(&[security.to_tlv().unwrap()]).unwrap()
    );
}

#[test]
fn senml_cbor_bootstrap_writes_read_back_as_the_json_ones() {
    let security = Security {
        instance: 2,
        server_uri: "coap://127.0.0.1:5683".into(),
        mode: SecurityMode::NoSec,
        short_server_id: 9,
    };
    let server = Server::new(0, 9, 60);
    let json = bootstrap_writes_as(&security, &server, content::SENML_JSON).unwrap();
    let cbor = bootstrap_writes_as(&security, &server, content::SENML_CBOR).unwrap();
    assert_eq!(cbor[0].content_format, Some(content::SENML_CBOR));
    assert_eq!(cbor[0].path, "/0/2");
    for i in 0..2 {
        assert_eq!(
            crate::senml::resolve_lwm2m_cbor(&cbor[i].payload).unwrap(),
            crate::senml::resolve_lwm2m(&json[i].payload).unwrap()
        );
    }
}
