use super::*;
use proptest::prelude::*;

fn shipped() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/greensboro-nc-tmy3.csv");
    std::fs::read_to_string(path).expect("the shipped TMY3 year")
}

const HEAD: &str = "723170,\"GREENSBORO PIEDMONT TRIAD INT\",NC,-5.0,36.100,-79.950,273\n\
    Date (MM/DD/YYYY),Time (HH:MM),GHI (W/m^2),DNI (W/m^2),DHI (W/m^2),Dry-bulb (C)\n";

/// A small file of `rows` (date, time, ghi, dni, dhi, temperature).
fn small(rows: &[&str]) -> String {
    let mut s = HEAD.to_owned();
    for r in rows {
        s.push_str(r);
        s.push('\n');
    }
    s
}

const GOOD: [&str; 3] = [
    "06/21/1990,11:00,700,650,120,24.5",
    "06/21/1990,12:00,850,800,110,26.0",
    "06/21/1990,13:00,820,760,115,27.1",
];

#[test]
fn the_shipped_year_reads_whole() {
    let year = parse_tmy3(&shipped()).unwrap();
    let s = &year.station;
    assert_eq!(
        (s.id.as_str(), s.name.as_str(), s.state.as_str()),
        ("723170", "GREENSBORO PIEDMONT TRIAD INT", "NC")
    );
    assert_eq!(
        (s.utc_offset_hours, s.latitude, s.longitude, s.elevation_m),
        (-5.0, 36.1, -79.95, 273.0)
    );
    assert_eq!(year.hours.len(), 8760);
    let first = year.hours[0];
    assert_eq!(
        (first.year, first.month, first.day, first.hour),
        (1988, 1, 1, 1)
    );
    let last = year.hours[8759];
    assert_eq!(
        (last.year, last.month, last.day, last.hour),
        (1980, 12, 31, 24)
    );
    // The year's global horizontal irradiation, summed independently with
    // Python's csv module: 1566.203 kWh/m².
    assert!(
        (year.ghi_kwh_per_m2() - 1566.203).abs() < 1e-6,
        "{}",
        year.ghi_kwh_per_m2()
    );
    // Night is dark, and no hour is brighter than a clear noon.
    assert!(year.hours.iter().all(|h| h.ghi <= 1100.0));
    assert_eq!(
        year.hours
            .iter()
            .filter(|h| h.hour == 24)
            .map(|h| h.ghi)
            .sum::<f64>(),
        0.0
    );
}

#[test]
fn columns_are_found_by_name_in_any_order() {
    let text = "1,\"A\",XX,0,0,0,0\n\
        Dry-bulb (C),DHI (W/m^2),Extra,GHI (W/m^2),Time (HH:MM),DNI (W/m^2),Date (MM/DD/YYYY)\n\
        20.0,100,x,500,12:00,450,02/29/2000\n";
    let year = parse_tmy3(text).unwrap();
    let h = year.hours[0];
    assert_eq!((h.month, h.day, h.year, h.hour), (2, 29, 2000, 12));
    assert_eq!(
        (h.ghi, h.dni, h.dhi, h.temp_air_c),
        (500.0, 450.0, 100.0, 20.0)
    );
}

