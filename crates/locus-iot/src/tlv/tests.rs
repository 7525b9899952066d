use super::*;
use proptest::prelude::*;

fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// Examples of the LwM2M 1.0 specification (§6.4.3.1 / §6.4.3.2 / §6.4.3.3),
// as carried by Eclipse Leshan's LwM2mNodeDecoderTest.
const DEVICE: &str = "C800144F70656E204D6F62696C6520416C6C69616E6365\
                      C801164C69676874776569676874204D324D20436C69656E74\
                      C80209333435303030313233\
                      C303312E30\
                      86064100014101 05\
                      88070842000ED842011388\
                      870841007D42010384\
                      C10964\
                      C10A0F\
                      830B410000\
                      C40D5182428F\
                      C60E2B30323A3030\
                      C11055";
const ACL: &str = "08000EC10001C101008302417F07C1037F\
                   080212C10003C101008702417F0761013601C1037F";
const SERVER: &str = "08000FC10001C40100015180C10601C10755";
const OBJ65: &str = "88000C440000420000440100420001C8010D38363133383030373535353030C40212345678";
const OBJ66: &str = "080026C8000B6D79536572766963652031C8010F496E7465726E65742E31352E323334C40200430000\
                     080126C8000B6D79536572766963652032C8010F496E7465726E65742E31352E323335C402FFFFFFFF";

fn check_device(res: &[Tlv]) {
    let inst = Tlv::object_instance(0, res.to_vec());
    let r = |id| inst.child(id).unwrap();
    assert_eq!(r(0).as_str(), Ok("Open Mobile Alliance"));
    assert_eq!(r(1).as_str(), Ok("Lightweight M2M Client"));
    assert_eq!(r(2).as_str(), Ok("345000123"));
    assert_eq!(r(3).as_str(), Ok("1.0"));
    let ints = |t: &Tlv| -> Vec<(u16, i64)> {
        t.children()
            .iter()
            .map(|c| (c.id(), c.as_int().unwrap()))
            .collect()
    };
    assert_eq!(r(6).kind(), Kind::MultipleResource);
    assert_eq!(ints(r(6)), [(0, 1), (1, 5)]);
    assert_eq!(ints(r(7)), [(0, 3800), (1, 5000)]);
    assert_eq!(ints(r(8)), [(0, 125), (1, 900)]);
    assert_eq!(r(9).as_int(), Ok(100));
    assert_eq!(r(10).as_int(), Ok(15));
    assert_eq!(ints(r(11)), [(0, 0)]);
    assert_eq!(r(13).as_int(), Ok(1367491215));
    assert_eq!(r(14).as_str(), Ok("+02:00"));
    assert_eq!(r(16).as_str(), Ok("U"));
}

#[test]
fn spec_device_resources() {
    let bytes = unhex(DEVICE);
    let res = decode(&bytes).unwrap();
    assert_eq!(res.len(), 13);
    check_device(&res);
    assert_eq!(encode(&res).unwrap(), bytes);
}

#[test]
fn spec_device_instance() {
    let mut bytes = unhex("080079");
    bytes.extend(unhex(DEVICE));
    let top = decode(&bytes).unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!(top[0].kind(), Kind::ObjectInstance);
    assert_eq!(top[0].id(), 0);
    check_device(top[0].children());
    assert_eq!(encode(&top).unwrap(), bytes);
}

#[test]
fn spec_acl_instances() {
    let bytes = unhex(ACL);
    let top = decode(&bytes).unwrap();
    assert_eq!(
        top,
        vec![
            Tlv::object_instance(
                0,
                vec![
                    Tlv::resource(0, vec![1]),
                    Tlv::resource(1, vec![0]),
                    Tlv::multiple(2, vec![Tlv::instance(127, vec![7])]),
                    Tlv::resource(3, vec![127]),
                ]
            ),
            Tlv::object_instance(
                2,
                vec![
                    Tlv::resource(0, vec![3]),
                    Tlv::resource(1, vec![0]),
                    Tlv::multiple(
                        2,
                        vec![Tlv::instance(127, vec![7]), Tlv::instance(310, vec![1])]
                    ),
                    Tlv::resource(3, vec![127]),
                ]
            ),
        ]
    );
    assert_eq!(encode(&top).unwrap(), bytes);
}

#[test]
fn spec_server_instance() {
    let bytes = unhex(SERVER);
    let top = decode(&bytes).unwrap();
    let i = &top[0];
    assert_eq!(i.child(0).unwrap().as_int(), Ok(1));
    assert_eq!(i.child(1).unwrap().as_int(), Ok(86400));
    assert_eq!(i.child(6).unwrap().as_bool(), Ok(true));
    assert_eq!(i.child(7).unwrap().as_str(), Ok("U"));
    assert_eq!(encode(&top).unwrap(), bytes);
}

