//! Host inventory: what a node is made of, as plain data.
//!
//! The agent fills these types from `/proc` and `/sys` (see
//! `locus_agent::inventory`); this module only describes them. Anything a
//! machine may legitimately not expose (a CPU model string, a cgroup limit, a
//! battery's energy counters, …) is an `Option`, so a reader can always
//! produce an [`Inventory`], however bare the host. Byte counts are `u64`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Everything the agent knows about the host it runs on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Inventory {
    /// Processor architecture, model and core counts.
    pub cpu: Cpu,
    /// Physical memory and the memory limit of the agent's cgroup.
    pub memory: Memory,
    /// Capacity of the file system that holds the agent's data directory.
    pub disk: Disk,
    /// Network interfaces, sorted by name.
    pub interfaces: Vec<NetInterface>,
    /// USB devices (not interfaces), sorted by sysfs name.
    pub usb: Vec<UsbDevice>,
    /// PCI display controllers, processing accelerators and co-processors, sorted by address.
    pub pci: Vec<PciDevice>,
    /// Power supplies: mains adapters, batteries, UPSes, USB power, sorted by name.
    pub power: Vec<PowerSupply>,
    /// Seconds since the host booted (0 if unknown).
    pub host_uptime_secs: u64,
    /// When this inventory was collected, in milliseconds since the Unix epoch.
    pub collected_at_unix_ms: u64,
}

/// Processor information.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cpu {
    /// Architecture the agent was built for, e.g. `x86_64` or `aarch64`.
    pub arch: String,
    /// Human-readable CPU model, e.g. `AMD EPYC 7B13` or `Raspberry Pi 4 Model B Rev 1.4`.
    pub model: Option<String>,
    /// Number of logical processors the kernel lists in `/proc/cpuinfo`.
    pub logical_cores: u32,
    /// Number of processors currently online (`/sys/devices/system/cpu/online`).
    pub online_cores: u32,
    /// CPU quota of the agent's cgroup in millicores (1000 = one full core); absent when unlimited.
    pub cgroup_quota_millicores: Option<u64>,
}

/// Memory information.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Memory {
    /// Total usable physical memory in bytes (`MemTotal`).
    pub total_bytes: u64,
    /// Memory available for new workloads without swapping, in bytes (`MemAvailable`).
    pub available_bytes: u64,
    /// Memory limit of the agent's cgroup in bytes; absent when unlimited.
    pub cgroup_limit_bytes: Option<u64>,
}

/// Capacity of one file system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Disk {
    /// Path that was measured (the agent's data directory).
    pub path: String,
    /// Size of the file system in bytes.
    pub total_bytes: u64,
    /// Bytes available to unprivileged users.
    pub available_bytes: u64,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct NetInterface {
    /// Kernel name of the interface, e.g. `eth0` or `wlan0`.
    pub name: String,
    /// Hardware (MAC) address, lowercase and colon-separated; absent when the interface has none.
    pub mac: Option<String>,
    /// Maximum transmission unit in bytes.
    pub mtu: Option<u32>,
    /// Operational state as the kernel reports it: `up`, `down`, `unknown`, `dormant`, …
    pub oper_state: Option<String>,
    /// Negotiated link speed in Mbit/s; absent when unknown or not applicable.
    pub speed_mbps: Option<u32>,
    /// IPv4 and IPv6 addresses assigned to the interface, as text.
    pub addresses: Vec<String>,
    /// Whether this is a loopback interface.
    pub loopback: bool,
}

/// One USB device.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsbDevice {
    /// Stable identifier: `usb:` followed by the sysfs name, e.g. `usb:1-1.2`.
    pub id: String,
    /// USB bus number.
    pub bus: u32,
    /// Device number on the bus (changes when the device is re-plugged).
    pub device: u32,
    /// Vendor ID, 4 lowercase hex digits.
    pub vendor_id: String,
    /// Product ID, 4 lowercase hex digits.
    pub product_id: String,
    /// Manufacturer string reported by the device.
    pub manufacturer: Option<String>,
    /// Product string reported by the device.
    pub product: Option<String>,
    /// Serial number string reported by the device.
    pub serial: Option<String>,
    /// Device class, 2 hex digits (`09` hub, `ff` vendor-specific, `00` defined per interface).
    pub class: Option<String>,
    /// Link speed in Mbit/s as sysfs reports it, e.g. `1.5`, `12`, `480`, `5000`.
    pub speed_mbps: Option<String>,
}

/// Kind of an inventoried PCI device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PciKind {
    /// Display controller (class `03xxxx`): GPUs.
    Display,
    /// Processing accelerator (class `12xxxx`): NPUs, TPUs, AI accelerators.
    Accelerator,
    /// Co-processor (class `0b40xx`).
    Coprocessor,
}

impl PciKind {
    /// The kind a PCI class code (24 bits: class, subclass, programming interface)
    /// belongs to, or `None` if such devices are not inventoried.
    pub fn from_class_code(class: u32) -> Option<Self> {
        match class >> 16 {
            0x03 => Some(Self::Display),
            0x12 => Some(Self::Accelerator),
            0x0b if (class >> 8) & 0xff == 0x40 => Some(Self::Coprocessor),
            _ => None,
        }
    }

