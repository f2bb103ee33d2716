//! Generates the sample datasets in `data/` deterministically (same bytes on every run):
//!
//! - `violations/year=Y/month=M/part-N.parquet`: parking violations, hive-partitioned Parquet,
//!   two files per partition, small row groups so row-group pruning shows;
//! - `violations_csv/year=Y/month=M/part-N.csv.gz`: the same rows as gzip CSV;
//! - `people/people-1.csv`, `people/people-2.csv`: people, some last names in both files;
//! - `events/events-N.ndjson`: events with a nested payload struct and a tags list;
//! - `formats/`: the first violations partition as Arrow IPC and Avro.
//!
//! Run with `cargo run --example generate-data` from the repository root.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::{EnabledStatistics, WriterProperties};

/// A small deterministic pseudo-random generator (64-bit LCG), so output never changes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len() as u64) as usize]
    }
}

const STATES: &[&str] = &["NY", "NJ", "PA", "CT", "FL", "MA", "TX", "CA", "99"];
const PLATE_TYPES: &[&str] = &["PAS", "COM", "OMT", "SRF", "OMS", "999"];
const BODY_TYPES: &[&str] = &["SUBN", "4DSD", "VAN", "DELV", "PICK", "2DSD", "SDN", "TRAC"];
const MAKES: &[&str] = &[
    "TOYOT", "HONDA", "FORD", "NISSA", "CHEVR", "BMW", "ME/BE", "JEEP", "HYUND", "LEXUS",
];
const AGENCIES: &[&str] = &["T", "P", "S", "K", "X"];
const STREETS: &[&str] = &[
    "Broadway",
    "3rd Ave",
    "Madison Ave",
    "W 34th St",
    "Lexington Ave",
    "5th Ave",
    "E 14th St",
    "Atlantic Ave",
    "Queens Blvd",
    "Flatbush Ave",
    "Canal St",
    "Amsterdam Ave",
];
const VIOLATION_CODES: &[i64] = &[14, 21, 36, 38, 7, 20, 46, 71, 40, 19, 5, 31];

const LAST_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
];
const FIRST_NAMES: &[&str] = &[
    "James",
    "Mary",
    "Robert",
    "Patricia",
    "John",
    "Jennifer",
    "Michael",
    "Linda",
    "David",
    "Elizabeth",
    "William",
    "Barbara",
    "Richard",
    "Susan",
    "Joseph",
    "Jessica",
    "Thomas",
    "Sarah",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("data");
    for dir in [
        "violations",
        "violations_csv",
        "people",
        "events",
        "formats",
    ] {
        let p = root.join(dir);
        if p.exists() {
            fs::remove_dir_all(&p)?;
        }
    }
    violations(&root)?;
    people(&root)?;
    events(&root)?;
    println!("sample data written under {}", root.display());
    Ok(())
}

struct Violation {
    summons: i64,
    plate: String,
    state: &'static str,
    plate_type: &'static str,
    date: i32,
    code: i64,
    body: Option<&'static str>,
    make: Option<&'static str>,
    agency: &'static str,
    street: &'static str,
    precinct: i64,
}

fn violation_schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("summons_number", DataType::Int64, false),
        Field::new("plate_id", DataType::Utf8, false),
        Field::new("registration_state", DataType::Utf8, false),
        Field::new("plate_type", DataType::Utf8, false),
        Field::new("issue_date", DataType::Date32, false),
        Field::new("violation_code", DataType::Int64, false),
        Field::new("vehicle_body_type", DataType::Utf8, true),
        Field::new("vehicle_make", DataType::Utf8, true),
        Field::new("issuing_agency", DataType::Utf8, false),
        Field::new("street_name", DataType::Utf8, false),
        Field::new("violation_precinct", DataType::Int64, false),
    ]))
}

