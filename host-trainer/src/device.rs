//! Explicit compute-device choice with a logged decision.

use tch::Device;

/// The `--device` argument.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when available, CPU otherwise (logged).
    Auto,
    /// CPU only.
    Cpu,
    /// CUDA; an error when no CUDA device is usable.
    Cuda,
}

/// Resolves the choice and logs it to stderr.
pub fn resolve(choice: DeviceChoice) -> anyhow::Result<Device> {
    let cuda = tch::Cuda::is_available();
    let device = match (choice, cuda) {
        (DeviceChoice::Cpu, _) => {
            eprintln!("device: cpu (requested)");
            Device::Cpu
        }
        (DeviceChoice::Cuda, true) | (DeviceChoice::Auto, true) => {
            eprintln!("device: cuda:0 ({} CUDA device(s) visible)", tch::Cuda::device_count());
            Device::Cuda(0)
        }
        (DeviceChoice::Cuda, false) => anyhow::bail!(
            "--device cuda: libtorch reports no usable CUDA device (check the driver and that libtorch_cuda is linked: `readelf -d` on the binary); use --device cpu or auto"
        ),
        (DeviceChoice::Auto, false) => {
            eprintln!("device: cpu (auto: no CUDA device available, falling back to CPU)");
            Device::Cpu
        }
    };
    Ok(device)
}
