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
