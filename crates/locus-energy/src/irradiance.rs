//! Irradiance years from NREL's files: Typical Meteorological Year files
//! in their TMY3 CSV ([`parse_tmy3`]) and TMY2 fixed-width ([`parse_tmy2`])
//! layouts, and NSRDB PSM3 CSV ([`parse_psm3`]); [`parse`] tells them
//! apart. Each gives a [`Year`]: the station and its hours, in calendar
//! order, stamped with the hour they end.
//!
//! TMY3 (Wilcox and Marion, *Users Manual for TMY3 Data Sets*, NREL/TP-581-
//! 43156, 2008):
//! Line 1 is the station: its USAF id, its name (quoted), its state, its
//! offset from UTC in hours, its latitude and longitude in degrees and its
//! elevation in metres. Line 2 names the columns. Then one row per hour,
//! stamped with the hour it *ends*, in local standard time (`01:00` to
//! `24:00`); the months of a typical year come from different years, so
//! rows follow the calendar, not one year. Columns are found by their
//! names, as pvlib's reader does, so a file with columns in another order
//! or with more of them reads the same.

/// Most hours one file may hold: a leap year.
pub const MAX_HOURS: usize = 8784;
/// Longest line read (a TMY3 row is about 200 bytes).
pub const MAX_LINE_BYTES: usize = 4096;
/// Largest irradiance taken, W/m² (the solar constant is 1361 W/m²).
pub const MAX_IRRADIANCE: f64 = 2000.0;
/// Air temperatures taken, °C.
pub const AIR_TEMPERATURE_C: std::ops::RangeInclusive<f64> = -100.0..=70.0;

/// The columns read, by their TMY3 names.
const DATE: &str = "Date (MM/DD/YYYY)";
const TIME: &str = "Time (HH:MM)";
const GHI: &str = "GHI (W/m^2)";
const DNI: &str = "DNI (W/m^2)";
const DHI: &str = "DHI (W/m^2)";
const DRY_BULB: &str = "Dry-bulb (C)";

/// Where a file's measurements were taken.
#[derive(Clone, Debug, PartialEq)]
pub struct Station {
    pub id: String,
    pub name: String,
    pub state: String,
    /// Local standard time minus UTC, hours.
    pub utc_offset_hours: f64,
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east (west is negative).
    pub longitude: f64,
    pub elevation_m: f64,
}

/// One hour of a year.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hour {
    /// The year the month was taken from.
    pub year: u16,
    pub month: u8,
    pub day: u8,
    /// The hour it ends, local standard time, 1 to 24.
    pub hour: u8,
    /// Global horizontal irradiance, W/m².
    pub ghi: f64,
    /// Direct normal irradiance, W/m².
    pub dni: f64,
    /// Diffuse horizontal irradiance, W/m².
    pub dhi: f64,
    /// Dry-bulb air temperature, °C.
    pub temp_air_c: f64,
}

/// A station and its hours, in calendar order.
#[derive(Clone, Debug, PartialEq)]
pub struct Year {
    pub station: Station,
    pub hours: Vec<Hour>,
}

impl Year {
    /// Global horizontal irradiation over all its hours, kWh/m².
    pub fn ghi_kwh_per_m2(&self) -> f64 {
        self.hours.iter().map(|h| h.ghi).sum::<f64>() / 1000.0
    }
}

/// Why a file is refused: its line (1-based), the column (1-based) and
/// its name when one field is at fault, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("TMY3 line {line}{}: {reason}", column_text(.column))]
pub struct ParseError {
    pub line: usize,
    pub column: Option<(usize, String)>,
    pub reason: String,
}

fn column_text(column: &Option<(usize, String)>) -> String {
    column
        .as_ref()
        .map_or_else(String::new, |(n, name)| format!(", column {n} ({name})"))
}

fn at_line(line: usize, reason: impl Into<String>) -> ParseError {
    ParseError {
        line,
        column: None,
        reason: reason.into(),
    }
}

