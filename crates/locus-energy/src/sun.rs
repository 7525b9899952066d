//! Where the sun is: apparent zenith and azimuth for a UTC instant and a
//! place on Earth.
//!
//! The equations are those of NOAA's solar calculator (NOAA Global
//! Monitoring Laboratory, "NOAA Solar Calculator", the `NOAA_Solar_Calculations_year.xls`
//! spreadsheet, <https://gml.noaa.gov/grad/solcalc/calcdetails.html>), which
//! follow Jean Meeus, *Astronomical Algorithms* (Willmann-Bell, 1991):
//! the sun's mean longitude and anomaly, the equation of the centre, the
//! apparent longitude and the corrected obliquity give its declination and
//! the equation of time; the hour angle follows from the true solar time.
//! The atmospheric refraction correction is the calculator's piecewise
//! formula. NOAA states the results good to about a minute of arc for
//! years 1800 to 2100 (the refraction, near the horizon, less so).
//!
//! Pure functions: the instant is given as a Julian day, never read from a
//! clock.

/// The sun seen from one place at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Position {
    /// Angle from the zenith, degrees, after atmospheric refraction
    /// (greater than 90 when the sun is below the horizon).
    pub apparent_zenith_deg: f64,
    /// Angle from the zenith, degrees, without refraction.
    pub zenith_deg: f64,
    /// Clockwise from north, degrees, 0 to 360 (90 east, 180 south).
    pub azimuth_deg: f64,
    /// Declination, degrees.
    pub declination_deg: f64,
    /// Equation of time (true solar minus mean solar time), minutes.
    pub equation_of_time_min: f64,
}

impl Position {
    /// Apparent elevation above the horizon, degrees.
    pub fn apparent_elevation_deg(&self) -> f64 {
        90.0 - self.apparent_zenith_deg
    }
}

/// The Julian day of a UTC instant on the proleptic Gregorian calendar:
/// `hours_utc` after midnight starting `year-month-day` (any value: -3 is
/// 21:00 the day before, 27.5 is 03:30 the day after).
///
/// Meeus, *Astronomical Algorithms*, chapter 7.
pub fn julian_day(year: i32, month: u32, day: u32, hours_utc: f64) -> f64 {
    let (y, m) = if month <= 2 {
        (f64::from(year - 1), f64::from(month + 12))
    } else {
        (f64::from(year), f64::from(month))
    };
    let a = (y / 100.0).floor();
    let b = 2.0 - a + (a / 4.0).floor();
    (365.25 * (y + 4716.0)).floor() + (30.6001 * (m + 1.0)).floor() + f64::from(day) + b - 1524.5
        + hours_utc / 24.0
}

