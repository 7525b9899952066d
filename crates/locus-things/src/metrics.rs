//! The counters of the device doors (MQTT, LwM2M), registered in the
//! node's registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// What the device doors count.
#[derive(Clone)]
pub struct ThingMetrics {
    /// Readings accepted from things, by protocol.
    pub thing_readings: IntCounterVec,
    /// Device input refused as malformed, by protocol and what was wrong.
    pub thing_malformed: IntCounterVec,
    /// MQTT connections refused, by reason.
    pub mqtt_refused: IntCounterVec,
    /// MQTT sessions of things open now.
    pub mqtt_sessions: IntGauge,
    /// CoAP datagrams that could not be parsed or broke the protocol, by
    /// socket (server, bootstrap).
    pub coap_malformed_datagrams: IntCounterVec,
    /// LWM2M payloads (link format, resource values) that could not be
    /// read, by socket.
    pub lwm2m_malformed_payloads: IntCounterVec,
    /// Register requests refused, by reason (invalid, unknown,
    /// not_managed, full; and for the security binding psk_required,
    /// wrong_identity, which also count refused Bootstrap-Requests,
    /// Updates and De-registers).
    pub lwm2m_rejected_registrations: IntCounterVec,
    /// Readings stored from LWM2M notifications and reads.
    pub lwm2m_readings: IntCounter,
    /// Current LWM2M registrations.
    pub lwm2m_registrations: IntGauge,
    /// Finished bootstraps, by result (ok, failed).
    pub lwm2m_bootstraps: IntCounterVec,
    /// DTLS datagrams and handshakes refused, by role (server, bootstrap)
    /// and reason (bad_record, no_session, too_many_sessions, busy,
    /// unknown_identity, wrong_key, timeout, failed).
    pub lwm2m_dtls_refused: IntCounterVec,
    /// DTLS sessions established now, by role.
    pub lwm2m_dtls_sessions: IntGaugeVec,
}

impl ThingMetrics {
    /// Create the metrics and register them in `registry`. Fails only on a
    /// programming error (two metrics with one name).
    pub fn register(registry: &Registry) -> Result<ThingMetrics, prometheus::Error> {
        let thing_readings = IntCounterVec::new(
            Opts::new(
                "locus_thing_readings_total",
                "Readings accepted from things (durable and sealed), by protocol.",
            ),
            &["protocol"],
        )?;
        registry.register(Box::new(thing_readings.clone()))?;
        let thing_malformed = IntCounterVec::new(
            Opts::new(
                "locus_thing_malformed_total",
                "Device input refused as malformed, by protocol and kind.",
            ),
            &["protocol", "kind"],
        )?;
        registry.register(Box::new(thing_malformed.clone()))?;
        let mqtt_refused = IntCounterVec::new(
            Opts::new(
                "locus_mqtt_refused_total",
                "MQTT connections, publishes and subscriptions refused, by reason.",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(mqtt_refused.clone()))?;
        let mqtt_sessions =
            IntGauge::new("locus_mqtt_sessions", "MQTT sessions of things open now.")?;
        registry.register(Box::new(mqtt_sessions.clone()))?;

        let coap_malformed_datagrams = IntCounterVec::new(
            Opts::new(
                "locus_coap_malformed_datagrams_total",
                "CoAP datagrams dropped as malformed, by socket.",
            ),
            &["socket"],
        )?;
        registry.register(Box::new(coap_malformed_datagrams.clone()))?;
        let lwm2m_malformed_payloads = IntCounterVec::new(
            Opts::new(
                "locus_lwm2m_malformed_payloads_total",
                "LWM2M payloads (link format, resource values) that could not be read, by socket.",
            ),
            &["socket"],
        )?;
        registry.register(Box::new(lwm2m_malformed_payloads.clone()))?;
        let lwm2m_rejected_registrations = IntCounterVec::new(
            Opts::new(
                "locus_lwm2m_rejected_registrations_total",
                "LWM2M Register requests refused, by reason (psk_required and wrong_identity also count Bootstrap-Requests, Updates and De-registers refused by the security binding).",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(lwm2m_rejected_registrations.clone()))?;
        let lwm2m_readings = IntCounter::new(
            "locus_lwm2m_readings_total",
            "Readings stored from LWM2M notifications.",
        )?;
        registry.register(Box::new(lwm2m_readings.clone()))?;
        let lwm2m_registrations = IntGauge::new(
            "locus_lwm2m_registrations",
            "LWM2M clients registered at this node.",
        )?;
        registry.register(Box::new(lwm2m_registrations.clone()))?;
        let lwm2m_bootstraps = IntCounterVec::new(
            Opts::new(
                "locus_lwm2m_bootstraps_total",
                "Finished LWM2M bootstraps, by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(lwm2m_bootstraps.clone()))?;
        let lwm2m_dtls_refused = IntCounterVec::new(
            Opts::new(
                "locus_lwm2m_dtls_refused_total",
                "DTLS datagrams and handshakes refused on the coaps sockets, by role and reason.",
            ),
            &["role", "reason"],
        )?;
        registry.register(Box::new(lwm2m_dtls_refused.clone()))?;
        let lwm2m_dtls_sessions = IntGaugeVec::new(
            Opts::new(
                "locus_lwm2m_dtls_sessions",
                "DTLS sessions established on the coaps sockets, by role.",
            ),
            &["role"],
        )?;
        registry.register(Box::new(lwm2m_dtls_sessions.clone()))?;
        Ok(ThingMetrics {
            thing_readings,
            thing_malformed,
            mqtt_refused,
            mqtt_sessions,
            coap_malformed_datagrams,
            lwm2m_malformed_payloads,
            lwm2m_rejected_registrations,
            lwm2m_readings,
            lwm2m_registrations,
            lwm2m_bootstraps,
            lwm2m_dtls_refused,
            lwm2m_dtls_sessions,
        })
    }
}
