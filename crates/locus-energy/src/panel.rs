//! What a fixed panel makes of an irradiance year: NREL's PVWatts chain.
//!
//! For each hour: the sun at the middle of the hour ([`crate::sun`]);
//! plane-of-array irradiance with the isotropic sky model (beam on the
//! tilted plane, sky diffuse `DHI (1 + cos β) / 2`, ground reflection
//! `GHI ρ (1 − cos β) / 2`; Liu and Jordan 1963, as pvlib's
//! `irradiance.get_total_irradiance(model='isotropic')`); the cell
//! temperature of the Sandia Array Performance Model (King, Boyson and
//! Kratochvil, SAND2004-3535, eq. 11–12, as pvlib's `temperature.sapm_cell`);
//! PVWatts' DC power (Dobos, *PVWatts Version 5 Manual*, NREL/TP-6A20-62641,
//! 2014: `P = POA / 1000 × P₀ × (1 + γ (T_cell − 25))`); then the system
//! losses. Pure functions.

use crate::irradiance::{Hour, Station, Year};
use crate::sun;

/// Irradiance of the standard test conditions, W/m².
pub const STC_IRRADIANCE: f64 = 1000.0;
/// Cell temperature of the standard test conditions, °C.
pub const STC_TEMPERATURE_C: f64 = 25.0;

/// SAPM thermal parameters for open-rack glass/glass modules
/// (SAND2004-3535, table 1).
pub const SAPM_OPEN_RACK_GLASS_GLASS: Thermal = Thermal {
    a: -3.47,
    b: -0.0594,
    delta_t_c: 3.0,
};
/// Wind speed assumed when none is read, m/s.
pub const DEFAULT_WIND_M_S: f64 = 1.0;

/// The SAPM cell temperature model's parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thermal {
    /// Upper limit of the module temperature at low wind (unitless, `e^a`).
    pub a: f64,
    /// Rate of fall with wind speed, s/m.
    pub b: f64,
    /// Cell minus module back temperature at 1000 W/m², °C.
    pub delta_t_c: f64,
}

/// A fixed panel (or array).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Panel {
    /// DC power at 1000 W/m² and 25 °C cell temperature, W.
    pub peak_w: f64,
    /// Tilt from horizontal, degrees (0 flat, 90 vertical).
    pub tilt_deg: f64,
    /// Direction the face looks, clockwise from north, degrees (180 south).
    pub azimuth_deg: f64,
    /// Power temperature coefficient, per °C (e.g. -0.0047).
    pub gamma_per_c: f64,
    /// Share of the DC power lost in the system (e.g. 0.14).
    pub losses: f64,
    /// Ground reflectance (e.g. 0.2).
    pub albedo: f64,
}

/// Plane-of-array irradiance, W/m².
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Poa {
    pub beam: f64,
    pub sky_diffuse: f64,
    pub ground_diffuse: f64,
}

impl Poa {
    pub fn global(&self) -> f64 {
        self.beam + self.sky_diffuse + self.ground_diffuse
    }
}

/// One hour's output.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HourOutput {
    /// The sun at the middle of the hour.
    pub sun: sun::Position,
    pub poa: Poa,
    pub cell_temp_c: f64,
    /// DC power before system losses, W (mean over the hour).
    pub dc_w: f64,
    /// After system losses, W; over one hour this is also Wh.
    pub output_w: f64,
}

/// The Julian day (UTC) of the middle of an hour stamped with its end in
/// local standard time.
pub fn mid_hour_julian_day(hour: &Hour, station: &Station) -> f64 {
    let local_hours = f64::from(hour.hour) - 0.5;
    sun::julian_day(
        i32::from(hour.year),
        u32::from(hour.month),
        u32::from(hour.day),
        local_hours - station.utc_offset_hours,
    )
}

/// Cosine of the angle of incidence of the beam on a plane, for a sun at
/// `zenith_deg`/`azimuth_deg`.
pub fn cos_incidence(
    tilt_deg: f64,
    azimuth_deg: f64,
    zenith_deg: f64,
    sun_azimuth_deg: f64,
) -> f64 {
    let (t, z) = (tilt_deg.to_radians(), zenith_deg.to_radians());
    (z.cos() * t.cos() + z.sin() * t.sin() * (sun_azimuth_deg - azimuth_deg).to_radians().cos())
        .clamp(-1.0, 1.0)
}

