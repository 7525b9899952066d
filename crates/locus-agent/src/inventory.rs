//! Host inventory reader: fills [`locus_core::inventory::Inventory`] from the
//! running machine.
//!
//! What is read, relative to [`HostPaths`] (`/proc` and `/sys` by default):
//!
//! - `<proc>/cpuinfo`, `<sys>/devices/system/cpu/online`: CPU model and core counts;
//! - `<proc>/meminfo`: total and available memory;
//! - `<proc>/self/cgroup` and `<sys>/fs/cgroup/…`: the CPU quota (`cpu.max`) and
//!   memory limit (`memory.max`) of the agent's cgroup, with a cgroup v1
//!   fallback (`cpu.cfs_quota_us`, `memory.limit_in_bytes`);
//! - `<proc>/uptime`: host uptime;
//! - `<sys>/class/net/*`: network interfaces (addresses come from `getifaddrs`);
//! - `<sys>/bus/usb/devices/*`: USB devices (interface entries are skipped);
//! - `<sys>/bus/pci/devices/*`: GPUs, accelerators and co-processors only;
//! - `<sys>/class/power_supply/*`: mains, batteries, UPSes;
//! - `statvfs(data_dir)`: disk capacity.
//!
//! The inventory is informational, so reading it must never fail the agent:
//! [`collect`] never panics and never returns an error. A missing or
//! unreadable file leaves the matching field `None` (or `0` where the type has
//! no "unknown") or the matching list shorter, and is logged at `debug` level.
//! The text parsers are pure functions of their input, so they are tested on
//! fixtures, and `collect` itself can be pointed at a fixture tree.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use locus_core::inventory::{
    Cpu, Disk, Inventory, Memory, NetInterface, PciDevice, PciKind, PowerSupply, UsbDevice,
};

/// Where the kernel's pseudo file systems are mounted.
///
/// Production uses [`HostPaths::default`]; tests point these at a fixture tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// Mount point of procfs, normally `/proc`.
    pub proc_root: PathBuf,
    /// Mount point of sysfs, normally `/sys`.
    pub sys_root: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        Self {
            proc_root: PathBuf::from("/proc"),
            sys_root: PathBuf::from("/sys"),
        }
    }
}

/// Reads the host inventory. Never fails and never panics: whatever cannot be
/// read is left out (see the module documentation).
///
/// `data_dir` is the directory whose file system is measured for [`Disk`].
/// Disk capacity and interface addresses always come from the real machine
/// (`statvfs`, `getifaddrs`), whatever `paths` says.
pub fn collect(paths: &HostPaths, data_dir: &Path) -> Inventory {
    let cgroup = CgroupDirs::discover(paths);
    let addresses = interface_addresses();
    Inventory {
        cpu: read_cpu(paths, &cgroup),
        memory: read_memory(paths, &cgroup),
        disk: read_disk(data_dir),
        interfaces: read_interfaces(&paths.sys_root, &addresses),
        usb: read_usb(&paths.sys_root),
        pci: read_pci(&paths.sys_root),
        power: read_power(&paths.sys_root),
        host_uptime_secs: read_trimmed(&paths.proc_root.join("uptime"))
            .and_then(|s| parse_uptime(&s))
            .unwrap_or(0),
        collected_at_unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
    }
}

// ---------------------------------------------------------------------------
// Pure parsers
// ---------------------------------------------------------------------------

/// What [`parse_cpuinfo`] extracts from `/proc/cpuinfo`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuInfo {
    /// Human-readable model, if any line names one.
    pub model: Option<String>,
    /// Number of `processor` entries.
    pub logical_cores: u32,
}

/// Parses `/proc/cpuinfo`.
///
/// The model is the first `model name` (x86, most ARM64 kernels); failing
/// that, the board `Model` (Raspberry Pi), the SoC `Hardware`, or a name
/// derived from the first `CPU part` (ARM).
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut logical_cores = 0u32;
    let (mut model_name, mut board, mut hardware, mut implementer, mut part) =
        (None, None, None, None, None);
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        let value = value.trim();
        // `processor\t: 0` on most architectures, `processor 0: …` on s390x.
        if let Some(rest) = key.strip_prefix("processor")
            && rest.trim().chars().all(|c| c.is_ascii_digit())
        {
            logical_cores = logical_cores.saturating_add(1);
            continue;
        }
        if value.is_empty() {
            continue;
        }
        let slot = match key {
            "model name" => &mut model_name,
            "Model" => &mut board,
            "Hardware" => &mut hardware,
            "CPU implementer" => &mut implementer,
            "CPU part" => &mut part,
            _ => continue,
        };
        slot.get_or_insert_with(|| value.to_owned());
    }
    let model = model_name
        .or(board)
        .or(hardware)
        .or_else(|| part.map(|p| arm_part_name(implementer.as_deref(), &p)));
    CpuInfo {
        model,
        logical_cores,
    }
}

