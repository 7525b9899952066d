//! Readings in EdgeX terms: the core-data v3 reading queries
//! (`MultiReadingsResponse`), and the profile and value type each device
//! resource was last posted with, which a [`Reading`] does not carry.

use std::collections::HashMap;

use crate::table::{EdgexResource, ReadingsTable};
use locus_iot::Reading;
use locus_iot::edgex::{edgex_value, reading_id};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Readings, ReadingsError};

/// Most readings one EdgeX query returns (EdgeX's `MaxResultCount`).
pub const EDGEX_MAX_LIMIT: u32 = 1024;
/// Readings an EdgeX query returns without a `limit`.
pub const EDGEX_DEFAULT_LIMIT: u32 = 20;
/// Device resources whose profile and value type are remembered in memory
/// (to write them only when they change); past it they are written with
/// every event that names them.
pub const EDGEX_CACHE: usize = 65_536;

/// An EdgeX v3 `BaseReading`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EdgexBaseReading {
    /// A UUID made of the reading's seal leaf hash.
    pub id: String,
    /// Nanoseconds since the epoch (the reading keeps milliseconds).
    pub origin: i64,
    pub device_name: String,
    pub resource_name: String,
    /// The profile the resource was last posted with ("" if unknown).
    pub profile_name: String,
    /// `Bool`, `String`, `Binary`, `Int*`, `Uint*` or `Float*`.
    pub value_type: String,
    /// The value as text ("" for `Binary`).
    pub value: String,
    /// Base64, for `Binary` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_value: Option<String>,
    /// `application/octet-stream`, for `Binary` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    /// Units ("" when none).
    pub units: String,
    /// `seq`: the reading's seq in this node's seal log, for its proof.
    pub tags: HashMap<String, String>,
}

/// An EdgeX v3 `MultiReadingsResponse`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MultiReadingsResponse {
    /// Always `v3`.
    pub api_version: String,
    /// Always 200.
    pub status_code: u16,
    /// Readings that match, over every page.
    pub total_count: u64,
    /// This page, newest first.
    pub readings: Vec<EdgexBaseReading>,
}

/// The milliseconds `[from, to]` whose readings have an origin (ms × 10⁶)
/// within the nanoseconds `[start_ns, end_ns]`.
pub(crate) fn ms_range(start_ns: i64, end_ns: i64) -> (i64, i64) {
    let from = start_ns.div_euclid(1_000_000) + i64::from(start_ns.rem_euclid(1_000_000) != 0);
    (from, end_ns.div_euclid(1_000_000))
}

impl Readings {
    /// Remember the EdgeX profile and value type of the resources of an
    /// accepted event (written to the store only when they change).
    pub async fn record_edgex(
        &self,
        device: &str,
        profile: &str,
        resources: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ReadingsError> {
        let mut changed = Vec::new();
        {
            let cache = self.inner.edgex.lock().unwrap_or_else(|p| p.into_inner());
            for (resource, value_type) in resources {
                let key = (device.to_owned(), resource);
                if cache
                    .get(&key)
                    .is_some_and(|(p, t)| p == profile && *t == value_type)
                {
                    continue;
                }
                if changed.iter().any(|r: &EdgexResource| r.resource == key.1) {
                    continue;
                }
                changed.push(EdgexResource {
                    device: key.0,
                    resource: key.1,
                    profile: profile.to_owned(),
                    value_type,
                });
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        self.inner
            .store
            .put_edgex_resources(changed.clone())
            .await?;
        let mut cache = self.inner.edgex.lock().unwrap_or_else(|p| p.into_inner());
        for r in changed {
            if cache.len() < EDGEX_CACHE
                || cache.contains_key(&(r.device.clone(), r.resource.clone()))
            {
                cache.insert((r.device, r.resource), (r.profile, r.value_type));
            }
        }
        Ok(())
    }

    /// Readings of `device` with an origin within `[start_ns, end_ns]`,
    /// newest first, skipping `offset`, at most `limit`, as EdgeX answers.
    pub async fn edgex_readings(
        &self,
        device: String,
        start_ns: i64,
        end_ns: i64,
        offset: u64,
        limit: u32,
    ) -> Result<MultiReadingsResponse, ReadingsError> {
        let (from_ms, to_ms) = ms_range(start_ns, end_ns);
        let limit = limit.min(EDGEX_MAX_LIMIT);
        let (total, rows) = if from_ms > to_ms {
            (0, Vec::new())
        } else {
            self.inner
                .store
                .readings_of_thing_newest(device.clone(), from_ms, to_ms, offset, limit)
                .await?
        };
        let resources: HashMap<String, (String, String)> = if rows.is_empty() {
            HashMap::new()
        } else {
            self.inner
                .store
                .edgex_resources_of(device)
                .await?
                .into_iter()
                .map(|r| (r.resource, (r.profile, r.value_type)))
                .collect()
        };
        let mut readings = Vec::with_capacity(rows.len());
        for row in rows {
            let Ok(reading) = serde_json::from_str::<Reading>(&row.body) else {
                tracing::warn!(seq = row.seq, "a stored reading is unreadable; left out");
                continue;
            };
            let leaf: [u8; 32] = row.leaf.as_slice().try_into().unwrap_or([0; 32]);
            let known = resources.get(reading.resource());
            let (value_type, value, binary_value) =
                edgex_value(reading.value(), known.map(|k| k.1.as_str()));
            readings.push(EdgexBaseReading {
                id: reading_id(&leaf),
                origin: reading.time_ms().saturating_mul(1_000_000),
                device_name: reading.thing().to_owned(),
                resource_name: reading.resource().to_owned(),
                profile_name: known.map(|k| k.0.clone()).unwrap_or_default(),
                media_type: binary_value
                    .as_ref()
                    .map(|_| "application/octet-stream".to_owned()),
                value_type,
                value,
                binary_value,
                units: reading.unit().unwrap_or_default().to_owned(),
                tags: HashMap::from([("seq".to_owned(), row.seq.to_string())]),
            });
        }
        Ok(MultiReadingsResponse {
            api_version: "v3".into(),
            status_code: 200,
            total_count: total,
            readings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ms_range;

    #[test]
    fn nanosecond_bounds_become_the_milliseconds_inside_them() {
        assert_eq!(ms_range(0, 0), (0, 0));
        assert_eq!(ms_range(1, 999_999), (1, 0));
        assert_eq!(ms_range(1_000_000, 2_999_999), (1, 2));
        assert_eq!(ms_range(-1, 1), (0, 0));
        assert_eq!(ms_range(-1_000_001, -1), (-1, -1));
        assert_eq!(
            ms_range(i64::MIN, i64::MAX),
            (-9_223_372_036_854, 9_223_372_036_854)
        );
    }
}
