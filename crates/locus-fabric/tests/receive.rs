//! The receive path never panics, whatever arrives: arbitrary bytes through
//! the wire decoder, and arbitrary (decodable) frames into a live fabric.

use std::net::SocketAddr;

use locus_core::NodeId;
use locus_fabric::records::{Summary, Update};
use locus_fabric::wire::{Envelope, Frame, Sealer, Stamp, WireCoordinate};
use locus_fabric::{ClusterKey, Fabric, Member, Now, Tuning};
use proptest::prelude::*;

fn fabric() -> Fabric {
    let me = Member {
        id: NodeId::from_bytes([1; 10]),
        addr: "127.0.0.1:7401".parse().unwrap(),
        generation: 1,
        bump: 0,
    };
    let mut f = Fabric::new(
        me,
        Tuning::default(),
        1,
        Now {
            mono_us: 1,
            unix_ms: 1,
        },
    );
    f.publish(
        "node/info",
        Some(b"{}".to_vec()),
        Now {
            mono_us: 2,
            unix_ms: 2,
        },
    )
    .unwrap();
    f
}

fn frame() -> impl Strategy<Value = Frame> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..1400).prop_map(Frame::Swim),
        proptest::collection::vec(
            (
                prop_oneof![Just([1u8; 10]), any::<[u8; 10]>()],
                any::<u64>(),
                any::<u64>()
            ),
            0..60
        )
        .prop_map(|v| Frame::Digest(
            v.into_iter()
                .map(|(id, generation, version)| Summary {
                    owner: NodeId::from_bytes(id),
                    generation,
                    version
                })
                .collect()
        )),
        (any::<[u8; 10]>(), any::<u64>(), any::<u64>()).prop_map(|(id, generation, since)| {
            Frame::SyncRequest {
                owner: NodeId::from_bytes(id),
                generation,
                since,
            }
        }),
        proptest::collection::vec(
            (
                prop_oneof![Just([1u8; 10]), any::<[u8; 10]>()],
                any::<u64>(),
                prop_oneof![Just("node/info".to_owned()), "[a-z/]{0,20}"],
                any::<u64>(),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))
            ),
            0..8
        )
        .prop_map(|v| Frame::SyncResponse {
            after: v.len() as u64,
            complete_to: 2 * v.len() as u64,
            updates: v
                .into_iter()
                .map(|(id, generation, key, version, value)| Update {
                    owner: NodeId::from_bytes(id),
                    generation,
                    key,
                    version,
                    value
                })
                .collect()
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_frames_never_crash_a_fabric(frames in proptest::collection::vec((frame(), any::<u64>(), any::<u64>(), any::<u64>(), proptest::option::of(any::<[u32; 11]>())), 1..8)) {
        let mut f = fabric();
        let from: SocketAddr = "127.0.0.2:7401".parse().unwrap();
        for (i, (frame, sent_us, echo_us, hold_us, bits)) in frames.into_iter().enumerate() {
            let now = Now { mono_us: 10 + i as u64, unix_ms: 10 + i as u64 };
            // Any bit pattern, NaN and infinities included.
            let coordinate = bits.map(|b| WireCoordinate {
                vec: std::array::from_fn(|k| f32::from_bits(b[k])),
                error: f32::from_bits(b[8]),
                height: f32::from_bits(b[9]),
                adjustment: f32::from_bits(b[10]),
            });
            f.handle_envelope(from, Envelope { stamp: Stamp { sent_us, echo_us, hold_us }, coordinate, frame }, now);
            let _ = f.drain().count();
        }
        prop_assert!(f.coordinate().is_valid());
        let own = f.records().lock().get(NodeId::from_bytes([1; 10]), "node/info").map(<[u8]>::to_vec);
        prop_assert_eq!(own, Some(b"{}".to_vec()), "a peer overwrote a record this node owns");
    }

    #[test]
    fn arbitrary_datagrams_are_refused_or_decoded_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let open = Sealer::new(None);
        let sealed = Sealer::new(Some(&ClusterKey::parse(&"01".repeat(32)).unwrap()));
        let mut f = fabric();
        for s in [&open, &sealed] {
            if let Ok(env) = s.open(&bytes) {
                f.handle_envelope("127.0.0.3:1".parse().unwrap(), env, Now { mono_us: 5, unix_ms: 5 });
            }
        }
    }
}