/// Days from 1970-01-01 to the given civil date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146097 + doe - 719468) as i32
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn violations(root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = Rng(20240701);
    let schema = violation_schema();
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .set_max_row_group_row_count(Some(64))
        .set_statistics_enabled(EnabledStatistics::Page)
        .build();
    let mut summons: i64 = 1_000_000_000;
    let mut first_partition: Option<RecordBatch> = None;
    for year in [2023i64, 2024] {
        for month in 1..=12i64 {
            for part in 0..2 {
                // Between 120 and 180 rows per file.
                let n = 120 + rng.below(61) as usize;
                let mut rows: Vec<Violation> = Vec::with_capacity(n);
                for _ in 0..n {
                    summons += 1 + rng.below(5) as i64;
                    let plate = format!(
                        "{}{}{}{:04}",
                        (b'A' + rng.below(26) as u8) as char,
                        (b'A' + rng.below(26) as u8) as char,
                        (b'A' + rng.below(26) as u8) as char,
                        rng.below(10000)
                    );
                    let state = rng.pick(STATES);
                    let plate_type = rng.pick(PLATE_TYPES);
                    let day = 1 + rng.below(days_in_month(year, month) as u64) as i64;
                    let code = VIOLATION_CODES[rng.below(VIOLATION_CODES.len() as u64) as usize];
                    let body = (rng.below(20) != 0).then(|| rng.pick(BODY_TYPES));
                    let make = (rng.below(15) != 0).then(|| rng.pick(MAKES));
                    rows.push(Violation {
                        summons,
                        plate,
                        state,
                        plate_type,
                        date: days_from_civil(year, month, day),
                        code,
                        body,
                        make,
                        agency: rng.pick(AGENCIES),
                        street: rng.pick(STREETS),
                        precinct: 1 + rng.below(123) as i64,
                    });
                }
                let columns: Vec<ArrayRef> = vec![
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.summons))),
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.plate))),
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.state))),
                    Arc::new(StringArray::from_iter_values(
                        rows.iter().map(|r| r.plate_type),
                    )),
                    Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.date))),
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.code))),
                    Arc::new(StringArray::from_iter(rows.iter().map(|r| r.body))),
                    Arc::new(StringArray::from_iter(rows.iter().map(|r| r.make))),
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.agency))),
                    Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.street))),
                    Arc::new(Int64Array::from_iter_values(
                        rows.iter().map(|r| r.precinct),
                    )),
                ];
                let batch = RecordBatch::try_new(schema.clone(), columns)?;
                if first_partition.is_none() {
                    first_partition = Some(batch.clone());
                }

                let dir = root
                    .join("violations")
                    .join(format!("year={year}"))
                    .join(format!("month={month}"));
                fs::create_dir_all(&dir)?;
                let file = File::create(dir.join(format!("part-{part}.parquet")))?;
                let mut w = ArrowWriter::try_new(file, schema.clone(), Some(props.clone()))?;
                w.write(&batch)?;
                w.close()?;

                let dir = root
                    .join("violations_csv")
                    .join(format!("year={year}"))
                    .join(format!("month={month}"));
                fs::create_dir_all(&dir)?;
                let file = File::create(dir.join(format!("part-{part}.csv.gz")))?;
                let gz = flate2::GzBuilder::new()
                    .mtime(0)
                    .write(file, flate2::Compression::best());
                let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(gz);
                w.write(&batch)?;
                w.into_inner().finish()?;
            }
        }
    }

    let formats = root.join("formats");
    fs::create_dir_all(&formats)?;
    let batch = first_partition.expect("at least one partition");
    let mut w = arrow::ipc::writer::FileWriter::try_new(
        File::create(formats.join("violations_2023_01.arrow"))?,
        &schema,
    )?;
    w.write(&batch)?;
    w.finish()?;
    let mut buf = Vec::new();
    let mut w = arrow_avro::writer::AvroWriter::new(&mut buf, (*schema).clone())?;
    w.write(&batch)?;
    w.finish()?;
    let marker = *w
        .sync_marker()
        .expect("object container files have a sync marker");
    drop(w);
    // The writer draws a random sync marker; a fixed one keeps the file byte-identical.
    let fixed = *b"strata-sync-mark";
    let mut i = 0;
    while i + 16 <= buf.len() {
        if buf[i..i + 16] == marker {
            buf[i..i + 16].copy_from_slice(&fixed);
            i += 16;
        } else {
            i += 1;
        }
    }
    fs::write(formats.join("violations_2023_01.avro"), buf)?;
    Ok(())
}

fn people(root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = Rng(1985);
    let dir = root.join("people");
    fs::create_dir_all(&dir)?;
    let mut id = 0;
    for file in 1..=2 {
        let mut f = File::create(dir.join(format!("people-{file}.csv")))?;
        writeln!(f, "person_id,last_name,first_name,date_of_birth")?;
        // File 1 uses the first 18 last names, file 2 the last 15: 8 names are in both.
        let names: &[&str] = if file == 1 {
            &LAST_NAMES[..18]
        } else {
            &LAST_NAMES[10..]
        };
        for _ in 0..40 {
            id += 1;
            let y = 1950 + rng.below(55) as i64;
            let m = 1 + rng.below(12) as i64;
            let d = 1 + rng.below(days_in_month(y, m) as u64) as i64;
            writeln!(
                f,
                "{id},{},{},{y:04}-{m:02}-{d:02}",
                rng.pick(names),
                rng.pick(FIRST_NAMES)
            )?;
        }
    }
    Ok(())
}

fn events(root: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut rng = Rng(42);
    let dir = root.join("events");
    fs::create_dir_all(&dir)?;
    const USERS: &[&str] = &["ana", "bo", "chen", "dee", "eli", "fay"];
    const ACTIONS: &[&str] = &["view", "click", "purchase", "share"];
    const OS: &[&str] = &["ios", "android", "web"];
    const TAGS: &[&str] = &["new", "promo", "mobile", "returning", "beta"];
    let mut seconds = 1_704_067_200i64; // 2024-01-01T00:00:00Z
    for file in 0..2 {
        let mut f = File::create(dir.join(format!("events-{file}.ndjson")))?;
        for i in 0..100 {
            seconds += 30 + rng.below(3600) as i64;
            let days = seconds.div_euclid(86400);
            let secs = seconds.rem_euclid(86400);
            let (y, m, d) = civil_from_days(days);
            let ts = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
                secs / 3600,
                secs % 3600 / 60,
                secs % 60
            );
            let action = rng.pick(ACTIONS);
            let amount = if action == "purchase" {
                format!("{}.{:02}", 1 + rng.below(200), rng.below(100))
            } else {
                "null".to_string()
            };
            let ntags = rng.below(4) as usize;
            let mut tags: Vec<String> = Vec::new();
            for _ in 0..ntags {
                let t = rng.pick(TAGS);
                if !tags.iter().any(|x| x == &format!("\"{t}\"")) {
                    tags.push(format!("\"{t}\""));
                }
            }
            writeln!(
                f,
                r#"{{"event_id":{},"user":"{}","ts":"{}","payload":{{"action":"{}","amount":{},"device":{{"os":"{}","version":{}}}}},"tags":[{}]}}"#,
                file * 100 + i + 1,
                rng.pick(USERS),
                ts,
                action,
                amount,
                rng.pick(OS),
                1 + rng.below(5),
                tags.join(",")
            )?;
        }
    }
    Ok(())
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}