#[test]
fn bad_files_are_refused_with_their_line_column_and_value() {
    let err = |text: &str| parse_tmy3(text).unwrap_err().to_string();
    assert!(err("").contains("line 1: the file is empty"), "{}", err(""));
    let e = err("723170,\"X\",NC,-5.0,36.1\n");
    assert!(e.contains("line 1") && e.contains("has 5 fields"), "{e}");
    let e = err("723170,\"X\",NC,-5.0,96.1,-79.9,273\nDate (MM/DD/YYYY)\n");
    assert!(
        e.contains("line 1, column 5 (latitude): 96.1 is not within"),
        "{e}"
    );
    let e = err(&HEAD.replace("GHI (W/m^2)", "GHI"));
    assert!(e.contains("line 2: no column named \"GHI (W/m^2)\""), "{e}");
    let e = err(HEAD);
    assert!(e.contains("line 3: no hours"), "{e}");
    let e = err(&small(&[GOOD[0], "06/21/1990,12:00,85x,800,110,26.0"]));
    assert!(
        e.contains("line 4, column 3 (GHI (W/m^2)): \"85x\" is not a number"),
        "{e}"
    );
    let e = err(&small(&[GOOD[0], "06/21/1990,12:00,850,-3,110,26.0"]));
    assert!(
        e.contains("line 4, column 4 (DNI (W/m^2)): -3 is not within"),
        "{e}"
    );
    let e = err(&small(&["02/30/1990,12:00,850,800,110,26.0"]));
    assert!(
        e.contains("line 3, column 1 (Date (MM/DD/YYYY)): \"02/30/1990\""),
        "{e}"
    );
    let e = err(&small(&["06/21/1990,25:00,850,800,110,26.0"]));
    assert!(e.contains("line 3, column 2 (Time (HH:MM))"), "{e}");
    let e = err(&small(&[GOOD[1], GOOD[0]]));
    assert!(
        e.contains("line 4: 06/21 11:00 does not follow 06/21 12:00"),
        "{e}"
    );
    let e = err(&small(&["06/21/1990,12:00,850,800,110"]));
    assert!(
        e.contains("line 3: 5 fields, the column names line has 6"),
        "{e}"
    );
    let e = err(&small(&[&"9".repeat(MAX_LINE_BYTES + 1)]));
    assert!(e.contains("line 3: 4097 bytes"), "{e}");
}

