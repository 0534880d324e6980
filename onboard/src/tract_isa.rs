//! Which of tract's CPU kernel families may run in this process.
//!
//! tract picks its matrix-product kernels from the instruction sets it detects
//! (`tract_linalg::isa::native()`, probed once per process). On Intel CPUs with AMX
//! (`amx_tile amx_int8` in `/proc/cpuinfo`) it picks `avx512amx_mmm_i32_8x8` for the int8
//! graphs, and that kernel has crashed test processes with SIGSEGV (3 runs in 7, in a process
//! with libtorch's threads alive): both of tract's AMX int8 kernels read hundreds of bytes past
//! the end of their packed B operand whenever k is not a multiple of 64, which faults when the
//! buffer ends near an unmapped page (reproduced by `examples/tract_amx_overread.rs`;
//! docs/PERFORMANCE.md has the diagnosis). The project therefore keeps tract's AMX kernels out
//! of every process it runs: [`apply`] removes `amx-int8` and `amx-bf16` from the set tract
//! dispatches on, whatever the environment's `TRACT_CPU_ISA` asks for, and every way the
//! project loads an ONNX graph with tract ([`onnx`]) applies it first. The int8 graphs then run
//! on tract's AVX-512 VNNI / AVX2 kernels, which every x86 machine the project has seen runs.

use std::sync::Once;

use tract_onnx::prelude::tract_linalg;

/// tract instruction-set features the project never dispatches on (tract's names; x86-64 only:
/// tract refuses an edit naming another architecture's feature, so elsewhere this is empty).
#[cfg(target_arch = "x86_64")]
pub const EXCLUDED: &[&str] = &["amx-int8", "amx-bf16"];
/// tract instruction-set features the project never dispatches on: none on this architecture.
#[cfg(not(target_arch = "x86_64"))]
pub const EXCLUDED: &[&str] = &[];

/// Removes [`EXCLUDED`] from the instruction sets tract dispatches on, keeping any other edit
/// the environment's `TRACT_CPU_ISA` makes. Idempotent; must run before tract first probes the
/// CPU (its probe is cached for the process), which [`onnx`] guarantees for the project's own
/// graph loading.
pub fn apply() {
    static APPLIED: Once = Once::new();
    APPLIED.call_once(|| {
        if EXCLUDED.is_empty() {
            return;
        }
        let knob = &tract_linalg::knobs::TRACT_CPU_ISA;
        let mut spec = knob.get().unwrap_or_default();
        for feature in EXCLUDED {
            if !spec.trim().is_empty() {
                spec.push(',');
            }
            spec.push('-');
            spec.push_str(feature);
        }
        knob.set(Some(spec));
    });
}

/// tract's ONNX front end, with [`apply`] done first: the one way the project's code gets it.
pub fn onnx() -> tract_onnx::Onnx {
    apply();
    #[allow(clippy::disallowed_methods)] // the one sanctioned call
    tract_onnx::onnx()
}

/// The instruction sets tract dispatches on in this process (after [`apply`]), comma-separated
/// in tract's names, e.g. `x86_64,avx,avx2,fma,f16c,avx512f,avx512vnni`.
pub fn dispatched() -> String {
    apply();
    format!("{:?}", tract_linalg::isa::native())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amx_is_never_dispatched_on() {
        let set = dispatched();
        assert!(!set.is_empty());
        for feature in EXCLUDED {
            assert!(!set.split(',').any(|f| f == *feature), "{feature} in {set}");
        }
        let kernels: Vec<String> = tract_linalg::MmmDispatch::native()
            .runnable()
            .iter()
            .map(|k| k.name().to_string())
            .collect();
        assert!(!kernels.is_empty());
        assert!(kernels.iter().all(|k| !k.contains("amx")), "{kernels:?}");
    }
}