/// Names an ARM core from its `CPU implementer` and `CPU part` fields.
fn arm_part_name(implementer: Option<&str>, part: &str) -> String {
    let arm = implementer.is_some_and(|i| i.eq_ignore_ascii_case("0x41"));
    let name = match part.to_ascii_lowercase().as_str() {
        _ if !arm => None,
        "0xb76" => Some("ARM1176"),
        "0xc07" => Some("Cortex-A7"),
        "0xc08" => Some("Cortex-A8"),
        "0xc09" => Some("Cortex-A9"),
        "0xc0f" => Some("Cortex-A15"),
        "0xd03" => Some("Cortex-A53"),
        "0xd04" => Some("Cortex-A35"),
        "0xd05" => Some("Cortex-A55"),
        "0xd07" => Some("Cortex-A57"),
        "0xd08" => Some("Cortex-A72"),
        "0xd09" => Some("Cortex-A73"),
        "0xd0b" => Some("Cortex-A76"),
        "0xd0c" => Some("Neoverse-N1"),
        "0xd40" => Some("Neoverse-V1"),
        "0xd49" => Some("Neoverse-N2"),
        _ => None,
    };
    match (name, implementer) {
        (Some(name), _) => name.to_owned(),
        (None, Some(imp)) => format!("CPU implementer {imp} part {part}"),
        (None, None) => format!("CPU part {part}"),
    }
}

/// Counts the CPUs in a kernel CPU list such as `0-3,6` (→ 5).
///
/// Malformed or reversed ranges are ignored; the count saturates at `u32::MAX`.
pub fn parse_cpu_list(text: &str) -> u32 {
    let mut count = 0u64;
    for part in text
        .trim()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let n = match part.split_once('-') {
            Some((lo, hi)) => match (lo.trim().parse::<u64>(), hi.trim().parse::<u64>()) {
                (Ok(lo), Ok(hi)) if lo <= hi => (hi - lo).saturating_add(1),
                _ => 0,
            },
            None => u64::from(part.parse::<u64>().is_ok()),
        };
        count = count.saturating_add(n);
    }
    u32::try_from(count).unwrap_or(u32::MAX)
}

/// What [`parse_meminfo`] extracts from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total_bytes: Option<u64>,
    /// `MemAvailable`, or `MemFree + Buffers + Cached` on kernels older than 3.14.
    pub available_bytes: Option<u64>,
}

/// Parses `/proc/meminfo` (values in kB, converted to bytes).
pub fn parse_meminfo(text: &str) -> MemInfo {
    let mut fields: BTreeMap<&str, u64> = BTreeMap::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let key = key.trim();
        if !matches!(
            key,
            "MemTotal" | "MemAvailable" | "MemFree" | "Buffers" | "Cached"
        ) {
            continue;
        }
        let mut words = value.split_whitespace();
        let Some(Ok(number)) = words.next().map(str::parse::<u64>) else {
            continue;
        };
        let bytes = match words.next() {
            Some(unit) if unit.eq_ignore_ascii_case("kb") => number.checked_mul(1024),
            None => Some(number),
            Some(_) => None,
        };
        if let Some(bytes) = bytes {
            fields.entry(key).or_insert(bytes);
        }
    }
    let available = fields.get("MemAvailable").copied().or_else(|| {
        let free = fields.get("MemFree")?;
        let buffers = fields.get("Buffers").copied().unwrap_or(0);
        let cached = fields.get("Cached").copied().unwrap_or(0);
        Some(free.saturating_add(buffers).saturating_add(cached))
    });
    MemInfo {
        total_bytes: fields.get("MemTotal").copied(),
        available_bytes: available,
    }
}

/// Parses cgroup v2 `cpu.max` (`<quota> <period>` in µs) into millicores:
/// `200000 100000` → 2000, `max 100000` → `None`.
pub fn parse_cpu_max(text: &str) -> Option<u64> {
    let mut words = text.split_whitespace();
    let quota = words.next()?;
    let period = words
        .next()
        .map_or(Some(100_000), |p| p.parse::<u64>().ok())?;
    if quota == "max" {
        return None;
    }
    millicores(quota.parse().ok()?, period)
}

/// Parses cgroup v1 `cpu.cfs_quota_us` and `cpu.cfs_period_us` into
/// millicores; a quota of `-1` means unlimited.
pub fn parse_cfs_quota(quota: &str, period: &str) -> Option<u64> {
    let quota: i64 = quota.trim().parse().ok()?;
    millicores(u64::try_from(quota).ok()?, period.trim().parse().ok()?)
}

fn millicores(quota_us: u64, period_us: u64) -> Option<u64> {
    if period_us == 0 {
        return None;
    }
    let m = u128::from(quota_us) * 1000 / u128::from(period_us);
    Some(u64::try_from(m).unwrap_or(u64::MAX))
}

/// Parses cgroup v2 `memory.max` (bytes, or `max` for unlimited).
pub fn parse_memory_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        n => n.parse().ok(),
    }
}

/// Parses cgroup v1 `memory.limit_in_bytes`, where "unlimited" is a huge
/// page-aligned number near `i64::MAX`.
pub fn parse_memory_limit_v1(text: &str) -> Option<u64> {
    text.trim().parse::<u64>().ok().filter(|&n| n < 1 << 62)
}

/// Parses `/proc/uptime` into whole seconds.
pub fn parse_uptime(text: &str) -> Option<u64> {
    let first = text.split_whitespace().next()?;
    let whole = first.split('.').next()?;
    whole.parse().ok()
}

/// Parses a sysfs hexadecimal ID (`0x10de`, `10DE`) into lowercase hex
/// without prefix, padded to `width` digits.
pub fn parse_hex_id(text: &str, width: usize) -> Option<String> {
    let t = text.trim();
    let digits = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    let value = u32::from_str_radix(digits, 16).ok()?;
    Some(format!("{value:0width$x}"))
}

