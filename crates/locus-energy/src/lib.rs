//! Energy as data: what the sun gives a node, read from the irradiance
//! files solar engineering uses.
//!
//! # What this crate owns
//!
//! - Irradiance years ([`irradiance`]): NREL's Typical Meteorological Year
//!   files (TMY3 CSV, TMY2 fixed-width) and NSRDB PSM3 CSV parsed into a
//!   [`Station`](irradiance::Station) and its hours of global, direct and
//!   diffuse irradiance and air temperature, every refusal naming its
//!   line, column and value.
//! - The sun's position ([`sun`]): apparent zenith and azimuth for a UTC
//!   instant and a place, by NOAA's solar calculator equations.
//! - What a fixed panel makes ([`panel`]): PVWatts' chain per hour
//!   (isotropic-sky plane-of-array irradiance, SAPM cell temperature,
//!   PVWatts DC power, system losses) and a year's energy in kWh.
//!
//! # What it must never do
//!
//! Do I/O (it is given text, not paths), read a clock (the hour a reading
//! belongs to is in the data), panic on a file from outside, or hold more
//! than [`irradiance::MAX_HOURS`] hours of one file.

pub mod irradiance;
pub mod panel;
pub mod sun;