    /// Human-readable name of the kind, e.g. `display controller`.
    pub fn describe(self) -> &'static str {
        match self {
            Self::Display => "display controller",
            Self::Accelerator => "processing accelerator",
            Self::Coprocessor => "co-processor",
        }
    }
}

/// One PCI device of interest to workloads (GPU, accelerator, co-processor).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PciDevice {
    /// Stable identifier: `pci:` followed by the address, e.g. `pci:0000:01:00.0`.
    pub id: String,
    /// PCI address (domain:bus:device.function), e.g. `0000:01:00.0`.
    pub address: String,
    /// Class code, 6 lowercase hex digits, e.g. `030000`.
    pub class: String,
    /// What kind of device the class code denotes.
    pub kind: PciKind,
    /// Vendor ID, 4 lowercase hex digits.
    pub vendor_id: String,
    /// Device ID, 4 lowercase hex digits.
    pub device_id: String,
    /// Kernel driver bound to the device, e.g. `amdgpu`; absent when none is bound.
    pub driver: Option<String>,
}

/// One power supply: mains adapter, battery, UPS, USB power, …
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PowerSupply {
    /// Kernel name of the supply, e.g. `BAT0` or `AC`.
    pub name: String,
    /// Type as the kernel reports it: `Mains`, `Battery`, `USB`, `UPS`, …
    pub kind: String,
    /// Whether the supply is connected and delivering power (mains, USB).
    pub online: Option<bool>,
    /// Charging status (batteries): `Charging`, `Discharging`, `Full`, `Not charging`, …
    pub status: Option<String>,
    /// State of charge in percent (batteries).
    pub capacity_percent: Option<u8>,
    /// Energy currently stored, in watt-hours.
    pub energy_now_wh: Option<f64>,
    /// Energy stored when full, in watt-hours.
    pub energy_full_wh: Option<f64>,
    /// Power currently drawn or delivered, in watts.
    pub power_now_w: Option<f64>,
    /// Present voltage, in volts.
    pub voltage_now_v: Option<f64>,
}

/// Bus a host device is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceBus {
    /// Universal Serial Bus.
    Usb,
    /// PCI / PCI Express.
    Pci,
}

/// A host device that could be attached to a workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Device {
    /// Stable identifier, e.g. `usb:1-1.2` or `pci:0000:01:00.0`.
    pub id: String,
    /// Bus the device is attached to.
    pub bus: DeviceBus,
    /// Vendor ID, 4 lowercase hex digits.
    pub vendor_id: String,
    /// Product ID (the device ID for PCI), 4 lowercase hex digits.
    pub product_id: String,
    /// Human-readable name (`manufacturer product` for USB), when known.
    pub name: Option<String>,
    /// Where and what the device is, e.g. `bus 1 device 3` or `display controller, driver amdgpu`.
    pub detail: String,
}

/// USB class code of hubs.
const USB_CLASS_HUB: &str = "09";