/// Parses an interface's sysfs `speed`: Mbit/s, or `-1` when unknown.
pub fn parse_link_speed(text: &str) -> Option<u32> {
    text.trim().parse::<u32>().ok()
}

/// Parses a micro-unit sysfs value (µWh, µW, µV, …) into whole units.
fn parse_micro(text: &str) -> Option<f64> {
    text.trim().parse::<i64>().ok().map(|v| v as f64 / 1e6)
}

// ---------------------------------------------------------------------------
// Readers
// ---------------------------------------------------------------------------

/// Reads a small text file and trims it; `None` (logged) if it is missing,
/// unreadable or empty.
fn read_trimmed(path: &Path) -> Option<String> {
    match fs::read_to_string(path) {
        Ok(s) => {
            let s = s.trim();
            (!s.is_empty()).then(|| s.to_owned())
        }
        Err(error) => {
            tracing::debug!(path = %path.display(), %error, "inventory: cannot read");
            None
        }
    }
}

/// Reads a file that sysfs may legitimately omit (serial numbers, battery
/// counters): `None` without a log line when it does not exist.
fn read_optional(dir: &Path, name: &str) -> Option<String> {
    let path = dir.join(name);
    if !path.exists() {
        return None;
    }
    read_trimmed(&path)
}

/// Entries of a directory, sorted by name; empty (logged) if unreadable.
fn list_dir(path: &Path) -> Vec<(String, PathBuf)> {
    let entries = match fs::read_dir(path) {
        Ok(entries) => entries,
        Err(error) => {
            tracing::debug!(path = %path.display(), %error, "inventory: cannot list");
            return Vec::new();
        }
    };
    let mut out: Vec<_> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect();
    out.sort();
    out
}

/// The cgroup directories whose limits apply to this process, innermost first.
#[derive(Debug, Default)]
struct CgroupDirs {
    /// cgroup v2 (unified) directories; empty if v2 does not manage controllers.
    v2: Vec<PathBuf>,
    /// cgroup v1 `cpu` controller directories.
    v1_cpu: Vec<PathBuf>,
    /// cgroup v1 `memory` controller directories.
    v1_memory: Vec<PathBuf>,
}