#[test]
fn the_hour_limit_is_a_leap_year() {
    let mut rows = Vec::new();
    let days = [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    for (m, n) in days.iter().enumerate() {
        for d in 1..=*n {
            for h in 1..=24 {
                rows.push(format!("{:02}/{d:02}/2000,{h:02}:00,0,0,0,0", m + 1));
            }
        }
    }
    assert_eq!(rows.len(), MAX_HOURS);
    let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
    assert_eq!(parse_tmy3(&small(&refs)).unwrap().hours.len(), MAX_HOURS);
    let mut more = refs.clone();
    more.push("12/31/2000,24:00,0,0,0,0");
    let e = parse_tmy3(&small(&more)).unwrap_err();
    assert_eq!(e.line, MAX_HOURS + 3);
    assert!(e.reason.contains("more than 8784 hours"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any text is read or refused, never a panic.
    #[test]
    fn any_text_is_read_or_refused(text in ".{0,600}") {
        let _ = parse_tmy3(&text);
    }

    /// One field of a good file replaced by anything: read, or refused at
    /// that line.
    #[test]
    fn a_changed_field_is_refused_at_its_line(row in 0usize..3, field in 0usize..6, value in "[^,\"\n\r]{0,12}") {
        let mut rows: Vec<String> = GOOD.iter().map(|r| (*r).to_owned()).collect();
        let mut fields: Vec<String> = rows[row].split(',').map(str::to_owned).collect();
        fields[field] = value;
        rows[row] = fields.join(",");
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        match parse_tmy3(&small(&refs)) {
            Ok(year) => prop_assert!(year.hours.len() <= 3),
            Err(e) => prop_assert!(e.line >= 3 + row && e.line <= 5, "{e}"),
        }
    }
}

/// The first `n` hours of the shipped year, as TMY3 reads them.
fn first_hours(n: usize) -> (Station, Vec<Hour>) {
    let year = parse_tmy3(&shipped()).unwrap();
    (year.station, year.hours[..n].to_vec())
}

/// `hours` written as a TMY2 file, field by field at the manual's columns.
fn as_tmy2(hours: &[Hour]) -> String {
    let mut s = "13881 GREENSBORO NC -5 N 36 6 W 79 57 273\n".to_owned();
    for h in hours {
        s.push_str(&format!(
            " {:2}{:2}{:2}{:2}{:4}{:4}{:4}A7{:4}A7{:4}A7{}{:4}{}\n",
            h.year % 100,
            h.month,
            h.day,
            h.hour,
            0,
            0,
            h.ghi,
            h.dni,
            h.dhi,
            " ".repeat(32),
            (h.temp_air_c * 10.0).round(),
            "A7 ".repeat(20)
        ));
    }
    s
}

/// `hours` written as a half-hourly PSM3 file: two rows per hour, whose
/// mean is the hour.
fn as_psm3(hours: &[Hour]) -> String {
    let mut s = "Source,Location ID,City,State,Country,Latitude,Longitude,Time Zone,Elevation,Local Time Zone\n\
        NSRDB,1004541,-,-,-,36.1,-79.95,-5,273,-5\n\
        Year,Month,Day,Hour,Minute,Temperature,GHI,DNI,DHI,Wind Speed\n"
        .to_owned();
    for h in hours {
        for (minute, delta) in [(0, -10.0), (30, 10.0)] {
            let shift = |v: f64| if v >= 10.0 { v + delta } else { v };
            s.push_str(&format!(
                "{},{},{},{},{minute},{},{},{},{},1.5\n",
                h.year,
                h.month,
                h.day,
                h.hour - 1,
                h.temp_air_c + delta / 10.0,
                shift(h.ghi),
                shift(h.dni),
                shift(h.dhi),
            ));
        }
    }
    s
}

#[test]
fn tmy2_and_psm3_give_the_hours_tmy3_gives() {
    let (station, hours) = first_hours(72);
    for (text, format) in [
        (as_tmy2(&hours), Format::Tmy2),
        (as_psm3(&hours), Format::Psm3),
    ] {
        assert_eq!(format_of(&text), format);
        let year = parse(&text).unwrap();
        assert_eq!(year.hours.len(), 72, "{format:?}");
        for (a, b) in year.hours.iter().zip(&hours) {
            assert_eq!(
                (a.month, a.day, a.hour),
                (b.month, b.day, b.hour),
                "{format:?}"
            );
            for (x, y) in [
                (a.ghi, b.ghi),
                (a.dni, b.dni),
                (a.dhi, b.dhi),
                (a.temp_air_c, b.temp_air_c),
            ] {
                assert!((x - y).abs() < 1e-9, "{format:?}: {x} != {y}");
            }
        }
        let s = &year.station;
        assert!(
            (s.latitude - station.latitude).abs() < 0.01,
            "{format:?} {s:?}"
        );
        assert!(
            (s.longitude - station.longitude).abs() < 0.01,
            "{format:?} {s:?}"
        );
        assert_eq!((s.utc_offset_hours, s.elevation_m), (-5.0, 273.0));
    }
    assert_eq!(format_of(&shipped()), Format::Tmy3);
}

#[test]
fn bad_tmy2_and_psm3_files_name_their_line_and_field() {
    let (_, hours) = first_hours(3);
    let err = |text: &str| parse(text).unwrap_err().to_string();
    // TMY2: a letter in the global irradiance, a short line, a bad header.
    let good = as_tmy2(&hours);
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    lines[2].replace_range(17..21, "  x1");
    let e = err(&lines.join("\n"));
    assert!(
        e.contains("line 3, column 18 (global horizontal): \"  x1\" is not a number"),
        "{e}"
    );
    let e = err(&format!("{}\n 88 1 1 1", lines[0]));
    assert!(e.contains("line 2: a TMY2 hour is 71 or more"), "{e}");
    let e = err(&good.replacen(" N 36", " Q 36", 1));
    assert!(
        e.contains("line 1, column 5 (N/S): \"Q\" is neither N nor S"),
        "{e}"
    );
    // PSM3: a missing column, a bad value, an hour out of order.
    let good = as_psm3(&hours);
    let e = err(&good.replace(",DHI,", ",DHX,"));
    assert!(e.contains("line 3: no column named \"DHI\""), "{e}");
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    lines[4] = lines[4].replacen(",1.5", ",1.5,extra", 1);
    let e = err(&lines.join("\n"));
    assert!(
        e.contains("line 5: 11 fields, the column names line has 10"),
        "{e}"
    );
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    let mut f: Vec<String> = lines[5].split(',').map(str::to_owned).collect();
    f[6] = "-4".into();
    lines[5] = f.join(",");
    let e = err(&lines.join("\n"));
    assert!(
        e.contains("line 6, column 7 (GHI): -4 is not within"),
        "{e}"
    );
    let mut lines: Vec<String> = good.lines().map(str::to_owned).collect();
    lines.swap(3, 5);
    let e = err(&lines.join("\n"));
    assert!(e.contains("does not follow"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any text, read as TMY2 or as PSM3, is read or refused, never a panic.
    #[test]
    fn any_text_is_read_or_refused_as_tmy2_or_psm3(text in ".{0,400}") {
        let _ = parse_tmy2(&text);
        let _ = parse_psm3(&text);
        let _ = parse_psm3(&format!("Source,Location ID,Latitude,Longitude,Time Zone,Elevation\n{text}"));
    }
}