/// Isotropic-sky plane-of-array irradiance. No beam when the sun is below
/// the horizon or behind the plane; nothing negative.
pub fn poa_isotropic(panel: &Panel, sun: &sun::Position, ghi: f64, dni: f64, dhi: f64) -> Poa {
    let (ghi, dni, dhi) = (ghi.max(0.0), dni.max(0.0), dhi.max(0.0));
    let beam = if sun.apparent_zenith_deg < 90.0 {
        dni * cos_incidence(
            panel.tilt_deg,
            panel.azimuth_deg,
            sun.apparent_zenith_deg,
            sun.azimuth_deg,
        )
        .max(0.0)
    } else {
        0.0
    };
    let cos_tilt = panel.tilt_deg.to_radians().cos();
    Poa {
        beam,
        sky_diffuse: dhi * (1.0 + cos_tilt) / 2.0,
        ground_diffuse: (ghi * panel.albedo * (1.0 - cos_tilt) / 2.0).max(0.0),
    }
}

/// SAPM cell temperature, °C, for plane-of-array irradiance `poa` W/m².
pub fn sapm_cell_temp_c(poa: f64, temp_air_c: f64, wind_m_s: f64, thermal: &Thermal) -> f64 {
    let module = poa * (thermal.a + thermal.b * wind_m_s).exp() + temp_air_c;
    module + poa / STC_IRRADIANCE * thermal.delta_t_c
}

/// PVWatts DC power, W. Never negative.
pub fn pvwatts_dc_w(poa: f64, cell_temp_c: f64, peak_w: f64, gamma_per_c: f64) -> f64 {
    (poa / STC_IRRADIANCE * peak_w * (1.0 + gamma_per_c * (cell_temp_c - STC_TEMPERATURE_C)))
        .max(0.0)
}

/// One hour's output of `panel` at `station`, with open-rack glass/glass
/// thermal parameters and a 1 m/s wind.
pub fn hour_output(hour: &Hour, station: &Station, panel: &Panel) -> HourOutput {
    let sun = sun::position(
        mid_hour_julian_day(hour, station),
        station.latitude,
        station.longitude,
    );
    let poa = poa_isotropic(panel, &sun, hour.ghi, hour.dni, hour.dhi);
    let cell_temp_c = sapm_cell_temp_c(
        poa.global(),
        hour.temp_air_c,
        DEFAULT_WIND_M_S,
        &SAPM_OPEN_RACK_GLASS_GLASS,
    );
    let dc_w = pvwatts_dc_w(poa.global(), cell_temp_c, panel.peak_w, panel.gamma_per_c);
    HourOutput {
        sun,
        poa,
        cell_temp_c,
        dc_w,
        output_w: dc_w * (1.0 - panel.losses.clamp(0.0, 1.0)),
    }
}

/// Every hour's output of `panel` over `year`, in the year's order.
pub fn hourly(year: &Year, panel: &Panel) -> Vec<HourOutput> {
    year.hours
        .iter()
        .map(|h| hour_output(h, &year.station, panel))
        .collect()
}

