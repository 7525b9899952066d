//! TMY2, fixed-width (Marion and Urban, *User's Manual for TMY2s*, NREL,
//! 1995): line 1 is the station — WBAN number, city, state, time zone,
//! latitude as `N 36 5` (hemisphere, degrees, minutes), longitude as
//! `W 79 57`, elevation in metres — read as whitespace-separated fields,
//! as pvlib reads it. Then one line per hour, each field at fixed
//! columns: the year's last two digits (2–3; TMY2 months are from
//! 1961–1990), month (4–5), day (6–7), the hour it ends (8–9, local
//! standard time), global horizontal (18–21), direct normal (24–27) and
//! diffuse horizontal (30–33) irradiation in Wh/m² over the hour, and the
//! dry-bulb temperature in tenths of °C (68–71).

use super::{
    AIR_TEMPERATURE_C, Hour, MAX_IRRADIANCE, ParseError, Station, Year, at_line, check_length,
    day_exists, in_range, numbered_lines, push_hour,
};

/// A field of a data line: its name and its columns (1-based, inclusive).
struct Field {
    name: &'static str,
    from: usize,
    to: usize,
}

const YEAR: Field = Field {
    name: "year",
    from: 2,
    to: 3,
};
const MONTH: Field = Field {
    name: "month",
    from: 4,
    to: 5,
};
const DAY: Field = Field {
    name: "day",
    from: 6,
    to: 7,
};
const HOUR: Field = Field {
    name: "hour",
    from: 8,
    to: 9,
};
const GHI: Field = Field {
    name: "global horizontal",
    from: 18,
    to: 21,
};
const DNI: Field = Field {
    name: "direct normal",
    from: 24,
    to: 27,
};
const DHI: Field = Field {
    name: "diffuse horizontal",
    from: 30,
    to: 33,
};
const DRY_BULB: Field = Field {
    name: "dry bulb",
    from: 68,
    to: 71,
};

/// Parse a TMY2 file.
pub fn parse_tmy2(text: &str) -> Result<Year, ParseError> {
    let mut lines = numbered_lines(text);
    let (n, first) = lines
        .next()
        .ok_or_else(|| at_line(1, "the file is empty: no station line"))?;
    let station = station(n, first)?;
    let mut hours = Vec::new();
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let hour = row(n, line)?;
        push_hour(&mut hours, hour, n)?;
    }
    if hours.is_empty() {
        return Err(at_line(2, "no hours after the station line"));
    }
    Ok(Year { station, hours })
}

fn station(n: usize, line: &str) -> Result<Station, ParseError> {
    check_length(n, line)?;
    let f: Vec<&str> = line.split_whitespace().collect();
    let [
        wban,
        city,
        state,
        tz,
        ns,
        lat_d,
        lat_m,
        ew,
        lon_d,
        lon_m,
        elevation,
    ] = f[..]
    else {
        return Err(at_line(
            n,
            format!(
                "the station line has {} fields, not 11 (WBAN, city, state, time zone, N/S, degrees, minutes, E/W, degrees, minutes, elevation)",
                f.len()
            ),
        ));
    };
    let field = |i: usize, name: &str, text: &str, range| {
        in_range(text, range).map_err(|why| ParseError {
            line: n,
            column: Some((i, name.to_owned())),
            reason: why,
        })
    };
    let hemisphere = |i: usize, name: &str, text: &str, plus: &str, minus: &str| match text {
        t if t == plus => Ok(1.0),
        t if t == minus => Ok(-1.0),
        t => Err(ParseError {
            line: n,
            column: Some((i, name.to_owned())),
            reason: format!("{t:?} is neither {plus} nor {minus}"),
        }),
    };
    let latitude = hemisphere(5, "N/S", ns, "N", "S")?
        * (field(6, "latitude degrees", lat_d, 0.0..=90.0)?
            + field(7, "latitude minutes", lat_m, 0.0..=59.0)? / 60.0);
    let longitude = hemisphere(8, "E/W", ew, "E", "W")?
        * (field(9, "longitude degrees", lon_d, 0.0..=180.0)?
            + field(10, "longitude minutes", lon_m, 0.0..=59.0)? / 60.0);
    Ok(Station {
        id: wban.to_owned(),
        name: city.replace('_', " "),
        state: state.to_owned(),
        utc_offset_hours: field(4, "time zone", tz, -12.0..=14.0)?,
        latitude,
        longitude,
        elevation_m: field(11, "elevation", elevation, -500.0..=9000.0)?,
    })
}

fn row(n: usize, line: &str) -> Result<Hour, ParseError> {
    check_length(n, line)?;
    if !line.is_ascii() || line.len() < DRY_BULB.to {
        return Err(at_line(
            n,
            format!(
                "a TMY2 hour is {} or more ASCII characters wide; this line has {}",
                DRY_BULB.to,
                line.chars().count()
            ),
        ));
    }
    let text = |f: &Field| &line[f.from - 1..f.to];
    let bad = |f: &Field, why: String| ParseError {
        line: n,
        column: Some((f.from, f.name.to_owned())),
        reason: why,
    };
    let number = |f: &Field, range| in_range(text(f), range).map_err(|why| bad(f, why));
    let whole = |f: &Field, range: std::ops::RangeInclusive<u16>| {
        text(f)
            .trim()
            .parse::<u16>()
            .ok()
            .filter(|v| range.contains(v))
            .ok_or_else(|| {
                bad(
                    f,
                    format!(
                        "{:?} is not a whole number from {} to {}",
                        text(f),
                        range.start(),
                        range.end()
                    ),
                )
            })
    };
    let year = 1900 + whole(&YEAR, 0..=99)?;
    let month = whole(&MONTH, 1..=12)? as u8;
    let day = whole(&DAY, 1..=31)? as u8;
    if !day_exists(year, month, day) {
        return Err(bad(
            &DAY,
            format!("{year}-{month:02}-{day:02} is not a day"),
        ));
    }
    Ok(Hour {
        year,
        month,
        day,
        hour: whole(&HOUR, 1..=24)? as u8,
        ghi: number(&GHI, 0.0..=MAX_IRRADIANCE)?,
        dni: number(&DNI, 0.0..=MAX_IRRADIANCE)?,
        dhi: number(&DHI, 0.0..=MAX_IRRADIANCE)?,
        temp_air_c: number(&DRY_BULB, -1000.0..=700.0)? / 10.0,
    })
    .and_then(|h| {
        if AIR_TEMPERATURE_C.contains(&h.temp_air_c) {
            Ok(h)
        } else {
            Err(bad(
                &DRY_BULB,
                format!("{} °C is out of range", h.temp_air_c),
            ))
        }
    })
}