#[test]
fn spec_object_links() {
    let bytes = unhex(OBJ65);
    let top = decode(&bytes).unwrap();
    let links: Vec<_> = top[0]
        .children()
        .iter()
        .map(|c| c.as_objlnk().unwrap())
        .collect();
    assert_eq!(links, [(66, 0), (66, 1)]);
    assert_eq!(top[1].as_str(), Ok("8613800755500"));
    assert_eq!(top[2].as_int(), Ok(305419896));
    assert_eq!(encode(&top).unwrap(), bytes);

    let bytes = unhex(OBJ66);
    let top = decode(&bytes).unwrap();
    assert_eq!(top[0].child(0).unwrap().as_str(), Ok("myService 1"));
    assert_eq!(top[0].child(1).unwrap().as_str(), Ok("Internet.15.234"));
    assert_eq!(top[0].child(2).unwrap().as_objlnk(), Ok((67, 0)));
    assert_eq!(top[1].child(2).unwrap().as_objlnk(), Ok((0xFFFF, 0xFFFF)));
    assert_eq!(encode(&top).unwrap(), bytes);
}

#[test]
fn sixteen_bit_ids_and_long_lengths() {
    // Resource 5850 (On/Off) = true.
    let bytes = unhex("E116DA01");
    assert_eq!(decode(&bytes).unwrap(), vec![Tlv::resource(5850, vec![1])]);
    assert_eq!(encode(&[Tlv::resource(5850, vec![1])]).unwrap(), bytes);
    for (len, head) in [
        (7usize, vec![0xC7, 0x01]),
        (8, vec![0xC8, 0x01, 8]),
        (255, vec![0xC8, 0x01, 0xFF]),
        (256, vec![0xD0, 0x01, 0x01, 0x00]),
        (65535, vec![0xD0, 0x01, 0xFF, 0xFF]),
        (65536, vec![0xD8, 0x01, 0x01, 0x00, 0x00]),
    ] {
        let t = vec![Tlv::resource(1, vec![0xAB; len])];
        let enc = encode(&t).unwrap();
        assert_eq!(&enc[..head.len()], &head[..], "len {len}");
        assert_eq!(enc.len(), head.len() + len);
        assert_eq!(decode(&enc).unwrap(), t);
    }
    assert_eq!(
        encode(&[Tlv::resource(2, vec![0; MAX_LEN + 1])]),
        Err(TlvError::TooLong {
            kind: Kind::Resource,
            id: 2,
            len: MAX_LEN + 1
        })
    );
}

#[test]
fn decoder_accepts_longer_forms() {
    // A 16-bit id and a 16-bit length for a 1-byte value: not minimal, valid.
    let bytes = unhex("F0 0009 0001 64");
    assert_eq!(decode(&bytes).unwrap(), vec![Tlv::resource(9, vec![100])]);
}

#[test]
fn errors_carry_the_offset() {
    let tr = |hex: &str| decode(&unhex(hex)).unwrap_err();
    assert_eq!(
        tr("C1"),
        TlvError::Truncated {
            offset: 1,
            part: "identifier",
            need: 1,
            have: 0
        }
    );
    assert_eq!(
        tr("E100"),
        TlvError::Truncated {
            offset: 1,
            part: "identifier",
            need: 2,
            have: 1
        }
    );
    assert_eq!(
        tr("C10964 D801 0000"),
        TlvError::Truncated {
            offset: 5,
            part: "length",
            need: 3,
            have: 2
        }
    );
    assert_eq!(
        tr("C10964 C30141"),
        TlvError::Truncated {
            offset: 5,
            part: "value",
            need: 3,
            have: 1
        }
    );
    // Inside an object instance, offsets are absolute.
    assert_eq!(
        tr("0800 05 C10101 C101"),
        TlvError::Truncated {
            offset: 8,
            part: "value",
            need: 1,
            have: 0
        }
    );
    // Wrong nesting, with the offset of the offending entry.
    assert_eq!(
        tr("0800 03 410001"),
        TlvError::Nesting {
            offset: 3,
            parent: Kind::ObjectInstance,
            child: Kind::ResourceInstance
        }
    );
    assert_eq!(
        tr("8801 03 C10001"),
        TlvError::Nesting {
            offset: 3,
            parent: Kind::MultipleResource,
            child: Kind::Resource
        }
    );
    assert_eq!(
        tr("0800 03 000100"),
        TlvError::Nesting {
            offset: 3,
            parent: Kind::ObjectInstance,
            child: Kind::ObjectInstance
        }
    );
    let e = encode(&[Tlv::object_instance(
        1,
        vec![Tlv::object_instance(2, vec![])],
    )]);
    assert!(matches!(e, Err(TlvError::Nesting { .. })), "{e:?}");
}