/// The fields of a CSV line; a field may be quoted (`"NAME, ST"`), with
/// `""` for a quote inside it.
fn fields(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    out.push(field);
    out
}

mod psm3;
mod tmy2;

pub use psm3::parse_psm3;
pub use tmy2::parse_tmy2;

/// Which layout a file is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Tmy3,
    Tmy2,
    Psm3,
}

/// The layout of `text`, from its first lines: PSM3 starts with its
/// metadata names (`Source,Location ID,…`), TMY3 names its columns on
/// line 2 (`Date (MM/DD/YYYY),…`), anything else is read as TMY2.
pub fn format_of(text: &str) -> Format {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    let second = lines.next().unwrap_or_default();
    if first.starts_with("Source,") {
        Format::Psm3
    } else if second.contains(DATE) {
        Format::Tmy3
    } else {
        Format::Tmy2
    }
}

/// Parse a TMY3, TMY2 or PSM3 file, whichever it is.
pub fn parse(text: &str) -> Result<Year, ParseError> {
    match format_of(text) {
        Format::Tmy3 => parse_tmy3(text),
        Format::Tmy2 => parse_tmy2(text),
        Format::Psm3 => parse_psm3(text),
    }
}

/// A number of `what` in `range`, or why not.
fn in_range(text: &str, range: std::ops::RangeInclusive<f64>) -> Result<f64, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !range.contains(&v) {
        return Err(format!(
            "{v} is not within {}..={}",
            range.start(),
            range.end()
        ));
    }
    Ok(v)
}

/// Whether `day` of `month` exists in `year`.
fn day_exists(year: u16, month: u8, day: u8) -> bool {
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// Append `hour` to `hours`, refusing one out of calendar order or past
/// [`MAX_HOURS`].
fn push_hour(hours: &mut Vec<Hour>, hour: Hour, line: usize) -> Result<(), ParseError> {
    if hours.len() == MAX_HOURS {
        return Err(at_line(
            line,
            format!("more than {MAX_HOURS} hours (a leap year)"),
        ));
    }
    if let Some(prev) = hours.last()
        && (prev.month, prev.day, prev.hour) >= (hour.month, hour.day, hour.hour)
    {
        return Err(at_line(
            line,
            format!(
                "{:02}/{:02} {:02}:00 does not follow {:02}/{:02} {:02}:00: hours must follow the calendar",
                hour.month, hour.day, hour.hour, prev.month, prev.day, prev.hour
            ),
        ));
    }
    hours.push(hour);
    Ok(())
}

/// Parse a TMY3 CSV file.
pub fn parse_tmy3(text: &str) -> Result<Year, ParseError> {
    let mut lines = numbered_lines(text);
    let (n, first) = lines
        .next()
        .ok_or_else(|| at_line(1, "the file is empty: no station line"))?;
    let station = station(n, first)?;
    let (n, names) = lines
        .next()
        .ok_or_else(|| at_line(2, "no column names after the station line"))?;
    check_length(n, names)?;
    let names = fields(names);
    let column = |name: &str| {
        names
            .iter()
            .position(|c| c.trim() == name)
            .ok_or_else(|| at_line(n, format!("no column named {name:?}")))
    };
    let cols = Columns {
        date: column(DATE)?,
        time: column(TIME)?,
        ghi: column(GHI)?,
        dni: column(DNI)?,
        dhi: column(DHI)?,
        dry_bulb: column(DRY_BULB)?,
        count: names.len(),
    };
    let mut hours: Vec<Hour> = Vec::new();
    for (n, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        check_length(n, line)?;
        let hour = row(n, &fields(line), &cols, &names)?;
        push_hour(&mut hours, hour, n)?;
    }
    if hours.is_empty() {
        return Err(at_line(3, "no hours after the column names"));
    }
    Ok(Year { station, hours })
}

/// The lines of `text`, numbered from 1, without a CR before their LF.
fn numbered_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
}

