//! Rebuild when bpf-linker changes (a new LLVM can change the object), and keep the program one
//! BPF function.
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
    // bpf-linker optimises the whole program again at link time. Its inliner would keep a
    // function that both entry points (multi- and single-buffer) use as a BPF function of its
    // own, which verifiers before 6.4 punish by tracking every scalar precisely (see `mem`):
    // inline everything that can be.
    println!("cargo:rustc-link-arg=--llvm-args=-inline-threshold=1000000");
}
