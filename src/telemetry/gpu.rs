//! GPU utilisation and memory through NVML (feature `nvml`, part of `cuda`): libnvidia-ml is loaded at
//! run time when the engine has a GPU provider configured; without the feature, the library, or a
//! device, there are no GPU readings (and no GPU metrics) at all.

/// One GPU's reading.
#[derive(Debug, Clone, PartialEq)]
pub struct GpuReading {
    /// `index:name`, e.g. `0:NVIDIA H200`.
    pub device: String,
    /// Share of the last sample period a kernel ran (0–1).
    pub utilization: f64,
    /// Device memory in use, in bytes.
    pub memory_used_bytes: u64,
    /// Device memory in all, in bytes.
    pub memory_total_bytes: u64,
}

/// The machine's GPUs, as NVML reports them.
#[derive(Debug)]
pub struct Gpus {
    #[cfg(feature = "nvml")]
    nvml: nvml_wrapper::Nvml,
}

impl Gpus {
    /// NVML when the feature is on and libnvidia-ml loads; `None` otherwise.
    pub fn open() -> Option<Gpus> {
        #[cfg(feature = "nvml")]
        {
            nvml_wrapper::Nvml::init().ok().map(|nvml| Gpus { nvml })
        }
        #[cfg(not(feature = "nvml"))]
        {
            None
        }
    }

    /// Every device that answers (a device that errors is left out).
    pub fn read(&self) -> Vec<GpuReading> {
        #[cfg(feature = "nvml")]
        {
            let count = self.nvml.device_count().unwrap_or(0);
            (0..count)
                .filter_map(|i| {
                    let device = self.nvml.device_by_index(i).ok()?;
                    let utilization = device.utilization_rates().ok()?;
                    let memory = device.memory_info().ok()?;
                    let name = device.name().unwrap_or_default();
                    Some(GpuReading {
                        device: format!("{i}:{name}"),
                        utilization: f64::from(utilization.gpu) / 100.0,
                        memory_used_bytes: memory.used,
                        memory_total_bytes: memory.total,
                    })
                })
                .collect()
        }
        #[cfg(not(feature = "nvml"))]
        {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_when_there_are_any_are_shares_and_bytes() {
        // Without the feature or libnvidia-ml (this repository's CI) there is nothing to read.
        let Some(gpus) = Gpus::open() else { return };
        for r in gpus.read() {
            assert!((0.0..=1.0).contains(&r.utilization), "{r:?}");
            assert!(r.memory_used_bytes <= r.memory_total_bytes, "{r:?}");
        }
    }
}