/// The sun's position at the instant `julian_day` (UTC) seen from
/// `latitude` (degrees north) and `longitude` (degrees east).
pub fn position(julian_day: f64, latitude: f64, longitude: f64) -> Position {
    let jc = (julian_day - 2_451_545.0) / 36_525.0;
    let mean_long = (280.46646 + jc * (36000.76983 + jc * 0.0003032)).rem_euclid(360.0);
    let mean_anom = 357.52911 + jc * (35999.05029 - 0.0001537 * jc);
    let ecc = 0.016_708_634 - jc * (0.000_042_037 + 0.000_000_126_7 * jc);
    let m = mean_anom.to_radians();
    let centre = m.sin() * (1.914_602 - jc * (0.004_817 + 0.000_014 * jc))
        + (2.0 * m).sin() * (0.019_993 - 0.000_101 * jc)
        + (3.0 * m).sin() * 0.000_289;
    let true_long = mean_long + centre;
    let omega = (125.04 - 1934.136 * jc).to_radians();
    let apparent_long = true_long - 0.00569 - 0.00478 * omega.sin();
    let mean_obliq =
        23.0 + (26.0 + (21.448 - jc * (46.815 + jc * (0.000_59 - jc * 0.001_813))) / 60.0) / 60.0;
    let obliq = (mean_obliq + 0.00256 * omega.cos()).to_radians();
    let decl = (obliq.sin() * apparent_long.to_radians().sin()).asin();

    let y = (obliq / 2.0).tan().powi(2);
    let l0 = mean_long.to_radians();
    let eot_min = 4.0
        * (y * (2.0 * l0).sin() - 2.0 * ecc * m.sin() + 4.0 * ecc * y * m.sin() * (2.0 * l0).cos()
            - 0.5 * y * y * (4.0 * l0).sin()
            - 1.25 * ecc * ecc * (2.0 * m).sin())
        .to_degrees();

    // Minutes after 0h UTC of the instant's day (Julian days start at noon).
    let utc_min = ((julian_day + 0.5).fract()) * 1440.0;
    let true_solar_min = (utc_min + eot_min + 4.0 * longitude).rem_euclid(1440.0);
    let hour_angle = (true_solar_min / 4.0 - 180.0).to_radians();

    let phi = latitude.to_radians();
    let cos_zen =
        (phi.sin() * decl.sin() + phi.cos() * decl.cos() * hour_angle.cos()).clamp(-1.0, 1.0);
    let zenith = cos_zen.acos().to_degrees();
    // Meeus 13.5: azimuth from south, westward positive; +180 for from north.
    let azimuth = (hour_angle
        .sin()
        .atan2(hour_angle.cos() * phi.sin() - decl.tan() * phi.cos())
        .to_degrees()
        + 180.0)
        .rem_euclid(360.0);

    let elevation = 90.0 - zenith;
    let apparent_zenith = zenith - refraction_deg(elevation);
    Position {
        apparent_zenith_deg: apparent_zenith,
        zenith_deg: zenith,
        azimuth_deg: azimuth,
        declination_deg: decl.to_degrees(),
        equation_of_time_min: eot_min,
    }
}

