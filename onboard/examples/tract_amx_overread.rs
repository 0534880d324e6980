//! Reproduction of tract 0.23.9's AMX int8 matrix kernels reading past the end of their packed
//! B operand (docs/PERFORMANCE.md, "tract's AMX kernels are kept out"). x86-64 Linux only; on a
//! CPU without AMX it runs the AVX-512 VNNI control alone.
//!
//! For each kernel and depth k it packs A (`mr x k`) and B (`k x nr`, i8) with the kernel's own
//! packers, copies packed B into a fresh mapping so that B's last byte is either right before an
//! inaccessible page (`guard`) or a whole page before it (`slack`), and runs one tile through the
//! kernel in a child process. A child killed by SIGSEGV at `guard` but exact at `slack` means the
//! kernel reads past the end of B, and nothing else.
//!
//! This program deliberately does *not* call `onboard::tract_isa::apply()`: it runs tract's
//! kernels directly, including the AMX ones the project keeps out.
//!
//! Run: `cargo run --release -p onboard --example tract_amx_overread`

// Calls tract's kernels and mmap directly: the point of the reproduction.
#![allow(unsafe_code)]

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod repro {
    use std::process::Command;

    use tract_linalg::mmm::{FusedKerSpec, MatMatMulKer, OutputStoreKer};
    use tract_linalg::x86_64::mmm as x86;
    use tract_onnx::prelude::tract_linalg;
    use tract_onnx::prelude::*;
    use tract_onnx::tract_core::internal::{bail, ensure, DimLike};

    /// Depths tried: the EfficientNet graphs' (16, 24, 27, 40, 80) and whole multiples of 64.
    const DEPTHS: [usize; 7] = [16, 24, 27, 40, 64, 80, 128];
    const PLACEMENTS: [&str; 2] = ["guard", "slack"];

    /// The harness's own check: reading one byte past a 128-byte copy must fault at `guard`.
    const HARNESS: &str = "harness_one_byte_past";

    fn kernel_names() -> Vec<&'static str> {
        vec![
            HARNESS,
            "avx512amx_mmm_i32_8x8",
            "avx512amx_mmm_i32_16x16",
            "avx512vnni_mmm_i32_8x8",
        ]
    }

    fn one_byte_past(placement: &str) -> TractResult<String> {
        let copy = GuardedCopy::new(&[1u8; 128], placement == "guard")?;
        // SAFETY: deliberately one past the copy: readable zeros at `slack`, the guard page (a
        // SIGSEGV, which is what this case checks) at `guard`.
        let byte = unsafe { std::ptr::read_volatile(copy.ptr().add(128)) };
        Ok(format!("read {byte}"))
    }

    /// Runs one case in this process; returns a one-line outcome or an error. May die of SIGSEGV:
    /// that is the bug being reproduced.
    fn run_case(name: &str, k: usize, placement: &str) -> TractResult<String> {
        // Called for its side effect: the process's permission to use the AMX tile state.
        let _ = tract_linalg::x86_64::amx::has_amx_int8();
        match name {
            HARNESS => one_byte_past(placement),
            "avx512amx_mmm_i32_8x8" => one_tile(&*x86::avx512amx_mmm_i32_8x8, k, placement),
            "avx512amx_mmm_i32_16x16" => one_tile(&*x86::avx512amx_mmm_i32_16x16, k, placement),
            "avx512vnni_mmm_i32_8x8" => one_tile(&*x86::avx512vnni_mmm_i32_8x8, k, placement),
            other => bail!("unknown kernel {other}"),
        }
    }

    fn one_tile<K: MatMatMulKer<Acc = i32>>(
        ker: &K,
        k: usize,
        placement: &str,
    ) -> TractResult<String> {
        if !ker.runnable() {
            return Ok("not runnable on this CPU".into());
        }
        let (m, n) = (ker.mr(), ker.nr());
        let value = |i: usize| ((i * 37 + 11) % 255) as i32 - 127;
        let a: Vec<i8> = (0..m * k).map(|i| value(i) as i8).collect();
        let b: Vec<i8> = (0..k * n).map(|i| value(i * 3 + 1) as i8).collect();
        let (pack_a, pack_b) = &ker.packings()[1];
        let pa = pack_a.prepare_one(&tensor1(&a).into_shape(&[m, k])?, 1, 0)?;
        let pb = pack_b.prepare_one(&tensor1(&b).into_shape(&[k, n])?, 0, 1)?;
        let b_len = pack_b.mem_size(k.to_dim(), n.to_dim()).to_usize()?;
        // SAFETY: `panel_bytes(0)` points at the start of packed B, `b_len` bytes long.
        let b_bytes = unsafe { std::slice::from_raw_parts(pb.panel_bytes(0, None)?, b_len) };
        let guarded = GuardedCopy::new(b_bytes, placement == "guard")?;
        let mut c = vec![0i32; m * n];
        let store = OutputStoreKer {
            ptr: c.as_mut_ptr() as *mut u8,
            row_byte_stride: (4 * n) as isize,
            col_byte_stride: 4,
            item_size: 4,
        };
        let ops = [
            FusedKerSpec::Clear,
            FusedKerSpec::AddMatMul {
                k,
                pa: pa.panel_bytes(0, None)?,
                pb: guarded.ptr(),
                packing: 1,
            },
            FusedKerSpec::Store(store),
            FusedKerSpec::Done,
        ];
        let status = ker.kernel(&ops);
        ensure!(status == 0, "kernel returned {status}");
        let mut wrong = 0;
        for (row, c_row) in c.chunks(n).enumerate() {
            for (col, &got) in c_row.iter().enumerate() {
                let want: i32 = (0..k)
                    .map(|i| a[row * k + i] as i32 * b[i * n + col] as i32)
                    .sum();
                wrong += usize::from(got != want);
            }
        }
        Ok(if wrong == 0 {
            format!("exact (packed B {b_len} bytes)")
        } else {
            format!("WRONG in {wrong} of {} values", m * n)
        })
    }

    /// A private mapping holding a copy of packed B, followed by one inaccessible page. With
    /// `at_guard` the copy's last byte is the last accessible byte; otherwise a whole page of
    /// readable zeros follows it.
    struct GuardedCopy {
        base: *mut libc::c_void,
        len: usize,
        start: usize,
    }

    impl GuardedCopy {
        fn new(bytes: &[u8], at_guard: bool) -> TractResult<Self> {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
            let data_pages = bytes.len().div_ceil(page) + 1;
            let len = (data_pages + 1) * page;
            // SAFETY: a fresh anonymous private mapping; checked for MAP_FAILED below.
            let base = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            ensure!(base != libc::MAP_FAILED, "mmap of {len} bytes failed");
            let guard = data_pages * page;
            // SAFETY: `guard .. len` is the mapping's last page.
            let rc = unsafe { libc::mprotect(base.cast::<u8>().add(guard).cast(), page, 0) };
            ensure!(rc == 0, "mprotect failed");
            let end = if at_guard { guard } else { guard - page };
            let start = end - bytes.len();
            // SAFETY: `start .. end` lies inside the mapping's writable pages.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes.as_ptr(),
                    base.cast::<u8>().add(start),
                    bytes.len(),
                )
            };
            Ok(GuardedCopy { base, len, start })
        }

        fn ptr(&self) -> *const u8 {
            // SAFETY: `start` is inside the mapping (see `new`).
            unsafe { self.base.cast::<u8>().add(self.start) }
        }
    }

    impl Drop for GuardedCopy {
        fn drop(&mut self) {
            // SAFETY: unmaps exactly the mapping made in `new`.
            unsafe { libc::munmap(self.base, self.len) };
        }
    }

    /// Runs every case in its own child process and prints one line per case.
    pub fn main() -> TractResult<()> {
        let args: Vec<String> = std::env::args().collect();
        if args.len() == 5 && args[1] == "--case" {
            let outcome = run_case(&args[2], args[3].parse()?, &args[4])?;
            println!("{outcome}");
            return Ok(());
        }
        let amx = tract_linalg::x86_64::amx::has_amx_int8();
        let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpu
            .lines()
            .find(|l| l.starts_with("model name"))
            .unwrap_or("model name: ?");
        println!("{model}; AMX int8 usable: {amx}");
        let exe = std::env::current_exe()?;
        for name in kernel_names() {
            let depths = if name == HARNESS {
                &DEPTHS[..1]
            } else {
                &DEPTHS[..]
            };
            for &k in depths {
                for placement in PLACEMENTS {
                    let out = Command::new(&exe)
                        .args(["--case", name, &k.to_string(), placement])
                        .output()?;
                    let outcome = match out.status.code() {
                        Some(0) => String::from_utf8_lossy(&out.stdout).trim().to_string(),
                        Some(code) => format!(
                            "exit {code}: {}",
                            String::from_utf8_lossy(&out.stderr).trim()
                        ),
                        None => {
                            use std::os::unix::process::ExitStatusExt;
                            match out.status.signal() {
                                Some(libc::SIGSEGV) => "SIGSEGV".to_string(),
                                Some(s) => format!("signal {s}"),
                                None => "killed".to_string(),
                            }
                        }
                    };
                    println!("{name:<24} k={k:<4} {placement:<6} {outcome}");
                }
            }
        }
        Ok(())
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn main() -> tract_onnx::prelude::TractResult<()> {
    repro::main()
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn main() {
    println!("tract's AMX kernels exist on x86-64 only: nothing to reproduce here");
}
