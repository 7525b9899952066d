//! NSRDB PSM3 CSV, as the NSRDB API and its downloads give it: line 1
//! names the metadata (`Source,Location ID,City,State,Country,Latitude,
//! Longitude,Time Zone,Elevation,…`), line 2 gives their values, line 3
//! names the columns (`Year,Month,Day,Hour,Minute,…,GHI,DNI,DHI,
//! Temperature,…`, found by name), then one row per interval, stamped with
//! its start in the time zone the metadata names. Rows of one hour (every
//! 30 minutes, or one at minute 0 or 30) are averaged into that hour,
//! which ends an hour after the row's `Hour`.

use super::{
    AIR_TEMPERATURE_C, Hour, MAX_IRRADIANCE, ParseError, Station, Year, at_line, check_length,
    day_exists, fields, in_range, numbered_lines, push_hour,
};

/// Most rows of one hour (one a minute).
const MAX_ROWS_PER_HOUR: usize = 60;

/// An hour being averaged: its stamp (year, month, day, hour ending), the
/// sums of GHI, DNI, DHI and temperature, how many rows, and the line of
/// the first.
type OpenHour = ((u16, u8, u8, u8), [f64; 4], usize, usize);

/// Parse a PSM3 CSV file.
pub fn parse_psm3(text: &str) -> Result<Year, ParseError> {
    let mut lines = numbered_lines(text);
    let mut next = |what: &str, line: usize| {
        lines
            .next()
            .ok_or_else(|| at_line(line, format!("the file ends before its {what}")))
    };
    let (_, names) = next("metadata names", 1)?;
    let (n, values) = next("metadata values", 2)?;
    let station = station(n, names, values)?;
    let (n, columns) = next("column names", 3)?;
    check_length(n, columns)?;
    let columns = fields(columns);
    let col = |name: &str| {
        columns
            .iter()
            .position(|c| c.trim() == name)
            .ok_or_else(|| at_line(n, format!("no column named {name:?}")))
    };
    let idx = [
        col("Year")?,
        col("Month")?,
        col("Day")?,
        col("Hour")?,
        col("Minute")?,
        col("GHI")?,
        col("DNI")?,
        col("DHI")?,
        col("Temperature")?,
    ];
    let mut hours = Vec::new();
    // The hour being averaged: its stamp, sums and row count.
    let mut open: Option<OpenHour> = None;
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        check_length(n, line)?;
        let f = fields(line);
        if f.len() != columns.len() {
            return Err(at_line(
                n,
                format!(
                    "{} fields, the column names line has {}",
                    f.len(),
                    columns.len()
                ),
            ));
        }
        let bad = |i: usize, why: String| ParseError {
            line: n,
            column: Some((i + 1, columns[i].trim().to_owned())),
            reason: why,
        };
        let number = |k: usize, range| in_range(&f[idx[k]], range).map_err(|why| bad(idx[k], why));
        let whole = |k: usize, range: std::ops::RangeInclusive<f64>| -> Result<u16, ParseError> {
            let v = number(k, range)?;
            if v.fract() != 0.0 {
                return Err(bad(idx[k], format!("{v} is not a whole number")));
            }
            Ok(v as u16)
        };
        let year = whole(0, 1900.0..=2100.0)?;
        let month = whole(1, 1.0..=12.0)? as u8;
        let day = whole(2, 1.0..=31.0)? as u8;
        if !day_exists(year, month, day) {
            return Err(bad(
                idx[2],
                format!("{year}-{month:02}-{day:02} is not a day"),
            ));
        }
        let hour = whole(3, 0.0..=23.0)? as u8 + 1;
        whole(4, 0.0..=59.0)?;
        let values = [
            number(5, 0.0..=MAX_IRRADIANCE)?,
            number(6, 0.0..=MAX_IRRADIANCE)?,
            number(7, 0.0..=MAX_IRRADIANCE)?,
            number(8, AIR_TEMPERATURE_C)?,
        ];
        let key = (year, month, day, hour);
        match &mut open {
            Some((k, sums, count, _)) if *k == key => {
                if *count == MAX_ROWS_PER_HOUR {
                    return Err(at_line(
                        n,
                        format!("more than {MAX_ROWS_PER_HOUR} rows in one hour"),
                    ));
                }
                for (s, v) in sums.iter_mut().zip(values) {
                    *s += v;
                }
                *count += 1;
            }
            _ => {
                if let Some(done) = open.take() {
                    close(&mut hours, done)?;
                }
                open = Some((key, values, 1, n));
            }
        }
    }
    if let Some(done) = open.take() {
        close(&mut hours, done)?;
    }
    if hours.is_empty() {
        return Err(at_line(4, "no rows after the column names"));
    }
    Ok(Year { station, hours })
}

/// The averaged hour `(stamp, sums, count, first line)` onto `hours`.
fn close(
    hours: &mut Vec<Hour>,
    ((year, month, day, hour), sums, count, line): OpenHour,
) -> Result<(), ParseError> {
    let mean = |i: usize| sums[i] / count as f64;
    push_hour(
        hours,
        Hour {
            year,
            month,
            day,
            hour,
            ghi: mean(0),
            dni: mean(1),
            dhi: mean(2),
            temp_air_c: mean(3),
        },
        line,
    )
}

fn station(n: usize, names: &str, values: &str) -> Result<Station, ParseError> {
    check_length(n - 1, names)?;
    check_length(n, values)?;
    let (names, values) = (fields(names), fields(values));
    let get = |name: &str| -> Result<(usize, &str), ParseError> {
        let i = names
            .iter()
            .position(|c| c.trim() == name)
            .ok_or_else(|| at_line(1, format!("no metadata named {name:?}")))?;
        let v = values.get(i).ok_or_else(|| ParseError {
            line: n,
            column: Some((i + 1, name.to_owned())),
            reason: "missing".to_owned(),
        })?;
        Ok((i, v.trim()))
    };
    let number = |name: &str, range| {
        let (i, v) = get(name)?;
        in_range(v, range).map_err(|why| ParseError {
            line: n,
            column: Some((i + 1, name.to_owned())),
            reason: why,
        })
    };
    Ok(Station {
        id: get("Location ID")?.1.to_owned(),
        name: get("City").map_or_else(|_| String::new(), |(_, v)| v.to_owned()),
        state: get("State").map_or_else(|_| String::new(), |(_, v)| v.to_owned()),
        utc_offset_hours: number("Time Zone", -12.0..=14.0)?,
        latitude: number("Latitude", -90.0..=90.0)?,
        longitude: number("Longitude", -180.0..=180.0)?,
        elevation_m: number("Elevation", -500.0..=9000.0)?,
    })
}