/// NOAA's approximate atmospheric refraction, degrees, for a true
/// elevation in degrees.
fn refraction_deg(elevation: f64) -> f64 {
    let arcsec = if elevation > 85.0 {
        0.0
    } else {
        let t = elevation.to_radians().tan();
        if elevation > 5.0 {
            58.1 / t - 0.07 / t.powi(3) + 0.000_086 / t.powi(5)
        } else if elevation > -0.575 {
            1735.0
                + elevation
                    * (-518.2 + elevation * (103.4 + elevation * (-12.79 + elevation * 0.711)))
        } else {
            -20.772 / t
        }
    };
    arcsec / 3600.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn julian_day_of_known_dates() {
        // Meeus, example 7.a and the J2000 epoch.
        assert_eq!(julian_day(2000, 1, 1, 12.0), 2_451_545.0);
        assert_eq!(
            julian_day(1957, 10, 4, 19.0 + 26.0 / 60.0 + 24.0 / 3600.0),
            2_436_116.31
        );
        // Hours outside 0..24 roll over the day.
        assert_eq!(julian_day(2020, 3, 1, -1.0), julian_day(2020, 2, 29, 23.0));
        assert_eq!(julian_day(2020, 12, 31, 25.0), julian_day(2021, 1, 1, 1.0));
    }

    #[test]
    fn declination_and_equation_of_time_match_almanac_values() {
        // Meeus, example 25.a: 1992-10-13 0h TD, declination -7.78507°
        // (apparent); equation of time (example 28.a) 13m 42.6s.
        let p = position(2_448_908.5, 0.0, 0.0);
        assert!(close(p.declination_deg, -7.785, 0.01), "{p:?}");
        assert!(close(p.equation_of_time_min, 13.71, 0.05), "{p:?}");
    }

    #[test]
    fn equinox_noon_zenith_is_the_latitude() {
        // 2023-03-20 21:24 UTC is the March equinox; at local solar noon
        // on that day the declination is within half a degree of zero.
        for lat in [0.0, 36.1, -33.9, 51.5, 70.0] {
            // Longitude 0: solar noon is 12:00 UTC minus the equation of time.
            let jd0 = julian_day(2023, 3, 20, 12.0);
            let eot = position(jd0, lat, 0.0).equation_of_time_min;
            let p = position(jd0 - eot / 1440.0, lat, 0.0);
            assert!(close(p.zenith_deg, lat.abs(), 0.5), "lat {lat}: {p:?}");
            // At noon the sun is due south north of it, due north south of it.
            let want = if lat > p.declination_deg { 180.0 } else { 0.0 };
            let az = p.azimuth_deg;
            let off = (az - want).abs().min(360.0 - (az - want).abs());
            assert!(off < 1.0, "lat {lat}: {p:?}");
        }
    }

    #[test]
    fn solstice_noon_zenith_and_sunrise_azimuth() {
        // June solstice 2023-06-21, Greensboro NC (36.1 N, 79.95 W): at
        // solar noon zenith = latitude - 23.44.
        let (lat, lon) = (36.1, -79.95);
        let noon_utc = 12.0 - lon / 15.0; // mean solar noon, UTC hours
        let jd = julian_day(2023, 6, 21, noon_utc);
        let eot = position(jd, lat, lon).equation_of_time_min;
        let p = position(jd - eot / 1440.0, lat, lon);
        assert!(close(p.zenith_deg, lat - 23.44, 0.05), "{p:?}");
        assert!(close(p.azimuth_deg, 180.0, 0.5), "{p:?}");
        // Six hours before solar noon the sun is in the east-north-east:
        // hour angle -90°, cos z = sin φ sin δ, independently computed.
        let p = position(jd - eot / 1440.0 - 0.25, lat, lon);
        let d = 23.44_f64.to_radians();
        let phi = lat.to_radians();
        let z = (phi.sin() * d.sin()).acos().to_degrees();
        let az = (-1.0_f64).atan2(-d.tan() * phi.cos()).to_degrees() + 180.0;
        assert!(close(p.zenith_deg, z, 0.2), "{p:?} vs {z}");
        assert!(close(p.azimuth_deg, az, 0.3), "{p:?} vs {az}");
        assert!(p.azimuth_deg > 60.0 && p.azimuth_deg < 90.0, "{p:?}");
    }

    #[test]
    fn matches_nrel_spa_at_known_instants() {
        // Reference values from NREL's SPA (Reda and Andreas 2004), computed
        // independently with pvlib 0.13.0 `solarposition.get_solarposition`
        // (default pressure and temperature) for Greensboro NC, 36.1 N
        // 79.95 W: (UTC date, hours, apparent zenith, azimuth).
        let cases = [
            ((2010, 6, 21), 18.0, 15.131515, 215.849001),
            ((2023, 6, 21), 12.0, 68.977327, 75.664706),
            ((2023, 1, 15), 17.5, 57.154416, 180.232459),
        ];
        for ((y, m, d), h, zen, az) in cases {
            let p = position(julian_day(y, m, d, h), 36.1, -79.95);
            assert!(close(p.apparent_zenith_deg, zen, 0.05), "{p:?} vs {zen}");
            assert!(close(p.azimuth_deg, az, 0.05), "{p:?} vs {az}");
        }
        // Boulder CO (SPA's own example site), 40.0 N 105.25 W.
        let p = position(julian_day(2010, 6, 21, 18.0), 40.0, -105.25);
        assert!(close(p.apparent_zenith_deg, 21.202872, 0.05), "{p:?}");
    }

    #[test]
    fn refraction_lifts_the_sun_and_vanishes_at_the_zenith() {
        assert_eq!(refraction_deg(89.0), 0.0);
        assert!(close(refraction_deg(0.0), 0.48, 0.01));
        assert!(close(refraction_deg(45.0), 0.0161, 0.0005));
        assert!(refraction_deg(-10.0) > 0.0 && refraction_deg(-10.0) < 0.05);
    }

    #[test]
    fn night_is_below_the_horizon() {
        // Greensboro at 05:00 UTC (midnight local standard time).
        let p = position(julian_day(2023, 1, 15, 5.0), 36.1, -79.95);
        assert!(p.apparent_zenith_deg > 120.0, "{p:?}");
    }
}