impl CgroupDirs {
    fn discover(paths: &HostPaths) -> Self {
        let root = paths.sys_root.join("fs/cgroup");
        let membership = read_trimmed(&paths.proc_root.join("self/cgroup")).unwrap_or_default();
        let mut dirs = Self::default();
        let mut v2_path = "/";
        for line in membership.lines() {
            let mut fields = line.splitn(3, ':');
            let (Some(_), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            if controllers.is_empty() {
                v2_path = path;
            }
            for controller in controllers.split(',') {
                match controller {
                    "cpu" => dirs.v1_cpu = ancestors(&root.join("cpu"), path),
                    "memory" => dirs.v1_memory = ancestors(&root.join("memory"), path),
                    _ => {}
                }
            }
        }
        if root.join("cgroup.controllers").exists() {
            dirs.v2 = ancestors(&root, v2_path);
            // A pure v2 host has no v1 hierarchies; ignore stale v1 lines.
            dirs.v1_cpu.clear();
            dirs.v1_memory.clear();
        }
        if dirs.v1_cpu.is_empty() && dirs.v1_memory.is_empty() && dirs.v2.is_empty() {
            // No membership info (e.g. a fixture without /proc/self/cgroup):
            // look at the root of whatever hierarchy exists.
            dirs.v2 = vec![root.clone()];
            dirs.v1_cpu = vec![root.join("cpu")];
            dirs.v1_memory = vec![root.join("memory")];
        }
        dirs
    }

    /// The tightest limit over a chain of directories, as parsed by `read`.
    fn tightest(dirs: &[PathBuf], read: impl Fn(&Path) -> Option<u64>) -> Option<u64> {
        dirs.iter().filter_map(|d| read(d)).min()
    }

    fn cpu_quota_millicores(&self) -> Option<u64> {
        Self::tightest(&self.v2, |d| parse_cpu_max(&read_optional(d, "cpu.max")?)).or_else(|| {
            Self::tightest(&self.v1_cpu, |d| {
                parse_cfs_quota(
                    &read_optional(d, "cpu.cfs_quota_us")?,
                    &read_optional(d, "cpu.cfs_period_us")?,
                )
            })
        })
    }

    fn memory_limit_bytes(&self) -> Option<u64> {
        Self::tightest(&self.v2, |d| {
            parse_memory_max(&read_optional(d, "memory.max")?)
        })
        .or_else(|| {
            Self::tightest(&self.v1_memory, |d| {
                parse_memory_limit_v1(&read_optional(d, "memory.limit_in_bytes")?)
            })
        })
    }
}

/// `root/<path>` and each of its ancestors up to `root`, innermost first,
/// keeping only those that exist. Limits are hierarchical: the effective one
/// is the tightest along the chain. When the process sits in a cgroup
/// namespace, `path` may not exist under `root`; the root still counts.
fn ancestors(root: &Path, path: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let mut current = root.to_path_buf();
    let mut chain = vec![current.clone()];
    for component in path
        .split('/')
        .filter(|c| !c.is_empty() && *c != "." && *c != "..")
    {
        current.push(component);
        chain.push(current.clone());
    }
    for dir in chain.into_iter().rev() {
        if dir.is_dir() {
            dirs.push(dir);
        }
    }
    dirs
}

fn read_cpu(paths: &HostPaths, cgroup: &CgroupDirs) -> Cpu {
    let info = read_trimmed(&paths.proc_root.join("cpuinfo"))
        .map(|s| parse_cpuinfo(&s))
        .unwrap_or_default();
    let online = read_trimmed(&paths.sys_root.join("devices/system/cpu/online"))
        .map_or(0, |s| parse_cpu_list(&s));
    // Neither count can be "unknown" in the schema: fall back on each other.
    let logical_cores = if info.logical_cores == 0 {
        online
    } else {
        info.logical_cores
    };
    let online_cores = if online == 0 { logical_cores } else { online };
    Cpu {
        arch: std::env::consts::ARCH.to_owned(),
        model: info.model,
        logical_cores,
        online_cores,
        cgroup_quota_millicores: cgroup.cpu_quota_millicores(),
    }
}

fn read_memory(paths: &HostPaths, cgroup: &CgroupDirs) -> Memory {
    let info = read_trimmed(&paths.proc_root.join("meminfo"))
        .map(|s| parse_meminfo(&s))
        .unwrap_or_default();
    Memory {
        total_bytes: info.total_bytes.unwrap_or(0),
        available_bytes: info.available_bytes.unwrap_or(0),
        cgroup_limit_bytes: cgroup.memory_limit_bytes(),
    }
}

fn read_disk(data_dir: &Path) -> Disk {
    let path = fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let (total_bytes, available_bytes) = match nix::sys::statvfs::statvfs(&path) {
        Ok(st) => {
            let unit = widen(st.fragment_size());
            (
                widen(st.blocks()).saturating_mul(unit),
                widen(st.blocks_available()).saturating_mul(unit),
            )
        }
        Err(error) => {
            tracing::debug!(path = %path.display(), %error, "inventory: statvfs failed");
            (0, 0)
        }
    };
    Disk {
        path: path.display().to_string(),
        total_bytes,
        available_bytes,
    }
}

/// Widens a `statvfs` field: `c_ulong` and `fsblkcnt_t` are 32 bits on some
/// targets (32-bit ARM boards) and 64 on others.
fn widen<T: Into<u64>>(value: T) -> u64 {
    value.into()
}

/// IPv4 and IPv6 addresses per interface name, from `getifaddrs`.
fn interface_addresses() -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let addrs = match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs,
        Err(error) => {
            tracing::debug!(%error, "inventory: getifaddrs failed");
            return map;
        }
    };
    for ifaddr in addrs {
        let Some(addr) = ifaddr.address else { continue };
        let text = if let Some(v4) = addr.as_sockaddr_in() {
            v4.ip().to_string()
        } else if let Some(v6) = addr.as_sockaddr_in6() {
            v6.ip().to_string()
        } else {
            continue;
        };
        let list = map.entry(ifaddr.interface_name).or_default();
        if !list.contains(&text) {
            list.push(text);
        }
    }
    map
}

/// `IFF_LOOPBACK` in an interface's sysfs `flags`.
const IFF_LOOPBACK: u32 = 0x8;
/// `ARPHRD_LOOPBACK` in an interface's sysfs `type`.
const ARPHRD_LOOPBACK: &str = "772";

fn read_interfaces(sys: &Path, addresses: &BTreeMap<String, Vec<String>>) -> Vec<NetInterface> {
    list_dir(&sys.join("class/net"))
        .into_iter()
        .filter(|(_, dir)| dir.is_dir())
        .map(|(name, dir)| {
            let flags = read_optional(&dir, "flags")
                .and_then(|f| u32::from_str_radix(f.trim_start_matches("0x"), 16).ok());
            let loopback = match flags {
                Some(flags) => flags & IFF_LOOPBACK != 0,
                None => read_optional(&dir, "type").as_deref() == Some(ARPHRD_LOOPBACK),
            };
            let mac = read_optional(&dir, "address")
                .map(|m| m.to_ascii_lowercase())
                .filter(|m| m.chars().any(|c| c != '0' && c != ':'));
            NetInterface {
                mac,
                mtu: read_optional(&dir, "mtu").and_then(|m| m.parse().ok()),
                oper_state: read_optional(&dir, "operstate"),
                // Reading `speed` fails with EINVAL on virtual and down links.
                speed_mbps: read_optional(&dir, "speed").and_then(|s| parse_link_speed(&s)),
                addresses: addresses.get(&name).cloned().unwrap_or_default(),
                loopback,
                name,
            }
        })
        .collect()
}