/// Energy over the year after system losses, kWh.
pub fn annual_kwh(year: &Year, panel: &Panel) -> f64 {
    year.hours
        .iter()
        .map(|h| hour_output(h, &year.station, panel).output_w)
        .sum::<f64>()
        / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::irradiance::parse_tmy3;

    const SOUTH_30: Panel = Panel {
        peak_w: 1000.0,
        tilt_deg: 30.0,
        azimuth_deg: 180.0,
        gamma_per_c: -0.0047,
        losses: 0.14,
        albedo: 0.2,
    };

    fn station() -> Station {
        Station {
            id: "1".into(),
            name: "x".into(),
            state: "NC".into(),
            utc_offset_hours: -5.0,
            latitude: 36.1,
            longitude: -79.95,
            elevation_m: 273.0,
        }
    }

    fn sun_at(zenith: f64, azimuth: f64) -> sun::Position {
        sun::Position {
            apparent_zenith_deg: zenith,
            zenith_deg: zenith,
            azimuth_deg: azimuth,
            declination_deg: 0.0,
            equation_of_time_min: 0.0,
        }
    }

    #[test]
    fn flat_panel_sees_the_global_horizontal() {
        let flat = Panel {
            tilt_deg: 0.0,
            ..SOUTH_30
        };
        let s = sun_at(40.0, 150.0);
        let dni = 700.0;
        let dhi = 100.0;
        let ghi = dni * 40f64.to_radians().cos() + dhi;
        let poa = poa_isotropic(&flat, &s, ghi, dni, dhi);
        assert!((poa.global() - ghi).abs() < 1e-9, "{poa:?}");
        assert_eq!(poa.ground_diffuse, 0.0);
    }

    #[test]
    fn panel_facing_the_sun_takes_all_the_beam() {
        let s = sun_at(30.0, 180.0);
        let poa = poa_isotropic(&SOUTH_30, &s, 800.0, 800.0, 0.0);
        assert!((poa.beam - 800.0).abs() < 1e-9, "{poa:?}");
        let c = 30f64.to_radians().cos();
        assert!((poa.ground_diffuse - 800.0 * 0.2 * (1.0 - c) / 2.0).abs() < 1e-9);
    }

    #[test]
    fn no_beam_from_behind_or_below() {
        // Sun in the north, low: behind a south-facing 30° panel.
        let poa = poa_isotropic(&SOUTH_30, &sun_at(80.0, 0.0), 100.0, 500.0, 50.0);
        assert_eq!(poa.beam, 0.0);
        let poa = poa_isotropic(&SOUTH_30, &sun_at(95.0, 180.0), 0.0, 500.0, 0.0);
        assert_eq!(poa.beam, 0.0);
        assert!(poa.global() >= 0.0);
        let poa = poa_isotropic(&SOUTH_30, &sun_at(40.0, 180.0), -5.0, -5.0, -5.0);
        assert_eq!(poa.global(), 0.0);
    }

    #[test]
    fn sapm_and_pvwatts_reference_values() {
        // 1000 W/m², 25 °C air, 1 m/s: module 25 + 1000 e^(-3.5294) ≈ 54.32.
        let t = sapm_cell_temp_c(1000.0, 25.0, 1.0, &SAPM_OPEN_RACK_GLASS_GLASS);
        let want = 25.0 + 1000.0 * (-3.47f64 - 0.0594).exp() + 3.0;
        assert!((t - want).abs() < 1e-9 && (t - 57.32).abs() < 0.01, "{t}");
        assert_eq!(
            sapm_cell_temp_c(0.0, 12.0, 1.0, &SAPM_OPEN_RACK_GLASS_GLASS),
            12.0
        );
        assert_eq!(pvwatts_dc_w(1000.0, 25.0, 300.0, -0.0047), 300.0);
        assert!((pvwatts_dc_w(500.0, 35.0, 300.0, -0.004) - 144.0).abs() < 1e-9);
        assert_eq!(pvwatts_dc_w(0.0, 25.0, 300.0, -0.0047), 0.0);
    }

    #[test]
    fn the_sun_is_taken_at_the_middle_of_the_hour_in_utc() {
        let st = station();
        let h = Hour {
            year: 2023,
            month: 6,
            day: 21,
            hour: 13,
            ghi: 0.0,
            dni: 0.0,
            dhi: 0.0,
            temp_air_c: 20.0,
        };
        // 12:30 EST = 17:30 UTC.
        assert_eq!(
            mid_hour_julian_day(&h, &st),
            sun::julian_day(2023, 6, 21, 17.5)
        );
        // Hour ending 24:00 is 23:30 local, 04:30 UTC the next day.
        let h24 = Hour { hour: 24, ..h };
        assert_eq!(
            mid_hour_julian_day(&h24, &st),
            sun::julian_day(2023, 6, 22, 4.5)
        );
    }

    #[test]
    fn night_makes_nothing_and_losses_apply() {
        let st = station();
        let night = Hour {
            year: 2023,
            month: 1,
            day: 1,
            hour: 2,
            ghi: 0.0,
            dni: 0.0,
            dhi: 0.0,
            temp_air_c: 0.0,
        };
        assert_eq!(hour_output(&night, &st, &SOUTH_30).output_w, 0.0);
        let noon = Hour {
            hour: 13,
            ghi: 600.0,
            dni: 800.0,
            dhi: 80.0,
            ..night
        };
        let out = hour_output(&noon, &st, &SOUTH_30);
        assert!(out.dc_w > 0.0);
        assert!((out.output_w - out.dc_w * 0.86).abs() < 1e-9);
    }

    #[test]
    fn greensboro_year_is_plausible() {
        let text = include_str!("../data/greensboro-nc-tmy3.csv");
        let year = parse_tmy3(text).unwrap();
        let kwh = annual_kwh(&year, &SOUTH_30);
        // PVWatts gives about 1.3–1.5 MWh per kWp a year in North Carolina.
        assert!((1200.0..1600.0).contains(&kwh), "{kwh}");
        let hours = hourly(&year, &SOUTH_30);
        assert_eq!(hours.len(), year.hours.len());
        let sum: f64 = hours.iter().map(|h| h.output_w).sum::<f64>() / 1000.0;
        assert!((sum - kwh).abs() < 1e-9);
        assert!(hours.iter().all(|h| h.poa.global() >= 0.0 && h.dc_w >= 0.0));
        // A south 30° tilt beats a flat panel at 36° N.
        let flat = Panel {
            tilt_deg: 0.0,
            ..SOUTH_30
        };
        assert!(kwh > annual_kwh(&year, &flat));
    }
}