#[test]
fn typed_values() {
    for (v, n) in [
        (0i64, 1),
        (-128, 1),
        (127, 1),
        (128, 2),
        (-129, 2),
        (32767, 2),
        (32768, 4),
        (i64::from(i32::MIN), 4),
        (i64::from(i32::MAX) + 1, 8),
        (i64::MIN, 8),
        (i64::MAX, 8),
    ] {
        let b = value::int(v);
        assert_eq!(b.len(), n, "{v}");
        assert_eq!(Tlv::resource(0, b).as_int(), Ok(v));
    }
    assert_eq!(value::float(1.5).len(), 4);
    assert_eq!(value::float(0.1).len(), 8);
    assert_eq!(Tlv::resource(0, value::float(0.1)).as_float(), Ok(0.1));
    assert_eq!(Tlv::resource(0, value::float(-2.25)).as_float(), Ok(-2.25));
    assert!(
        Tlv::resource(0, value::float(f64::NAN))
            .as_float()
            .unwrap()
            .is_nan()
    );
    assert_eq!(Tlv::resource(0, value::boolean(true)).as_bool(), Ok(true));
    assert_eq!(Tlv::resource(0, value::boolean(false)).as_bool(), Ok(false));
    assert_eq!(Tlv::resource(0, value::string("é")).as_str(), Ok("é"));
    assert_eq!(
        Tlv::resource(0, value::objlnk(3, 4)).as_objlnk(),
        Ok((3, 4))
    );

    let r = |v: &[u8]| Tlv::resource(7, v.to_vec());
    assert_eq!(
        r(&[0; 3]).as_int(),
        Err(TlvError::Value {
            kind: Kind::Resource,
            id: 7,
            expected: "integer (1, 2, 4 or 8 bytes)",
            len: 3
        })
    );
    assert!(r(&[0; 2]).as_float().is_err());
    assert_eq!(
        r(&[2]).as_bool(),
        Err(TlvError::Bool {
            kind: Kind::Resource,
            id: 7,
            value: 2
        })
    );
    assert!(r(&[]).as_bool().is_err());
    assert_eq!(
        r(b"a\xffb").as_str(),
        Err(TlvError::Utf8 {
            kind: Kind::Resource,
            id: 7,
            at: 1
        })
    );
    assert!(r(&[0; 5]).as_objlnk().is_err());
    assert_eq!(
        Tlv::multiple(3, vec![]).as_int(),
        Err(TlvError::NotAValue {
            kind: Kind::MultipleResource,
            id: 3
        })
    );
}

fn arb_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..12),
        1 => proptest::collection::vec(any::<u8>(), 250..300),
    ]
}

fn arb_instance() -> impl Strategy<Value = Tlv> {
    (any::<u16>(), arb_value()).prop_map(|(id, v)| Tlv::instance(id, v))
}

fn arb_resource() -> impl Strategy<Value = Tlv> {
    prop_oneof![
        (any::<u16>(), arb_value()).prop_map(|(id, v)| Tlv::resource(id, v)),
        (
            any::<u16>(),
            proptest::collection::vec(arb_instance(), 0..5)
        )
            .prop_map(|(id, i)| Tlv::multiple(id, i)),
    ]
}

fn arb_top() -> impl Strategy<Value = Tlv> {
    prop_oneof![
        (
            any::<u16>(),
            proptest::collection::vec(arb_resource(), 0..6)
        )
            .prop_map(|(id, r)| Tlv::object_instance(id, r)),
        arb_resource(),
        arb_instance(),
    ]
}

proptest! {
    #[test]
    fn encode_decode_round_trip(tree in proptest::collection::vec(arb_top(), 0..5)) {
        let bytes = encode(&tree).unwrap();
        prop_assert_eq!(decode(&bytes).unwrap(), tree);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(tree) = decode(&bytes) {
            // Whatever decodes re-encodes, and the minimal form decodes the same.
            let again = encode(&tree).unwrap();
            prop_assert_eq!(decode(&again).unwrap(), tree);
            prop_assert!(again.len() <= bytes.len());
        }
    }

    #[test]
    fn mutated_encodings_never_panic(tree in proptest::collection::vec(arb_top(), 1..4), at in any::<usize>(), byte in any::<u8>(), cut in any::<usize>()) {
        let mut bytes = encode(&tree).unwrap();
        if !bytes.is_empty() {
            let i = at % bytes.len();
            bytes[i] = byte;
            let _ = decode(&bytes);
            bytes.truncate(cut % (bytes.len() + 1));
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn ints_and_floats_round_trip(i in any::<i64>(), f in any::<f64>()) {
        prop_assert_eq!(value::to_int(&value::int(i)), Some(i));
        let back = value::to_float(&value::float(f)).unwrap();
        prop_assert!(back == f || (back.is_nan() && f.is_nan()));
    }
}