fn read_usb(sys: &Path) -> Vec<UsbDevice> {
    list_dir(&sys.join("bus/usb/devices"))
        .into_iter()
        // `1-1.2:1.0` and the like are interfaces of a device, not devices.
        .filter(|(name, _)| !name.contains(':'))
        .filter_map(|(name, dir)| {
            let number = |file: &str| read_trimmed(&dir.join(file))?.parse::<u32>().ok();
            let (Some(bus), Some(device), Some(vendor_id), Some(product_id)) = (
                number("busnum"),
                number("devnum"),
                read_trimmed(&dir.join("idVendor")).and_then(|v| parse_hex_id(&v, 4)),
                read_trimmed(&dir.join("idProduct")).and_then(|v| parse_hex_id(&v, 4)),
            ) else {
                tracing::debug!(device = %name, "inventory: skipping incomplete USB device");
                return None;
            };
            Some(UsbDevice {
                id: format!("usb:{name}"),
                bus,
                device,
                vendor_id,
                product_id,
                manufacturer: read_optional(&dir, "manufacturer"),
                product: read_optional(&dir, "product"),
                serial: read_optional(&dir, "serial"),
                class: read_optional(&dir, "bDeviceClass").map(|c| c.to_ascii_lowercase()),
                speed_mbps: read_optional(&dir, "speed"),
            })
        })
        .collect()
}

fn read_pci(sys: &Path) -> Vec<PciDevice> {
    list_dir(&sys.join("bus/pci/devices"))
        .into_iter()
        .filter_map(|(address, dir)| {
            let class = read_trimmed(&dir.join("class")).and_then(|c| parse_hex_id(&c, 6))?;
            let kind = PciKind::from_class_code(u32::from_str_radix(&class, 16).ok()?)?;
            let (Some(vendor_id), Some(device_id)) = (
                read_trimmed(&dir.join("vendor")).and_then(|v| parse_hex_id(&v, 4)),
                read_trimmed(&dir.join("device")).and_then(|v| parse_hex_id(&v, 4)),
            ) else {
                tracing::debug!(%address, "inventory: skipping PCI device without IDs");
                return None;
            };
            let driver = fs::read_link(dir.join("driver"))
                .ok()
                .and_then(|target| Some(target.file_name()?.to_str()?.to_owned()));
            Some(PciDevice {
                id: format!("pci:{address}"),
                address,
                class,
                kind,
                vendor_id,
                device_id,
                driver,
            })
        })
        .collect()
}