/// Refuse line `n` when it is longer than [`MAX_LINE_BYTES`].
fn check_length(n: usize, line: &str) -> Result<(), ParseError> {
    if line.len() > MAX_LINE_BYTES {
        return Err(at_line(
            n,
            format!("{} bytes, more than {MAX_LINE_BYTES}", line.len()),
        ));
    }
    Ok(())
}

/// The indices of the columns read, and how many a row has.
struct Columns {
    date: usize,
    time: usize,
    ghi: usize,
    dni: usize,
    dhi: usize,
    dry_bulb: usize,
    count: usize,
}

fn station(n: usize, line: &str) -> Result<Station, ParseError> {
    check_length(n, line)?;
    const NAMES: [&str; 7] = [
        "id",
        "name",
        "state",
        "UTC offset",
        "latitude",
        "longitude",
        "elevation",
    ];
    let f = fields(line);
    if f.len() != NAMES.len() {
        return Err(at_line(
            n,
            format!(
                "the station line has {} fields, not 7 (id, name, state, UTC offset, latitude, longitude, elevation)",
                f.len()
            ),
        ));
    }
    let number = |i: usize, range: std::ops::RangeInclusive<f64>| {
        in_range(&f[i], range).map_err(|why| ParseError {
            line: n,
            column: Some((i + 1, NAMES[i].to_owned())),
            reason: why,
        })
    };
    Ok(Station {
        id: f[0].trim().to_owned(),
        name: f[1].trim().to_owned(),
        state: f[2].trim().to_owned(),
        utc_offset_hours: number(3, -12.0..=14.0)?,
        latitude: number(4, -90.0..=90.0)?,
        longitude: number(5, -180.0..=180.0)?,
        elevation_m: number(6, -500.0..=9000.0)?,
    })
}

fn row(n: usize, f: &[String], c: &Columns, names: &[String]) -> Result<Hour, ParseError> {
    if f.len() != c.count {
        return Err(at_line(
            n,
            format!("{} fields, the column names line has {}", f.len(), c.count),
        ));
    }
    let bad = |i: usize, why: String| ParseError {
        line: n,
        column: Some((i + 1, names[i].trim().to_owned())),
        reason: why,
    };
    let number = |i: usize, range: std::ops::RangeInclusive<f64>| -> Result<f64, ParseError> {
        in_range(&f[i], range).map_err(|why| bad(i, why))
    };
    let (month, day, year) = date(&f[c.date]).ok_or_else(|| {
        bad(
            c.date,
            format!("{:?} is not a date as MM/DD/YYYY", f[c.date]),
        )
    })?;
    let hour = time(&f[c.time]).ok_or_else(|| {
        bad(
            c.time,
            format!("{:?} is not an hour from 01:00 to 24:00", f[c.time]),
        )
    })?;
    Ok(Hour {
        year,
        month,
        day,
        hour,
        ghi: number(c.ghi, 0.0..=MAX_IRRADIANCE)?,
        dni: number(c.dni, 0.0..=MAX_IRRADIANCE)?,
        dhi: number(c.dhi, 0.0..=MAX_IRRADIANCE)?,
        temp_air_c: number(c.dry_bulb, AIR_TEMPERATURE_C)?,
    })
}

/// `MM/DD/YYYY` of a day that exists.
fn date(s: &str) -> Option<(u8, u8, u16)> {
    let mut parts = s.trim().split('/');
    let (m, d, y) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || m.len() != 2 || d.len() != 2 || y.len() != 4 {
        return None;
    }
    let (month, day, year): (u8, u8, u16) = (m.parse().ok()?, d.parse().ok()?, y.parse().ok()?);
    day_exists(year, month, day).then_some((month, day, year))
}

/// `HH:00`, an hour ending from 01:00 to 24:00.
fn time(s: &str) -> Option<u8> {
    let (h, m) = s.trim().split_once(':')?;
    if h.len() != 2 || m != "00" {
        return None;
    }
    let hour: u8 = h.parse().ok()?;
    (1..=24).contains(&hour).then_some(hour)
}

#[cfg(test)]
mod tests;