impl Inventory {
    /// Host devices that a workload could be given: USB devices first, then
    /// PCI devices, each in inventory order.
    ///
    /// USB hubs (class `09`, including the root hubs of each controller) are
    /// plumbing rather than devices and are left out.
    pub fn devices(&self) -> Vec<Device> {
        let usb = self
            .usb
            .iter()
            .filter(|d| d.class.as_deref() != Some(USB_CLASS_HUB))
            .map(|d| {
                let name = [d.manufacturer.as_deref(), d.product.as_deref()]
                    .into_iter()
                    .flatten()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                Device {
                    id: d.id.clone(),
                    bus: DeviceBus::Usb,
                    vendor_id: d.vendor_id.clone(),
                    product_id: d.product_id.clone(),
                    name: (!name.is_empty()).then_some(name),
                    detail: format!("bus {} device {}", d.bus, d.device),
                }
            });
        let pci = self.pci.iter().map(|d| Device {
            id: d.id.clone(),
            bus: DeviceBus::Pci,
            vendor_id: d.vendor_id.clone(),
            product_id: d.device_id.clone(),
            name: None,
            detail: match &d.driver {
                Some(driver) => format!("{}, driver {driver}", d.kind.describe()),
                None => format!("{}, no driver", d.kind.describe()),
            },
        });
        usb.chain(pci).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usb(
        name: &str,
        class: &str,
        manufacturer: Option<&str>,
        product: Option<&str>,
    ) -> UsbDevice {
        UsbDevice {
            id: format!("usb:{name}"),
            bus: 1,
            device: 3,
            vendor_id: "0bda".into(),
            product_id: "8153".into(),
            manufacturer: manufacturer.map(Into::into),
            product: product.map(Into::into),
            serial: None,
            class: Some(class.into()),
            speed_mbps: Some("480".into()),
        }
    }

    fn pci(address: &str, kind: PciKind, driver: Option<&str>) -> PciDevice {
        PciDevice {
            id: format!("pci:{address}"),
            address: address.into(),
            class: "030000".into(),
            kind,
            vendor_id: "1002".into(),
            device_id: "73bf".into(),
            driver: driver.map(Into::into),
        }
    }

    fn inventory(usb: Vec<UsbDevice>, pci: Vec<PciDevice>) -> Inventory {
        Inventory {
            cpu: Cpu {
                arch: "aarch64".into(),
                model: None,
                logical_cores: 4,
                online_cores: 4,
                cgroup_quota_millicores: None,
            },
            memory: Memory {
                total_bytes: 1 << 30,
                available_bytes: 1 << 29,
                cgroup_limit_bytes: None,
            },
            disk: Disk {
                path: "/var/lib/locus".into(),
                total_bytes: 0,
                available_bytes: 0,
            },
            interfaces: vec![],
            usb,
            pci,
            power: vec![],
            host_uptime_secs: 1,
            collected_at_unix_ms: 2,
        }
    }

    #[test]
    fn devices_lists_usb_then_pci() {
        let inv = inventory(
            vec![usb(
                "1-1.2",
                "00",
                Some("Realtek"),
                Some("USB 10/100/1000 LAN"),
            )],
            vec![pci("0000:01:00.0", PciKind::Display, Some("amdgpu"))],
        );
        let devices = inv.devices();
        assert_eq!(
            devices,
            vec![
                Device {
                    id: "usb:1-1.2".into(),
                    bus: DeviceBus::Usb,
                    vendor_id: "0bda".into(),
                    product_id: "8153".into(),
                    name: Some("Realtek USB 10/100/1000 LAN".into()),
                    detail: "bus 1 device 3".into(),
                },
                Device {
                    id: "pci:0000:01:00.0".into(),
                    bus: DeviceBus::Pci,
                    vendor_id: "1002".into(),
                    product_id: "73bf".into(),
                    name: None,
                    detail: "display controller, driver amdgpu".into(),
                },
            ]
        );
    }

    #[test]
    fn devices_skips_usb_hubs() {
        let inv = inventory(
            vec![
                usb("usb1", "09", Some("Linux Foundation"), Some("2.0 root hub")),
                usb("1-1", "09", None, Some("USB2.0 Hub")),
                usb("1-1.4", "ff", None, None),
            ],
            vec![],
        );
        let ids: Vec<_> = inv.devices().into_iter().map(|d| d.id).collect();
        assert_eq!(ids, vec!["usb:1-1.4"]);
    }

    #[test]
    fn devices_name_uses_whatever_is_known() {
        let inv = inventory(
            vec![
                usb("1-1", "00", None, Some("Coral")),
                usb("1-2", "00", Some("Google"), None),
                usb("1-3", "00", None, None),
                usb("1-4", "00", Some("  "), Some("")),
            ],
            vec![],
        );
        let names: Vec<_> = inv.devices().into_iter().map(|d| d.name).collect();
        assert_eq!(
            names,
            vec![Some("Coral".into()), Some("Google".into()), None, None]
        );
    }

    #[test]
    fn devices_pci_detail_names_kind_and_driver() {
        let inv = inventory(
            vec![],
            vec![
                pci("0000:01:00.0", PciKind::Accelerator, None),
                pci("0000:02:00.0", PciKind::Coprocessor, Some("vfio-pci")),
            ],
        );
        let details: Vec<_> = inv.devices().into_iter().map(|d| d.detail).collect();
        assert_eq!(
            details,
            vec![
                "processing accelerator, no driver",
                "co-processor, driver vfio-pci"
            ]
        );
    }

    #[test]
    fn devices_of_an_empty_host_is_empty() {
        assert!(inventory(vec![], vec![]).devices().is_empty());
    }

    #[test]
    fn pci_kind_from_class_code() {
        assert_eq!(PciKind::from_class_code(0x030000), Some(PciKind::Display));
        assert_eq!(PciKind::from_class_code(0x030200), Some(PciKind::Display));
        assert_eq!(
            PciKind::from_class_code(0x120000),
            Some(PciKind::Accelerator)
        );
        assert_eq!(
            PciKind::from_class_code(0x0b4000),
            Some(PciKind::Coprocessor)
        );
        assert_eq!(PciKind::from_class_code(0x0b0000), None);
        assert_eq!(PciKind::from_class_code(0x020000), None);
        assert_eq!(PciKind::from_class_code(0x060400), None);
    }

    #[test]
    fn enums_serialize_snake_case() {
        assert_eq!(
            serde_json::to_string(&PciKind::Coprocessor).unwrap(),
            "\"coprocessor\""
        );
        assert_eq!(serde_json::to_string(&DeviceBus::Usb).unwrap(), "\"usb\"");
    }

    #[test]
    fn inventory_round_trips_through_json() {
        let inv = inventory(
            vec![usb("1-1", "00", None, Some("Coral"))],
            vec![pci("0000:01:00.0", PciKind::Display, None)],
        );
        let json = serde_json::to_string(&inv).unwrap();
        let back: Inventory = serde_json::from_str(&json).unwrap();
        assert_eq!(back, inv);
    }
}