fn read_power(sys: &Path) -> Vec<PowerSupply> {
    list_dir(&sys.join("class/power_supply"))
        .into_iter()
        .filter_map(|(name, dir)| {
            let Some(kind) = read_trimmed(&dir.join("type")) else {
                tracing::debug!(supply = %name, "inventory: skipping power supply without type");
                return None;
            };
            let micro = |file: &str| read_optional(&dir, file).and_then(|v| parse_micro(&v));
            let voltage_now_v = micro("voltage_now");
            // Gauges that only count charge (Ah) or current (A): × voltage (V) → Wh or W.
            let times_voltage = |file: &str| Some(micro(file)? * voltage_now_v?);
            let energy_now_wh = micro("energy_now").or_else(|| times_voltage("charge_now"));
            let energy_full_wh = micro("energy_full").or_else(|| times_voltage("charge_full"));
            let power_now_w = micro("power_now").or_else(|| times_voltage("current_now"));
            Some(PowerSupply {
                online: read_optional(&dir, "online").and_then(|v| match v.as_str() {
                    "0" => Some(false),
                    "1" | "2" => Some(true),
                    _ => None,
                }),
                status: read_optional(&dir, "status"),
                capacity_percent: read_optional(&dir, "capacity").and_then(|c| c.parse().ok()),
                energy_now_wh,
                energy_full_wh,
                power_now_w,
                voltage_now_v,
                kind,
                name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cpuinfo_x86() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel\t\t: 1\n\
                    model name\t: AMD EPYC 7B13\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 7B13\n";
        assert_eq!(
            parse_cpuinfo(text),
            CpuInfo {
                model: Some("AMD EPYC 7B13".into()),
                logical_cores: 2
            }
        );
    }

    #[test]
    fn cpuinfo_raspberry_pi_prefers_board_model() {
        let mut text = String::new();
        for i in 0..4 {
            text.push_str(&format!(
                "processor\t: {i}\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\n\n"
            ));
        }
        text.push_str(
            "Hardware\t: BCM2835\nRevision\t: c03114\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n",
        );
        assert_eq!(
            parse_cpuinfo(&text),
            CpuInfo {
                model: Some("Raspberry Pi 4 Model B Rev 1.4".into()),
                logical_cores: 4
            }
        );
        let text = text.replace("Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n", "");
        assert_eq!(parse_cpuinfo(&text).model.as_deref(), Some("BCM2835"));
        let text = text.replace("Hardware\t: BCM2835\n", "");
        assert_eq!(parse_cpuinfo(&text).model.as_deref(), Some("Cortex-A72"));
    }

    #[test]
    fn cpuinfo_unknown_arm_part_is_reported_raw() {
        let text = "processor : 0\nCPU implementer : 0x61\nCPU part : 0x022\n";
        assert_eq!(
            parse_cpuinfo(text).model.as_deref(),
            Some("CPU implementer 0x61 part 0x022")
        );
        assert_eq!(
            parse_cpuinfo("processor : 0\nCPU part : 0x999\n")
                .model
                .as_deref(),
            Some("CPU part 0x999")
        );
    }

    #[test]
    fn cpuinfo_armv7_processor_line_is_not_a_core() {
        let text = "Processor\t: ARMv7 Processor rev 4 (v7l)\nprocessor\t: 0\nprocessor\t: 1\n";
        assert_eq!(parse_cpuinfo(text).logical_cores, 2);
    }

    #[test]
    fn cpuinfo_empty() {
        assert_eq!(parse_cpuinfo(""), CpuInfo::default());
    }

    #[test]
    fn cpu_list() {
        assert_eq!(parse_cpu_list("0-3,6"), 5);
        assert_eq!(parse_cpu_list("0\n"), 1);
        assert_eq!(parse_cpu_list("0-1"), 2);
        assert_eq!(parse_cpu_list("0,2,4-7"), 6);
        assert_eq!(parse_cpu_list(""), 0);
        assert_eq!(parse_cpu_list("3-1,x,5"), 1);
        assert_eq!(parse_cpu_list("0-18446744073709551615"), u32::MAX);
    }

    #[test]
    fn meminfo() {
        let text = "MemTotal:       24682416 kB\nMemFree:        22776036 kB\n\
                    MemAvailable:   24177276 kB\nBuffers:           12 kB\n";
        assert_eq!(
            parse_meminfo(text),
            MemInfo {
                total_bytes: Some(24682416 * 1024),
                available_bytes: Some(24177276 * 1024)
            }
        );
    }

    #[test]
    fn meminfo_without_memavailable_estimates_it() {
        let text = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 10 kB\nCached: 1 kB\n";
        assert_eq!(parse_meminfo(text).available_bytes, Some(111 * 1024));
    }

    #[test]
    fn meminfo_overflow_and_garbage() {
        let text = "MemTotal: 18446744073709551615 kB\nMemAvailable: lots\n";
        assert_eq!(parse_meminfo(text), MemInfo::default());
    }

    #[test]
    fn cpu_max() {
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("200000 100000\n"), Some(2000));
        assert_eq!(parse_cpu_max("50000 100000"), Some(500));
        assert_eq!(parse_cpu_max("150000"), Some(1500));
        assert_eq!(parse_cpu_max("1000 0"), None);
        assert_eq!(parse_cpu_max(""), None);
        assert_eq!(parse_cpu_max("18446744073709551615 1"), Some(u64::MAX));
    }

    #[test]
    fn cfs_quota() {
        assert_eq!(parse_cfs_quota("-1", "100000"), None);
        assert_eq!(parse_cfs_quota("250000\n", "100000\n"), Some(2500));
    }

    #[test]
    fn memory_limits() {
        assert_eq!(parse_memory_max("max\n"), None);
        assert_eq!(parse_memory_max("536870912\n"), Some(536870912));
        assert_eq!(parse_memory_limit_v1("9223372036854771712\n"), None);
        assert_eq!(parse_memory_limit_v1("1073741824"), Some(1 << 30));
    }

    #[test]
    fn uptime() {
        assert_eq!(parse_uptime("1730.20 3270.78\n"), Some(1730));
        assert_eq!(parse_uptime("12 0"), Some(12));
        assert_eq!(parse_uptime(""), None);
    }

    #[test]
    fn hex_ids() {
        assert_eq!(parse_hex_id("0x10DE\n", 4).as_deref(), Some("10de"));
        assert_eq!(parse_hex_id("1d6b", 4).as_deref(), Some("1d6b"));
        assert_eq!(parse_hex_id("0x030000", 6).as_deref(), Some("030000"));
        assert_eq!(parse_hex_id("0x12", 4).as_deref(), Some("0012"));
        assert_eq!(parse_hex_id("zz", 4), None);
    }

    #[test]
    fn link_speed() {
        assert_eq!(parse_link_speed("1000\n"), Some(1000));
        assert_eq!(parse_link_speed("-1"), None);
        assert_eq!(parse_link_speed(""), None);
    }

    proptest! {
        #[test]
        fn cpu_list_never_panics(s in any::<String>()) {
            let _ = parse_cpu_list(&s);
        }

        #[test]
        fn cpu_list_never_panics_on_list_like_input(s in "[0-9, \\-]{0,40}") {
            let _ = parse_cpu_list(&s);
        }

        #[test]
        fn meminfo_never_panics(s in any::<String>()) {
            let _ = parse_meminfo(&s);
        }

        #[test]
        fn meminfo_never_panics_on_meminfo_like_input(
            s in "((MemTotal|MemAvailable|MemFree|Buffers|Cached): *[0-9]{0,25}( kB| MB)?\n){0,6}"
        ) {
            let _ = parse_meminfo(&s);
        }

        #[test]
        fn other_parsers_never_panic(s in any::<String>()) {
            let _ = parse_cpuinfo(&s);
            let _ = parse_cpu_max(&s);
            let _ = parse_cfs_quota(&s, &s);
            let _ = parse_memory_max(&s);
            let _ = parse_uptime(&s);
            let _ = parse_hex_id(&s, 4);
        }
    }

    // --- fixture tree -------------------------------------------------------

    fn write(root: &Path, rel: &str, content: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn write_all(root: &Path, dir: &str, files: &[(&str, &str)]) {
        for (name, content) in files {
            write(root, &format!("{dir}/{name}"), &format!("{content}\n"));
        }
    }

    #[test]
    fn collect_reads_a_fixture_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let proc_root = tmp.path().join("proc");
        let sys = tmp.path().join("sys");

        write(
            &proc_root,
            "cpuinfo",
            "processor\t: 0\nCPU part\t: 0xd08\n\nprocessor\t: 1\nCPU part\t: 0xd08\n\n\
             Model\t\t: Raspberry Pi 4 Model B Rev 1.4\n",
        );
        write(
            &proc_root,
            "meminfo",
            "MemTotal: 4000 kB\nMemFree: 1000 kB\nMemAvailable: 3000 kB\n",
        );
        write(&proc_root, "uptime", "1234.56 789.00\n");
        write(&sys, "devices/system/cpu/online", "0-3\n");
        write(&sys, "fs/cgroup/cgroup.controllers", "cpu memory\n");
        write(&sys, "fs/cgroup/cpu.max", "200000 100000\n");
        write(&sys, "fs/cgroup/memory.max", "max\n");

        // One USB device and one of its interfaces.
        write_all(
            &sys,
            "bus/usb/devices/1-1.2",
            &[
                ("busnum", "1"),
                ("devnum", "3"),
                ("idVendor", "18d1"),
                ("idProduct", "9302"),
                ("manufacturer", "Google Inc."),
                ("product", "Coral USB Accelerator"),
                ("bDeviceClass", "00"),
                ("speed", "5000"),
            ],
        );
        write_all(
            &sys,
            "bus/usb/devices/1-1.2:1.0",
            &[("bInterfaceClass", "ff")],
        );

        // A GPU and a network card, which must be left out.
        write_all(
            &sys,
            "bus/pci/devices/0000:01:00.0",
            &[
                ("class", "0x030000"),
                ("vendor", "0x1002"),
                ("device", "0x73BF"),
            ],
        );
        fs::create_dir_all(sys.join("bus/pci/drivers/amdgpu")).unwrap();
        std::os::unix::fs::symlink(
            "../../../bus/pci/drivers/amdgpu",
            sys.join("bus/pci/devices/0000:01:00.0/driver"),
        )
        .unwrap();
        write_all(
            &sys,
            "bus/pci/devices/0000:02:00.0",
            &[
                ("class", "0x020000"),
                ("vendor", "0x8086"),
                ("device", "0x1533"),
            ],
        );

        // A battery whose gauge only counts charge.
        write_all(
            &sys,
            "class/power_supply/BAT0",
            &[
                ("type", "Battery"),
                ("status", "Discharging"),
                ("capacity", "80"),
                ("charge_now", "2000000"),
                ("charge_full", "2500000"),
                ("current_now", "500000"),
                ("voltage_now", "12000000"),
            ],
        );

        // A loopback and an Ethernet interface whose speed is unknown.
        write_all(
            &sys,
            "class/net/lo",
            &[
                ("address", "00:00:00:00:00:00"),
                ("mtu", "65536"),
                ("operstate", "unknown"),
                ("flags", "0x9"),
            ],
        );
        write_all(
            &sys,
            "class/net/locus-test0",
            &[
                ("address", "DC:A6:32:01:02:03"),
                ("mtu", "1500"),
                ("operstate", "up"),
                ("speed", "-1"),
                ("flags", "0x1003"),
            ],
        );

        let data_dir = tmp.path().join("data");
        fs::create_dir_all(&data_dir).unwrap();
        let inv = collect(
            &HostPaths {
                proc_root,
                sys_root: sys,
            },
            &data_dir,
        );

        assert_eq!(
            inv.cpu,
            Cpu {
                arch: std::env::consts::ARCH.to_owned(),
                model: Some("Raspberry Pi 4 Model B Rev 1.4".into()),
                logical_cores: 2,
                online_cores: 4,
                cgroup_quota_millicores: Some(2000),
            }
        );
        assert_eq!(
            inv.memory,
            Memory {
                total_bytes: 4000 * 1024,
                available_bytes: 3000 * 1024,
                cgroup_limit_bytes: None
            }
        );
        assert_eq!(inv.host_uptime_secs, 1234);
        assert!(inv.collected_at_unix_ms > 1_600_000_000_000);
        assert!(inv.disk.total_bytes > 0);
        assert!(inv.disk.path.ends_with("data"));

        assert_eq!(
            inv.usb,
            vec![UsbDevice {
                id: "usb:1-1.2".into(),
                bus: 1,
                device: 3,
                vendor_id: "18d1".into(),
                product_id: "9302".into(),
                manufacturer: Some("Google Inc.".into()),
                product: Some("Coral USB Accelerator".into()),
                serial: None,
                class: Some("00".into()),
                speed_mbps: Some("5000".into()),
            }]
        );
        assert_eq!(
            inv.pci,
            vec![PciDevice {
                id: "pci:0000:01:00.0".into(),
                address: "0000:01:00.0".into(),
                class: "030000".into(),
                kind: PciKind::Display,
                vendor_id: "1002".into(),
                device_id: "73bf".into(),
                driver: Some("amdgpu".into()),
            }]
        );

        assert_eq!(inv.power.len(), 1);
        let bat = &inv.power[0];
        assert_eq!(bat.name, "BAT0");
        assert_eq!(bat.kind, "Battery");
        assert_eq!(bat.online, None);
        assert_eq!(bat.status.as_deref(), Some("Discharging"));
        assert_eq!(bat.capacity_percent, Some(80));
        let close = |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() < 1e-9);
        assert!(close(bat.voltage_now_v, 12.0), "{bat:?}");
        assert!(close(bat.energy_now_wh, 24.0), "{bat:?}");
        assert!(close(bat.energy_full_wh, 30.0), "{bat:?}");
        assert!(close(bat.power_now_w, 6.0), "{bat:?}");

        let names: Vec<_> = inv.interfaces.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["lo", "locus-test0"]);
        let (lo, eth) = (&inv.interfaces[0], &inv.interfaces[1]);
        assert!(lo.loopback);
        assert_eq!(lo.mac, None);
        assert_eq!(lo.mtu, Some(65536));
        assert!(!eth.loopback);
        assert_eq!(eth.mac.as_deref(), Some("dc:a6:32:01:02:03"));
        assert_eq!(eth.oper_state.as_deref(), Some("up"));
        assert_eq!(eth.speed_mbps, None);

        let devices = inv.devices();
        assert_eq!(devices.len(), 2);
        assert_eq!(
            devices[0].name.as_deref(),
            Some("Google Inc. Coral USB Accelerator")
        );
        assert_eq!(devices[1].detail, "display controller, driver amdgpu");
    }

    #[test]
    fn collect_on_an_empty_tree_degrades_gracefully() {
        let tmp = tempfile::tempdir().unwrap();
        let paths = HostPaths {
            proc_root: tmp.path().join("proc"),
            sys_root: tmp.path().join("sys"),
        };
        let inv = collect(&paths, &tmp.path().join("does-not-exist"));
        assert_eq!(inv.cpu.logical_cores, 0);
        assert_eq!(inv.cpu.model, None);
        assert_eq!(inv.cpu.cgroup_quota_millicores, None);
        assert_eq!(inv.memory.total_bytes, 0);
        assert_eq!(inv.memory.cgroup_limit_bytes, None);
        assert_eq!(inv.disk.total_bytes, 0);
        assert!(inv.interfaces.is_empty() && inv.usb.is_empty() && inv.pci.is_empty());
        assert!(inv.power.is_empty());
        assert_eq!(inv.host_uptime_secs, 0);
    }

    #[test]
    fn cgroup_limits_follow_membership_and_take_the_tightest() {
        let tmp = tempfile::tempdir().unwrap();
        let proc_root = tmp.path().join("proc");
        let sys = tmp.path().join("sys");
        write(
            &proc_root,
            "self/cgroup",
            "0::/system.slice/locus.service\n",
        );
        write(&sys, "fs/cgroup/cgroup.controllers", "cpu memory\n");
        write(&sys, "fs/cgroup/system.slice/cpu.max", "100000 100000\n");
        write(&sys, "fs/cgroup/system.slice/memory.max", "max\n");
        write(
            &sys,
            "fs/cgroup/system.slice/locus.service/cpu.max",
            "max 100000\n",
        );
        write(
            &sys,
            "fs/cgroup/system.slice/locus.service/memory.max",
            "268435456\n",
        );
        let dirs = CgroupDirs::discover(&HostPaths {
            proc_root,
            sys_root: sys,
        });
        assert_eq!(dirs.cpu_quota_millicores(), Some(1000));
        assert_eq!(dirs.memory_limit_bytes(), Some(268435456));
    }

    #[test]
    fn cgroup_v1_limits() {
        let tmp = tempfile::tempdir().unwrap();
        let proc_root = tmp.path().join("proc");
        let sys = tmp.path().join("sys");
        write(
            &proc_root,
            "self/cgroup",
            "4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n0::/\n",
        );
        write(&sys, "fs/cgroup/unified/cgroup.controllers", "\n");
        write(
            &sys,
            "fs/cgroup/memory/memory.limit_in_bytes",
            "9223372036854771712\n",
        );
        write(
            &sys,
            "fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
            "1073741824\n",
        );
        write(&sys, "fs/cgroup/cpu/cpu.cfs_quota_us", "-1\n");
        write(&sys, "fs/cgroup/cpu/cpu.cfs_period_us", "100000\n");
        write(&sys, "fs/cgroup/cpu/docker/abc/cpu.cfs_quota_us", "50000\n");
        write(
            &sys,
            "fs/cgroup/cpu/docker/abc/cpu.cfs_period_us",
            "100000\n",
        );
        let dirs = CgroupDirs::discover(&HostPaths {
            proc_root,
            sys_root: sys,
        });
        assert_eq!(dirs.cpu_quota_millicores(), Some(500));
        assert_eq!(dirs.memory_limit_bytes(), Some(1 << 30));
    }

    // --- the real machine ---------------------------------------------------

    #[test]
    fn collect_reads_the_real_machine() {
        let inv = collect(&HostPaths::default(), Path::new("."));

        let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
        let mem_total_kb: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .unwrap()
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .unwrap();
        assert_eq!(inv.memory.total_bytes, mem_total_kb * 1024);
        assert!(inv.memory.available_bytes <= inv.memory.total_bytes);

        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap();
        let processors = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        assert_eq!(inv.cpu.logical_cores as usize, processors);
        assert!(inv.cpu.online_cores >= 1);
        assert_eq!(inv.cpu.arch, std::env::consts::ARCH);

        assert!(
            inv.interfaces.iter().any(|i| i.name == "lo" && i.loopback),
            "{:?}",
            inv.interfaces
        );
        assert!(inv.disk.total_bytes > 0);
        assert!(inv.host_uptime_secs > 0);
    }
}
