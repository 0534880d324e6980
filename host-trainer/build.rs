//! Keeps `libtorch_cuda` in the link so CUDA is usable when the PyPI libtorch is linked "as needed".
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    let lib_dir = torch_lib_dir();
    let has_cuda = lib_dir
        .as_ref()
        .map(|d| d.join("libtorch_cuda.so").exists())
        .unwrap_or(false);
    if has_cuda {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
    }
}

fn torch_lib_dir() -> Option<std::path::PathBuf> {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        return Some(std::path::PathBuf::from(dir).join("lib"));
    }
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import torch, os; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(std::path::PathBuf::from(
        String::from_utf8(out.stdout).ok()?.trim(),
    ))
}
